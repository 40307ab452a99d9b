"""The whole BEiT family: BEiT v2, DiT, data2vec-vision and timm's safetensors copies convert with the
same guarantees as v1: detection with evidence, every key accounted for, parity with the original."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import save_file

from beit_tools.core.arch import Family
from beit_tools.core.convert import ConvertOptions, convert
from beit_tools.core.inspection import inspect_checkpoint
from beit_tools.core.labels import resolve_labels
from beit_tools.core.reference import reference_forward
from beit_tools.core.verify import VerifyOptions, verify
from beit_tools.errors import BeitToolsError
from beit_tools.synthetic import (
    default_spec,
    make_checkpoint,
    make_state_dict,
    save_checkpoint,
    tiny_abs_pos_arch,
    tiny_arch,
)
from tests.reference_timm import timm_masked_logits, timm_outputs

ATOL = 1e-4
IMAGENET_MEAN = [0.485, 0.456, 0.406]


def pixels(arch, seed: int = 3) -> torch.Tensor:
    return torch.randn(2, 3, arch.image_size, arch.image_size, generator=torch.Generator().manual_seed(seed))


def load(out: Path, cls_name: str) -> torch.nn.Module:
    model, info = getattr(transformers, cls_name).from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    return model.eval()


def processor_mean(out: Path) -> list[float]:
    return json.loads((out / "preprocessor_config.json").read_text())["image_mean"]


def with_cls_pt_layers(sd: dict[str, torch.Tensor], shared_head: bool) -> dict[str, torch.Tensor]:
    """BEiT v2's pretraining extras: two patch-aggregation blocks (and, unshared, their norm and head)."""
    g = torch.Generator().manual_seed(9)
    extra = {}
    for n in range(2):
        for key, tensor in sd.items():
            if key.startswith("blocks.0."):
                extra[f"cls_pt_layers.{n}.{key[len('blocks.0.') :]}"] = torch.randn(tensor.shape, generator=g)
    if not shared_head:
        extra |= {f"cls_pt_norm.{k}": sd[f"norm.{k}"].clone() for k in ("weight", "bias")}
        extra |= {f"cls_pt_lm_head.{k}": sd[f"lm_head.{k}"].clone() for k in ("weight", "bias")}
    return sd | extra


V2_ARGS = argparse.Namespace(model="beit_base_patch16_224_8k_vocab_cls_pt", imagenet_default_mean_and_std=True)


@pytest.mark.parametrize("shared_head", [True, False], ids=["shared-lm-head", "own-cls-pt-head"])
def test_beit_v2_pretraining_file_converts_to_masked_image_modeling(shared_head: bool, tmp_path: Path) -> None:
    arch = tiny_arch(Family.MIM)
    sd = with_cls_pt_layers(make_state_dict(arch), shared_head)
    # as BEiT v2's DeepSpeed runs save it: under 'module', keys prefixed, training args beside
    torch.save({"module": {f"module.{k}": v for k, v in sd.items()}, "args": V2_ARGS}, tmp_path / "v2.pth")
    result = convert(ConvertOptions(tmp_path / "v2.pth", tmp_path / "out"))
    plan = result.analysis.plan
    dropped = [m for m in plan.mappings if m.rule == "pretraining-only blocks"]
    assert len(dropped) == len([k for k in sd if k.startswith("cls_pt_")]) and all(m.op.name == "drop" for m in dropped)
    assert "patch-aggregation" in dropped[0].reason
    model = load(tmp_path / "out", "BeitForMaskedImageModeling")
    x = pixels(arch)
    masked = torch.rand(2, arch.window**2, generator=torch.Generator().manual_seed(4)) < 0.4
    with torch.no_grad():
        ours = model(pixel_values=x, bool_masked_pos=masked).logits
    expected = timm_masked_logits(arch, make_state_dict(arch), x, masked)
    assert (ours[masked] - expected[masked]).abs().max().item() <= ATOL
    assert processor_mean(tmp_path / "out") == IMAGENET_MEAN
    evidence = result.analysis.detection.evidence["normalization"]
    assert (evidence.value, evidence.kind) == ("imagenet", "file")


