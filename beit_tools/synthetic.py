"""Synthetic unilm-layout checkpoints with random weights, for tests, `make demo` and `make bench`.

Keys and shapes come from the layout table; index buffers are the real recomputed indices; the
containers mimic what unilm and mmseg training scripts save (optimizer state, `args` Namespace, mmseg
`meta`). Values are scaled so activations stay of order one: a wrong mapping then changes outputs by
far more than any tolerance.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy
import torch

from beit_tools.core.arch import Arch, Family, relative_position_index
from beit_tools.core.labels import bundled
from beit_tools.core.layout import expected_layout

Init = Callable[[tuple[int, ...], torch.Generator], torch.Tensor]


def _normal(std: float, mean: float = 0.0) -> Init:
    return lambda shape, g: torch.randn(shape, generator=g) * std + mean


def _fan_in(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    fan_in = 1
    for s in shape[1:]:
        fan_in *= s
    return torch.randn(shape, generator=g) / max(fan_in, 1) ** 0.5


def _transposed_conv(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=g) / (shape[0] ** 0.5)


# First matching pattern decides a tensor's initial values.
INITS: tuple[tuple[str, Init], ...] = (
    (r".*running_var", lambda shape, g: torch.rand(shape, generator=g) + 0.5),
    (r".*running_mean", _normal(0.1)),
    (r"(fpn1\.[03]|fpn2\.0)\.weight", _transposed_conv),
    (r".*(norm\d?|fc_norm|bn|fpn1\.1)\.weight", _normal(0.1, 1.0)),
    (r".*gamma_\d", _normal(0.1, 0.5)),
    (r".*relative_position_bias_table", _normal(0.5)),
    (r"(cls_token|mask_token|pos_embed)", _normal(0.5)),
    (r".*\.bias|.*_bias", _normal(0.1)),
    (r".*", _fan_in),
)


def tiny_arch(family: Family, **overrides: Any) -> Arch:
    """A few-kilobyte architecture with every structural feature of the real ones."""
    base: dict[str, Any] = dict(
        family=family,
        hidden_size=32,
        num_hidden_layers=4 if family is Family.SEGMENTATION else 2,
        num_attention_heads=2,
        intermediate_size=128,
        patch_size=8,
        image_size=32,
        use_relative_position_bias=family is not Family.MIM,
        use_shared_relative_position_bias=family is Family.MIM,
        use_mask_token=family is Family.MIM,
        num_labels={Family.CLASSIFICATION: 5, Family.SEGMENTATION: 6}.get(family, 0),
        vocab_size=16 if family is Family.MIM else 8192,
    )
    if family is Family.SEGMENTATION:
        # patch 16 with unilm's patch-16 FPN, on a 4x4 window: the geometry the original code writes
        base |= dict(
            patch_size=16,
            image_size=64,
            out_indices=(0, 1, 2, 3),
            use_auxiliary_head=True,
            auxiliary_channels=8,
            normalization="imagenet",  # mmseg's ADE20K training
        )
    base.update(overrides)
    return Arch(**base)


def tiny_abs_pos_arch(family: Family, **overrides: Any) -> Arch:
    """The pt1k_800ep / DiT style: absolute pos_embed, no relative table, no layer scale.

    Without a table the head count follows the 64-dimensional-head convention, so the width is 128.
    """
    base: dict[str, Any] = dict(
        use_relative_position_bias=False,
        use_shared_relative_position_bias=False,
        use_absolute_position_embeddings=True,
        layer_scale=False,
        hidden_size=128,
        num_attention_heads=2,
        intermediate_size=256,
    )
    return tiny_arch(family, **(base | overrides))


def make_state_dict(
    arch: Arch,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    save_index: bool = True,
    fill: float | None = None,
) -> dict[str, torch.Tensor]:
    """Canonical unilm keys -> random tensors of the right shapes (index buffers exact).

    `fill` makes every floating tensor that constant instead: fast for full-size files whose test is about shapes.
    """
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, expected in expected_layout(arch).items():
        if key.endswith("relative_position_index"):
            if save_index:
                out[key] = torch.from_numpy(relative_position_index(arch.window))
            continue
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(1000, dtype=torch.long)
            continue
        if fill is not None:
            out[key] = torch.full(expected.shape, fill, dtype=dtype)
            continue
        init = next(fn for pattern, fn in INITS if re.fullmatch(pattern, key))
        out[key] = init(expected.shape, g).to(dtype)
    return out


@dataclass(frozen=True)
class SyntheticSpec:
    """How to package a synthetic state dict the way a real run would have saved it."""

    arch: Arch
    container: str = "model"  # model | module | state_dict | model_ema | raw
    key_prefix: str = ""  # e.g. "module." as BEiT v2 / DeepSpeed files keep it
    dtype: torch.dtype = torch.float32
    training_extras: bool = False  # optimizer, epoch, scaler, args Namespace
    save_index: bool = True
    seed: int = 0
    fill: float | None = None  # a constant for every floating tensor (see make_state_dict)

    def with_(self, **changes: Any) -> SyntheticSpec:
        return replace(self, **changes)


def default_spec(arch: Arch) -> SyntheticSpec:
    """Segmentation files come from mmseg (`state_dict` + `meta`); the others from unilm (`model`)."""
    return SyntheticSpec(arch, container="state_dict" if arch.family is Family.SEGMENTATION else "model")


def mmseg_meta(arch: Arch) -> dict[str, Any]:
    names = bundled("ade20k-150") if arch.num_labels == 150 else {i: f"class{i}" for i in range(arch.num_labels)}
    config = (
        "model = dict(\n"
        f"    backbone=dict(type='BEiT', img_size={arch.image_size}, patch_size={arch.patch_size},\n"
        f"        embed_dim={arch.hidden_size}, depth={arch.num_hidden_layers}, num_heads={arch.num_attention_heads},\n"
        f"        out_indices={list(arch.out_indices)}),\n"
        f"    decode_head=dict(type='UPerHead', pool_scales={tuple(arch.pool_scales)},\n"
        f"                     num_classes={arch.num_labels}))\n"
    )
    return {
        "CLASSES": tuple(names[i] for i in range(arch.num_labels)),
        "PALETTE": [[(i * 37) % 256, (i * 91) % 256, (i * 53) % 256] for i in range(arch.num_labels)],
        "config": config,
        "mmseg_version": "0.11.0+synthetic",
        "iter": 160000,
        "best_mIoU": numpy.float64(0.4712),  # mmseg hooks store numpy scalars
    }


def make_checkpoint(spec: SyntheticSpec) -> dict[str, Any] | dict[str, torch.Tensor]:
    """The object a training script would pass to torch.save."""
    arch = spec.arch
    sd = make_state_dict(arch, spec.seed, spec.dtype, spec.save_index, spec.fill)
    if arch.family is Family.SEGMENTATION:
        sd = {(k if k.startswith(("decode_head.", "auxiliary_head.")) else f"backbone.{k}"): v for k, v in sd.items()}
    sd = {f"{spec.key_prefix}{k}": v for k, v in sd.items()}
    if spec.container == "raw":
        return sd
    obj: dict[str, Any] = {spec.container: sd}
    if spec.container == "model_ema":
        obj["model"] = make_state_dict(arch, spec.seed + 1, spec.dtype, spec.save_index, spec.fill)
    if arch.family is Family.SEGMENTATION and spec.container == "state_dict":
        obj["meta"] = mmseg_meta(arch)
    if spec.training_extras:
        obj["optimizer"] = {
            "state": {0: {"step": torch.tensor(10.0)}},
            "param_groups": [{"lr": 1e-3, "params": [0]}],
        }
        obj["epoch"] = 99
        obj["scaler"] = {
            "scale": 65536.0,
            "growth_factor": 2.0,
            "backoff_factor": 0.5,
            "growth_interval": 2000,
        }
        obj["args"] = argparse.Namespace(
            model=f"beit_synthetic_patch{arch.patch_size}_{arch.image_size}",
            nb_classes=arch.num_labels,
            input_size=arch.image_size,
            layer_scale_init_value=0.1,
            lr=1e-3,
        )
    return obj


def save_checkpoint(obj: dict[str, Any], path: Path, *, legacy: bool = False) -> Path:
    """torch.save it (zip format, or the pre-1.6 legacy format)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def save_safetensors(state_dict: dict[str, torch.Tensor], path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    return path


def write_synthetic(path: Path, spec: SyntheticSpec, *, legacy: bool = False) -> Path:
    return save_checkpoint(make_checkpoint(spec), path, legacy=legacy)
