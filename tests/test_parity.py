"""The product's promise: the converted model computes what the original computed.

Each case writes a unilm-layout checkpoint, converts it, loads the output with transformers (zero
missing/unexpected/mismatched keys, key set equal to transformers' own save_pretrained), and compares
its outputs with timm's independent BEiT holding the same source tensors (fp32, max |Δ| ≤ 1e-4).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from beit_tools.core.arch import Arch, Family
from beit_tools.core.convert import ConvertOptions, convert
from beit_tools.synthetic import (
    SyntheticSpec,
    default_spec,
    make_state_dict,
    tiny_abs_pos_arch,
    tiny_arch,
    write_synthetic,
)
from tests.reference_timm import timm_block_outputs, timm_model, timm_outputs

ATOL = 1e-4


def load_hf(out: Path, arch: Arch) -> torch.nn.Module:
    cls = getattr(transformers, arch.hf_class)
    model, info = cls.from_pretrained(out, output_loading_info=True, dtype=torch.float32)
    assert not info["missing_keys"], info["missing_keys"]
    assert not info["unexpected_keys"], info["unexpected_keys"]
    assert not info["mismatched_keys"], info["mismatched_keys"]
    assert not info["error_msgs"], info["error_msgs"]
    return model.eval()


def saved_keys(directory: Path) -> set[str]:
    keys: set[str] = set()
    for file in directory.glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as f:
            keys |= set(f.keys())
    return keys


def pixels(arch: Arch, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, arch.num_channels, arch.image_size, arch.image_size, generator=g)


def convert_spec(tmp_path: Path, spec: SyntheticSpec, **options: object) -> Path:
    source = write_synthetic(tmp_path / "source.pth", spec)
    out = tmp_path / "out"
    convert(ConvertOptions(source=source, output=out, **options))
    return out


CASES = {
    "classification-mean": lambda: default_spec(tiny_arch(Family.CLASSIFICATION)),
    "classification-cls-pooling": lambda: default_spec(tiny_arch(Family.CLASSIFICATION, use_mean_pooling=False)),
    "classification-abs-pos-no-layer-scale": lambda: default_spec(tiny_abs_pos_arch(Family.CLASSIFICATION)),
    "classification-384-style-window": lambda: default_spec(tiny_arch(Family.CLASSIFICATION, image_size=48)),
    "classification-module-container": lambda: default_spec(tiny_arch(Family.CLASSIFICATION)).with_(
        container="module", key_prefix="module."
    ),
    "classification-training-checkpoint": lambda: default_spec(tiny_arch(Family.CLASSIFICATION, num_labels=7)).with_(
        training_extras=True
    ),
    "classification-fp16-source": lambda: default_spec(tiny_arch(Family.CLASSIFICATION)).with_(dtype=torch.float16),
    "classification-without-qkv-bias": lambda: default_spec(tiny_arch(Family.CLASSIFICATION, qkv_bias=False)),
    "mim-shared-table": lambda: default_spec(tiny_arch(Family.MIM)),
    "mim-abs-pos-no-layer-scale": lambda: default_spec(tiny_abs_pos_arch(Family.MIM)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_output_matches_timm(case: str, tmp_path: Path) -> None:
    spec = CASES[case]()
    out = convert_spec(tmp_path, spec)
    arch = spec.arch
    model = load_hf(out, arch)
    source = {k: v.float() for k, v in make_state_dict(arch, spec.seed, spec.dtype).items()}
    x = pixels(arch)
    with torch.no_grad():
        ours = model(pixel_values=x).logits
    expected = timm_outputs(arch, source, x)
    assert ours.shape == expected.shape
    assert expected.abs().max() > 0.1, "reference output is degenerate; the comparison would prove nothing"
    assert (ours - expected).abs().max().item() <= ATOL


@pytest.mark.parametrize("family", list(Family))
def test_key_set_equals_save_pretrained(family: Family, tmp_path: Path) -> None:
    spec = default_spec(tiny_arch(family))
    out = convert_spec(tmp_path, spec)
    model = load_hf(out, spec.arch)
    model.save_pretrained(tmp_path / "resaved")
    assert saved_keys(out) == saved_keys(tmp_path / "resaved")


def test_segmentation_backbone_and_heads_match_source(tmp_path: Path) -> None:
    spec = default_spec(tiny_arch(Family.SEGMENTATION))
    out = convert_spec(tmp_path, spec)
    arch = spec.arch
    model = load_hf(out, arch)
    source = make_state_dict(arch, spec.seed)
    x = pixels(arch)
    with torch.no_grad():
        hidden = model(pixel_values=x, output_hidden_states=True).hidden_states
        expected = timm_block_outputs(timm_model(arch, source), x)
    assert len(hidden) == arch.num_hidden_layers + 2  # one pass-through layer for the faithful FPN inputs
    for layer, reference in enumerate(expected):
        assert (hidden[layer + 1] - reference).abs().max().item() <= ATOL, f"block {layer}"

    written = load_file(str(out / "model.safetensors"))
    renames = {
        "decode_head.conv_seg.": "decode_head.classifier.",
        "auxiliary_head.conv_seg.": "auxiliary_head.classifier.",
    }
    heads = {k: v for k, v in source.items() if k.startswith(("fpn", "decode_head.", "auxiliary_head."))}
    assert len(heads) > 50
    for key, tensor in heads.items():
        target = next((key.replace(a, b) for a, b in renames.items() if key.startswith(a)), key)
        assert torch.equal(written[target], tensor), key


def test_comparison_detects_a_swapped_query_and_key(tmp_path: Path) -> None:
    """The parity bound is tight enough to catch a one-layer mapping fault."""
    spec = default_spec(tiny_arch(Family.CLASSIFICATION))
    out = convert_spec(tmp_path, spec)
    weights = load_file(str(out / "model.safetensors"))
    q = "beit.encoder.layer.1.attention.attention.query.weight"
    k = "beit.encoder.layer.1.attention.attention.key.weight"
    weights[q], weights[k] = weights[k], weights[q]
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    model = load_hf(out, spec.arch)
    x = pixels(spec.arch)
    with torch.no_grad():
        ours = model(pixel_values=x).logits
    expected = timm_outputs(spec.arch, make_state_dict(spec.arch, spec.seed), x)
    assert (ours - expected).abs().max().item() > 100 * ATOL


def test_ema_weights_are_converted_with_use_ema(tmp_path: Path) -> None:
    spec = default_spec(tiny_arch(Family.CLASSIFICATION)).with_(container="model_ema")
    out = convert_spec(tmp_path, spec, use_ema=True)
    model = load_hf(out, spec.arch)
    x = pixels(spec.arch)
    with torch.no_grad():
        ours = model(pixel_values=x).logits
    ema = make_state_dict(spec.arch, spec.seed)
    assert (ours - timm_outputs(spec.arch, ema, x)).abs().max().item() <= ATOL


def test_bfloat16_output_keeps_values_at_that_precision(tmp_path: Path) -> None:
    spec = default_spec(tiny_arch(Family.CLASSIFICATION))
    out = convert_spec(tmp_path, spec, dtype="bfloat16")
    written = load_file(str(out / "model.safetensors"))
    source = make_state_dict(spec.arch, spec.seed)
    assert written["classifier.weight"].dtype == torch.bfloat16
    assert torch.equal(written["classifier.weight"], source["head.weight"].to(torch.bfloat16))
    assert transformers.BeitConfig.from_pretrained(out).dtype in ("bfloat16", torch.bfloat16)


def _parity(out: Path, arch: Arch, source: dict[str, torch.Tensor]) -> float:
    model = load_hf(out, arch)
    x = pixels(arch)
    with torch.no_grad():
        ours = model(pixel_values=x).logits
    return (ours - timm_outputs(arch, {k: v.float() for k, v in source.items()}, x)).abs().max().item()


def test_bfloat16_source(tmp_path: Path) -> None:
    spec = default_spec(tiny_arch(Family.CLASSIFICATION)).with_(dtype=torch.bfloat16)
    out = convert_spec(tmp_path, spec)
    assert load_file(str(out / "model.safetensors"))["classifier.weight"].dtype == torch.bfloat16
    assert _parity(out, spec.arch, make_state_dict(spec.arch, spec.seed, torch.bfloat16)) <= ATOL


def test_legacy_format_source(tmp_path: Path) -> None:
    spec = default_spec(tiny_arch(Family.MIM)).with_(training_extras=True)
    source = write_synthetic(tmp_path / "legacy.pth", spec, legacy=True)
    convert(ConvertOptions(source, tmp_path / "out"))
    assert _parity(tmp_path / "out", spec.arch, make_state_dict(spec.arch, spec.seed)) <= ATOL


def test_non_contiguous_and_shared_storages(tmp_path: Path) -> None:
    """Transposed views and tensors sharing one storage, as torch.save keeps them, convert faithfully."""
    arch = tiny_arch(Family.CLASSIFICATION)
    sd = make_state_dict(arch)
    stored = dict(sd)
    for i in range(arch.num_hidden_layers):
        qkv = f"blocks.{i}.attn.qkv.weight"
        stored[qkv] = sd[qkv].t().contiguous().t()  # same values, column-major storage
        assert not stored[qkv].is_contiguous()
        both = torch.stack((sd[f"blocks.{i}.attn.q_bias"], sd[f"blocks.{i}.attn.v_bias"]))
        stored[f"blocks.{i}.attn.q_bias"], stored[f"blocks.{i}.attn.v_bias"] = both[0], both[1]  # one storage
    torch.save({"model": stored}, tmp_path / "views.pth")
    convert(ConvertOptions(tmp_path / "views.pth", tmp_path / "out"))
    assert _parity(tmp_path / "out", arch, sd) <= ATOL


def test_safetensors_source_without_index_buffers(tmp_path: Path) -> None:
    """timm publishes unilm weights as safetensors in unilm names, without relative_position_index."""
    from beit_tools.synthetic import save_safetensors

    arch = tiny_arch(Family.CLASSIFICATION, use_mean_pooling=False)
    sd = make_state_dict(arch, save_index=False)
    convert(ConvertOptions(save_safetensors(sd, tmp_path / "model.safetensors"), tmp_path / "out"))
    assert _parity(tmp_path / "out", arch, sd) <= ATOL


@pytest.mark.parametrize(
    "arch", [tiny_arch(Family.MIM), tiny_abs_pos_arch(Family.MIM)], ids=["shared-table", "abs-pos"]
)
def test_masked_image_modeling_with_masked_patches_compares_the_mask_token(arch: Arch, tmp_path: Path) -> None:
    """With bool_masked_pos the converted mask_token enters the computation; wrong values would show."""
    from tests.reference_timm import timm_masked_logits

    spec = default_spec(arch)
    out = convert_spec(tmp_path, spec)
    model = load_hf(out, arch)
    x = pixels(arch)
    patches = arch.window**2
    masked = torch.rand(x.shape[0], patches, generator=torch.Generator().manual_seed(5)) < 0.5
    with torch.no_grad():
        ours = model(pixel_values=x, bool_masked_pos=masked).logits
        unmasked = model(pixel_values=x).logits
    source = make_state_dict(arch, spec.seed)
    expected = timm_masked_logits(arch, source, x, masked)
    assert (ours[masked] - expected[masked]).abs().max().item() <= ATOL
    assert (ours[masked] - unmasked[masked]).abs().max().item() > 1e-2  # the mask token did change them
    from beit_tools.core.reference import reference_forward

    original = reference_forward(source, arch, x, masked).logits
    assert (ours[masked] - original[masked]).abs().max().item() <= ATOL