def test_beit_v2_fine_tuned_file_and_the_normalization_choices(tmp_path: Path, invoke) -> None:
    arch = tiny_arch(Family.CLASSIFICATION)
    obj = make_checkpoint(default_spec(arch))
    obj["args"] = argparse.Namespace(model="beit_base_patch16_224", imagenet_default_mean_and_std=True, nb_classes=5)
    source = save_checkpoint(obj, tmp_path / "v2ft.pth")
    convert(ConvertOptions(source, tmp_path / "out"))
    model = load(tmp_path / "out", "BeitForImageClassification")
    x = pixels(arch)
    with torch.no_grad():
        ours = model(pixel_values=x).logits
    assert (ours - timm_outputs(arch, make_state_dict(arch), x)).abs().max().item() <= ATOL
    assert processor_mean(tmp_path / "out") == IMAGENET_MEAN
    shown = invoke("convert", source, "-o", tmp_path / "half", "--normalization", "half")
    assert "normalization │ half, mean [0.5, 0.5, 0.5] (override: --normalization)" in shown.stdout
    assert processor_mean(tmp_path / "half") == [0.5, 0.5, 0.5]
    plain = save_checkpoint(make_checkpoint(default_spec(arch)), tmp_path / "v1.pth")
    report = inspect_checkpoint(plain).to_dict()["evidence"]["normalization"]
    assert report["kind"] == "convention" and "--normalization imagenet" in report["source"]


def test_dit_pretrained_and_document_classification(tmp_path: Path) -> None:
    """DiT: absolute positions, no relative tables, layer scale."""
    arch = tiny_abs_pos_arch(Family.MIM, layer_scale=True)
    source = save_checkpoint(make_checkpoint(default_spec(arch)), tmp_path / "dit.pth")
    convert(ConvertOptions(source, tmp_path / "dit"))
    model = load(tmp_path / "dit", "BeitForMaskedImageModeling")
    x = pixels(arch)
    masked = torch.rand(2, arch.window**2, generator=torch.Generator().manual_seed(6)) < 0.5
    with torch.no_grad():
        ours = model(pixel_values=x, bool_masked_pos=masked).logits
    assert (ours[masked] - timm_masked_logits(arch, make_state_dict(arch), x, masked)[masked]).abs().max() <= ATOL
    docs = tiny_abs_pos_arch(Family.CLASSIFICATION, layer_scale=True, num_labels=16)
    labels = resolve_labels(docs, None, None, "rvlcdip-16")
    assert labels.id2label[0] == "letter" and labels.id2label[15] == "memo" and labels.bundled == "rvlcdip-16"
    assert resolve_labels(docs, None, None).id2label[0] == "LABEL_0"  # 16 classes alone do not say RVL-CDIP


@pytest.mark.parametrize("family", [Family.CLASSIFICATION, Family.SEGMENTATION])
def test_data2vec_vision_is_written_as_its_own_transformers_classes(family: Family, tmp_path: Path, invoke) -> None:
    arch = tiny_arch(family)
    source = save_checkpoint(make_checkpoint(default_spec(arch)), tmp_path / "d2v.pth")
    result = invoke("convert", source, "-o", tmp_path / "out", "--arch", "data2vec-vision")
    assert result.exit_code == 0, result.stderr
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    cls_name = {Family.CLASSIFICATION: "Data2VecVisionForImageClassification"}.get(
        family, "Data2VecVisionForSemanticSegmentation"
    )
    assert config["model_type"] == "data2vec-vision" and config["architectures"] == [cls_name]
    model = load(tmp_path / "out", cls_name)
    x = pixels(arch)
    with torch.no_grad():
        ours = model(pixel_values=x).logits
    original = reference_forward(make_state_dict(arch), arch, x).logits
    assert original.abs().max() > 0.1 and (ours - original).abs().max().item() <= ATOL
    checked = verify(VerifyOptions(tmp_path / "out", against=source))
    assert checked.passed, [c for c in checked.checks if c.status == "fail"]


def test_data2vec_vision_from_the_files_own_evidence_and_its_limits(tmp_path: Path) -> None:
    arch = tiny_arch(Family.CLASSIFICATION)
    obj = make_checkpoint(default_spec(arch))
    obj["args"] = argparse.Namespace(model="data2vec_vision_base_patch16_224", nb_classes=5)
    source = save_checkpoint(obj, tmp_path / "d2v.pth")
    result = convert(ConvertOptions(source, tmp_path / "out"))
    evidence = result.analysis.detection.evidence["flavor"]
    assert (evidence.value, evidence.kind, evidence.source) == (
        "data2vec-vision",
        "file",
        "args.model = data2vec_vision_base_patch16_224",
    )
    load(tmp_path / "out", "Data2VecVisionForImageClassification")
    mim = save_checkpoint(make_checkpoint(default_spec(tiny_arch(Family.MIM))), tmp_path / "mim.pth")
    with pytest.raises(BeitToolsError, match="transformers has no masked-image-modeling class for data2vec-vision"):
        convert(ConvertOptions(mim, tmp_path / "mim-out", flavor="data2vec-vision"))


