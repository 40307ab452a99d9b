"""ADE20K-style models that segment like the original in stock transformers.

The converted folder is loaded by plain `AutoModelForSemanticSegmentation` and its logits compared with
the original UperNet reading of the source, computed by the project's reference forward pass (which
shares no code with the converter and is itself checked against timm in test_reference.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from PIL import Image

from beit_tools.core.arch import Family
from beit_tools.core.convert import ConvertOptions, convert
from beit_tools.core.features import plan_layout, probe_offset
from beit_tools.core.reference import reference_forward
from beit_tools.core.verify import VerifyOptions, verify
from beit_tools.core.visual import LEGEND_ROW, LEGEND_TOP, SWATCH, palette
from beit_tools.errors import BeitToolsError
from beit_tools.synthetic import (
    default_spec,
    make_checkpoint,
    make_state_dict,
    save_checkpoint,
    tiny_abs_pos_arch,
    tiny_arch,
    write_synthetic,
)
from tests.test_parity import saved_keys

ATOL = 1e-4
DEPTHS = {
    "12 layers": dict(num_hidden_layers=12, out_indices=(3, 5, 7, 11)),
    "24 layers": dict(num_hidden_layers=24, out_indices=(7, 11, 15, 23)),
    "last index not the last block": dict(num_hidden_layers=12, out_indices=(2, 4, 6, 8)),
}


def pixels(arch, seed: int = 2) -> torch.Tensor:
    return torch.randn(2, 3, arch.image_size, arch.image_size, generator=torch.Generator().manual_seed(seed))


def plain_logits(out: Path, x: torch.Tensor) -> torch.Tensor:
    model, info = transformers.AutoModelForSemanticSegmentation.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    with torch.no_grad():
        return model.eval()(pixel_values=x).logits


@pytest.mark.parametrize("depth", sorted(DEPTHS))
def test_stock_transformers_computes_the_original_upernet(depth: str, tmp_path: Path) -> None:
    arch = tiny_arch(Family.SEGMENTATION, num_labels=7, **DEPTHS[depth])
    spec = default_spec(arch)
    convert(ConvertOptions(write_synthetic(tmp_path / "ade.pth", spec), tmp_path / "out"))
    x = pixels(arch)
    original = reference_forward(make_state_dict(arch, spec.seed), arch, x).logits
    ours = plain_logits(tmp_path / "out", x)
    assert original.abs().max() > 0.1
    assert (ours - original).abs().max().item() <= ATOL
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    last_block = arch.out_indices[-1] == arch.num_hidden_layers - 1
    assert config["out_indices"] == [i + 2 for i in arch.out_indices]
    assert config["num_hidden_layers"] == arch.num_hidden_layers + (1 if last_block else 0)


def test_the_transformers_layout_is_the_hub_one_and_differs(tmp_path: Path) -> None:
    arch = tiny_arch(Family.SEGMENTATION, num_labels=150, **DEPTHS["12 layers"])
    source = write_synthetic(tmp_path / "ade.pth", default_spec(arch))
    result = convert(ConvertOptions(source, tmp_path / "hub", feature_indices="transformers"))
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert config["out_indices"] == [3, 5, 7, 11] and config["num_hidden_layers"] == 12
    hub_like = transformers.BeitForSemanticSegmentation(transformers.BeitConfig.from_pretrained(tmp_path / "hub"))
    hub_like.save_pretrained(tmp_path / "resaved")
    assert saved_keys(tmp_path / "hub") == saved_keys(tmp_path / "resaved")
    provenance = json.loads((tmp_path / "hub" / "provenance.json").read_text())
    assert provenance["features"]["kind"] == "transformers" and provenance["features"]["faithful"] is False
    assert "out_indices [3, 5, 7, 11] as the Hub's models" in result.analysis.plan.features.describe()
    x = pixels(arch)
    original = reference_forward(make_state_dict(arch), arch, x).logits
    assert (plain_logits(tmp_path / "hub", x) - original).abs().max().item() > 1e-2


class FixedReading(transformers.BeitForSemanticSegmentation):
    """A transformers whose FPN gets the output of block j for j in out_indices, as unilm's does."""

    def forward(self, pixel_values, **kwargs):
        outputs = self.beit(pixel_values, output_hidden_states=True)
        states = outputs.hidden_states
        side = pixel_values.shape[-1] // self.config.patch_size
        maps = tuple(
            states[j + 1][:, 1:].transpose(1, 2).reshape(pixel_values.shape[0], -1, side, side)
            for j in self.config.out_indices
        )
        return transformers.modeling_outputs.SemanticSegmenterOutput(
            logits=self.decode_head(self.fpn(maps)), hidden_states=states
        )


