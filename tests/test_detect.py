"""Detection from tensors alone, with the evidence behind each value."""

from __future__ import annotations

import pytest

from beit_tools.core.arch import Arch, Family, default_out_indices, relative_position_index, window_from_table_rows
from beit_tools.core.checkpoint import TensorInfo
from beit_tools.core.detect import detect
from beit_tools.errors import BeitToolsError
from beit_tools.synthetic import make_state_dict, mmseg_meta, tiny_abs_pos_arch, tiny_arch


def infos_of(arch: Arch) -> dict[str, TensorInfo]:
    return {k: TensorInfo(tuple(v.shape), v.dtype) for k, v in make_state_dict(arch).items()}


ARCHS = {
    "classification": tiny_arch(Family.CLASSIFICATION),
    "cls-pooling": tiny_arch(Family.CLASSIFICATION, use_mean_pooling=False, image_size=48),
    "mim": tiny_arch(Family.MIM),
    "mim-abs-pos": tiny_abs_pos_arch(Family.MIM),
    "segmentation": tiny_arch(Family.SEGMENTATION),
}


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_detect_recovers_the_factory_architecture(name: str) -> None:
    arch = ARCHS[name]
    meta = mmseg_meta(arch) if arch.family is Family.SEGMENTATION else {}
    meta = {"classes": list(meta["CLASSES"]), "config_text": meta["config"]} if meta else {}
    assert detect(infos_of(arch), meta).arch == arch


def test_evidence_names_the_key_and_shape() -> None:
    ev = detect(infos_of(ARCHS["classification"])).evidence
    assert str(ev["num_attention_heads"]) == "2 from blocks.0.attn.relative_position_bias_table [52, 2]"
    assert str(ev["image_size"]) == "32 from blocks.0.attn.relative_position_bias_table [52, 2]"
    assert str(ev["hidden_size"]) == "32 from patch_embed.proj.weight [32, 3, 8, 8]"
    assert str(ev["use_mean_pooling"]) == "True from fc_norm.weight: mean pooling of patch tokens"
    assert ev["family"].value == "image-classification"


def test_heads_without_a_table_follow_the_head_dim_convention_and_say_so() -> None:
    ev = detect(infos_of(ARCHS["mim-abs-pos"])).evidence
    assert ev["num_attention_heads"].value == 2
    assert ev["num_attention_heads"].kind == "convention"
    assert ev["image_size"].source == "pos_embed [1, 17, 128]"


def test_overrides_fill_gaps_and_refuse_contradictions() -> None:
    infos = infos_of(ARCHS["mim-abs-pos"])
    assert detect(infos, num_heads=4).arch.num_attention_heads == 4
    with pytest.raises(BeitToolsError, match="--image-size 64 contradicts pos_embed"):
        detect(infos, image_size=64)
    with pytest.raises(BeitToolsError, match="--num-heads 4 contradicts"):
        detect(infos_of(ARCHS["classification"]), num_heads=4)
    no_positions = {k: v for k, v in infos_of(ARCHS["classification"]).items() if "relative_position" not in k}
    ev = detect(no_positions, image_size=64, num_heads=2).evidence["image_size"]
    assert (ev.value, ev.kind) == (64, "override")


def test_segmentation_out_indices_from_file_or_convention() -> None:
    arch = ARCHS["segmentation"]
    ev = detect(infos_of(arch), {"config_text": "backbone=dict(out_indices=[0, 1, 2, 3])"}).evidence
    assert (ev["out_indices"].value, ev["out_indices"].kind) == ((0, 1, 2, 3), "file")
    ev = detect(infos_of(arch)).evidence["out_indices"]
    assert ev.kind == "convention" and ev.value == default_out_indices(4)


def test_default_out_indices_reproduce_the_official_configs() -> None:
    assert default_out_indices(12) == (3, 5, 7, 11)
    assert default_out_indices(24) == (7, 11, 15, 23)


def test_not_beit_says_what_it_looks_like() -> None:
    resnet = {
        "conv1.weight": TensorInfo((64, 3, 7, 7), None),
        "layer1.0.conv1.weight": TensorInfo((64, 64, 1, 1), None),
    }
    with pytest.raises(BeitToolsError, match=r"not a BEiT checkpoint.*conv1, layer1"):
        detect(resnet)


def test_headless_and_gappy_files() -> None:
    infos = infos_of(ARCHS["classification"])
    with pytest.raises(BeitToolsError, match="no head"):
        detect({k: v for k, v in infos.items() if not k.startswith("head.")})
    gappy = {k: v for k, v in infos.items() if not k.startswith("blocks.1.")}
    gappy["blocks.2.norm1.weight"] = infos["blocks.0.norm1.weight"]
    with pytest.raises(BeitToolsError, match=r"lacks block 1 \(blocks 0-2 are expected, 1 absent\)"):
        detect(gappy)


@pytest.mark.parametrize(("window", "rows"), [(14, 732), (24, 2212), (32, 3972), (40, 6244)])
def test_official_window_sizes(window: int, rows: int) -> None:
    assert window_from_table_rows(rows) == window
    index = relative_position_index(window)
    assert index.shape == (window * window + 1,) * 2
    assert index.max().item() == rows - 1 and index.min().item() == 0