def test_timm_safetensors_copies_convert_like_the_original(tmp_path: Path) -> None:
    """A real timm BEiT's own state dict (unilm names, no relative_position_index) saved as safetensors."""
    from timm.models.beit import Beit

    arch = tiny_arch(Family.CLASSIFICATION)
    torch.manual_seed(0)
    timm_beit = Beit(
        img_size=arch.image_size,
        patch_size=arch.patch_size,
        embed_dim=arch.hidden_size,
        depth=arch.num_hidden_layers,
        num_heads=arch.num_attention_heads,
        num_classes=arch.num_labels,
        use_abs_pos_emb=False,
        use_rel_pos_bias=True,
        init_values=0.1,
    ).eval()
    with torch.no_grad():  # random, not the initialisation's zeros and ones
        for tensor in timm_beit.state_dict().values():
            tensor.copy_(torch.randn(tensor.shape) * 0.2 + (1.0 if tensor.dim() == 1 else 0.0))
    state = {k: v.contiguous() for k, v in timm_beit.state_dict().items()}
    assert not any("relative_position_index" in k for k in state)
    save_file(state, str(tmp_path / "model.safetensors"))
    convert(ConvertOptions(tmp_path / "model.safetensors", tmp_path / "out"))
    model = load(tmp_path / "out", "BeitForImageClassification")
    x = pixels(arch)
    with torch.no_grad():
        assert (model(pixel_values=x).logits - timm_beit(x)).abs().max().item() <= ATOL


@pytest.mark.parametrize(
    ("variant", "family", "tag", "dataset", "cited"),
    [
        ("v2-base-ft1k", Family.CLASSIFICATION, "beit-v2", "imagenet-1k", "peng2022beitv2"),
        ("v2-base-pt1k", Family.MIM, "beit-v2", "imagenet-1k", "peng2022beitv2"),
        ("dit-base-rvlcdip", Family.CLASSIFICATION, "dit", "aharley/rvl_cdip", "li2022dit"),
    ],
)
def test_push_cards_know_each_series(variant, family, tag, dataset, cited, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    from beit_tools.core.push import PushOptions, prepare

    source = save_checkpoint(make_checkpoint(default_spec(tiny_arch(family))), tmp_path / "s.pth")
    convert(ConvertOptions(source, tmp_path / "out"))
    provenance = json.loads((tmp_path / "out" / "provenance.json").read_text())
    (tmp_path / "out" / "provenance.json").write_text(json.dumps(provenance | {"variant": variant}))
    card = ModelCard(prepare(PushOptions(tmp_path / "out", "org/x", dry_run=True, skip_verify=True)).card)
    assert card.data.license == "mit" and tag in card.data.tags and card.data.datasets == [dataset]
    assert cited in card.text and "bao2022beit" in card.text


def test_a_data2vec_vision_card_shows_its_own_class(tmp_path: Path) -> None:
    from beit_tools.core.push import PushOptions, prepare

    source = save_checkpoint(make_checkpoint(default_spec(tiny_arch(Family.CLASSIFICATION))), tmp_path / "s.pth")
    convert(ConvertOptions(source, tmp_path / "out", flavor="data2vec-vision"))
    card = prepare(PushOptions(tmp_path / "out", "org/x", dry_run=True, skip_verify=True)).card
    assert "from transformers import AutoImageProcessor, Data2VecVisionForImageClassification" in card


def test_an_mmseg_config_states_the_normalization_of_a_segmentation_file() -> None:
    from beit_tools.core.detect import detect
    from beit_tools.synthetic import mmseg_meta
    from tests.test_detect import infos_of

    arch = tiny_arch(Family.SEGMENTATION)
    meta = mmseg_meta(arch)
    config = meta["config"] + "img_norm_cfg = dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5])\n"
    found = detect(infos_of(arch), {"config_text": config}).evidence["normalization"]
    assert (found.value, found.kind, found.source) == ("half", "file", "meta.config: img_norm_cfg mean 127.5")
    assert detect(infos_of(arch), {"config_text": meta["config"]}).evidence["normalization"].kind == "convention"