def test_the_probe_reads_the_installed_transformers_and_picks_plain_indices_once_it_is_fixed() -> None:
    arch = tiny_arch(Family.SEGMENTATION, **DEPTHS["12 layers"])
    assert probe_offset() == -1  # transformers today: hidden_states[j-1]
    today = plan_layout(arch, "faithful", probe_offset())
    assert (today.out_indices, today.added_layers) == ((5, 7, 9, 13), 1)
    fixed = probe_offset(FixedReading)
    assert fixed == 1
    layout = plan_layout(arch, "faithful", fixed)
    assert (layout.out_indices, layout.added_layers, layout.faithful) == ((3, 5, 7, 11), 0, True)


# --- what transformers' BEiT cannot hold, and what the file must say ----------------------------


def _mmseg(arch, edit=None, config: str | None = None):
    obj = make_checkpoint(default_spec(arch))
    if edit:
        edit(obj["state_dict"])
    if config is not None:
        obj["meta"]["config"] = config
    return obj


def test_unilm_patch8_backbone_is_refused_for_what_it_is(tmp_path: Path, invoke) -> None:
    def patch8_fpn(sd):
        for key in [k for k in sd if k.startswith(("backbone.fpn1.1", "backbone.fpn1.3", "backbone.fpn2"))]:
            del sd[key]

    path = save_checkpoint(
        _mmseg(tiny_arch(Family.SEGMENTATION, patch_size=8, image_size=32), patch8_fpn), tmp_path / "p8.pth"
    )
    result = invoke("convert", path, "-o", tmp_path / "out")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "unilm's patch-8 segmentation backbone" in result.stderr and "fetch" not in result.stderr


def test_an_auxiliary_head_with_1x1_convs_is_refused_for_what_it_is(tmp_path: Path, invoke) -> None:
    def one_by_one(sd):
        sd["auxiliary_head.convs.0.conv.weight"] = torch.randn(8, 32, 1, 1)

    path = save_checkpoint(_mmseg(tiny_arch(Family.SEGMENTATION), one_by_one), tmp_path / "aux.pth")
    result = invoke("convert", path, "-o", tmp_path / "out")
    assert result.exit_code == 1 and "auxiliary head has 3x3 convolutions and cannot hold it" in result.stderr


def test_heads_of_an_abs_pos_file_come_from_its_mmseg_config(tmp_path: Path) -> None:
    arch = tiny_abs_pos_arch(Family.SEGMENTATION, num_attention_heads=4, out_indices=(0, 1, 2, 3))
    source = write_synthetic(tmp_path / "abs.pth", default_spec(arch))
    result = convert(ConvertOptions(source, tmp_path / "out"))
    evidence = result.analysis.detection.evidence["num_attention_heads"]
    assert (evidence.value, evidence.kind, evidence.source) == (4, "file", "meta.config: num_heads")
    x = pixels(arch)
    original = reference_forward(make_state_dict(arch), arch, x).logits
    assert (plain_logits(tmp_path / "out", x) - original).abs().max().item() <= ATOL


def test_pool_scales_the_file_does_not_state_are_printed_and_can_be_given(tmp_path: Path, invoke) -> None:
    arch = tiny_arch(Family.SEGMENTATION, pool_scales=(1, 2, 4, 8))
    no_scales = "model = dict(backbone=dict(type='BEiT'), decode_head=dict(type='UPerHead'))"
    path = save_checkpoint(_mmseg(arch, config=no_scales), tmp_path / "s.pth")
    guessed = invoke("convert", path, "-o", tmp_path / "guessed")
    assert guessed.exit_code == 0, guessed.stderr
    assert "by convention │ pool_scales = [1, 2, 3, 6]: 4 psp_modules, the UperHead default scales" in guessed.stdout
    given = invoke("convert", path, "-o", tmp_path / "given", "--pool-scales", "1,2,4,8")
    assert given.exit_code == 0 and "by convention │ pool_scales" not in given.stdout
    assert json.loads((tmp_path / "given" / "config.json").read_text())["pool_scales"] == [1, 2, 4, 8]
    x = pixels(arch)
    original = reference_forward(make_state_dict(arch), arch, x).logits
    assert (plain_logits(tmp_path / "given", x) - original).abs().max().item() <= ATOL
    assert (plain_logits(tmp_path / "guessed", x) - original).abs().max().item() > 1e-3  # the scales matter
    verified = verify(VerifyOptions(tmp_path / "given", against=path))
    assert verified.passed, [c for c in verified.checks if c.status == "fail"]
    with pytest.raises(BeitToolsError, match="--pool-scales gives 2 scales for 4 psp_modules"):
        convert(ConvertOptions(path, tmp_path / "bad", pool_scales=(1, 2)))


def test_inspect_shows_the_added_layer_and_single_evidence_labels(tmp_path: Path, invoke) -> None:
    arch = tiny_abs_pos_arch(Family.MIM)
    text = invoke("inspect", write_synthetic(tmp_path / "m.pth", default_spec(arch))).stdout
    assert "convention: no relative position table" in text and "convention: convention" not in text
    seg = invoke("inspect", write_synthetic(tmp_path / "s.pth", default_spec(tiny_arch(Family.SEGMENTATION))))
    assert "pass-through layer" in seg.stdout and "added layer 4:" in seg.stdout
    assert "FPN features" in seg.stdout


# --- the picture ---------------------------------------------------------------------------------


def test_verify_image_writes_an_overlay_with_the_palette_and_a_legend(tmp_path: Path, monkeypatch) -> None:
    arch = tiny_arch(Family.SEGMENTATION, num_labels=150)
    convert(ConvertOptions(write_synthetic(tmp_path / "ade.pth", default_spec(arch)), tmp_path / "out"))
    photo = tmp_path / "street.png"
    Image.effect_mandelbrot((120, 90), (-2, -1.2, 1, 1.2), 60).convert("RGB").save(photo)
    monkeypatch.chdir(tmp_path)
    result = verify(VerifyOptions(tmp_path / "out", image=photo))
    assert result.picture == Path("street.segmentation.png")
    ade = palette(150)
    with Image.open(tmp_path / "street.segmentation.png") as picture:
        picture = picture.convert("RGB")
        assert picture.size[0] == 2 * 120 + 280 and picture.size[1] >= 90
        mask_colours = {c for _, c in picture.crop((120, 0, 240, 90)).getcolors(maxcolors=10_000)}
        assert mask_colours and mask_colours <= set(ade)  # the mask is painted in ADE20K's palette
        swatches = []
        for row in range(8):
            y = LEGEND_TOP + row * LEGEND_ROW + SWATCH[1] // 2
            colour = picture.getpixel((240 + SWATCH[0] + SWATCH[1] // 2, y))
            if colour == (255, 255, 255):
                break
            swatches.append(colour)
    assert (swatches and set(swatches) == mask_colours) or set(swatches) <= mask_colours
    assert len(swatches) == min(8, len(mask_colours))
    # the legend lists the classes by share: its first swatch is the most common colour of the mask
    with Image.open(tmp_path / "street.segmentation.png") as picture:
        counts = sorted(picture.convert("RGB").crop((120, 0, 240, 90)).getcolors(maxcolors=10_000), reverse=True)
    assert swatches[0] == counts[0][1]


def test_known_ade20k_logits_are_compared_with_the_hub_reading_of_a_faithful_folder(tmp_path, monkeypatch) -> None:
    """The published ADE20K logits came from the Hub's models: a stand-in entry whose numbers are what
    stock transformers computes from the Hub layout must pass on the faithful folder of the same weights."""
    from beit_tools.core import variants
    from beit_tools.core.verify import seed_pixels

    arch = tiny_arch(Family.SEGMENTATION, num_labels=150)
    source = write_synthetic(tmp_path / "ade.pth", default_spec(arch))
    convert(ConvertOptions(source, tmp_path / "faithful"))
    convert(ConvertOptions(source, tmp_path / "hub", feature_indices="transformers"))
    image = tmp_path / "ade.png"
    Image.effect_mandelbrot((80, 60), (-2, -1.2, 1, 1.2), 40).convert("RGB").save(image)
    with Image.open(image) as img:
        x = seed_pixels(img, arch.image_size, "bicubic")
    hub_logits = plain_logits(tmp_path / "hub", x)
    expected = variants.Expected(
        tuple(hub_logits.shape), tuple(map(tuple, hub_logits[0, :3, :3, :3].tolist())), resample="bicubic"
    )
    stand_in = variants.Variant(
        name="ade-stand-in",
        file="synthetic",
        family=Family.SEGMENTATION,
        size="base",
        image_size=arch.image_size,
        output_name="x",
        params_m=0.0,
        labels="ade20k-150",
        expected=expected,
    )
    monkeypatch.setitem(variants.VARIANTS, "ade-stand-in", stand_in)
    result = verify(VerifyOptions(tmp_path / "faithful", variant="ade-stand-in", image=image))
    check = next(c for c in result.checks if c.name == "expected logits (ade-stand-in)")
    assert check.status == "pass" and "Hub reading compared; this folder's faithful logits start" in check.detail
    faithful = plain_logits(tmp_path / "faithful", x)
    assert (faithful - hub_logits).abs().max().item() > 1e-3  # the two readings do differ
