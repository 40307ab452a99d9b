"""Detect the family and architecture of a checkpoint from its tensors alone, with evidence for each value.

File names are never consulted: a fine-tune saved as `final.pth` is detected the same way as an
official file. Each value records where it came from, so `inspect` can show it and a wrong value can
be traced to its key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from beit_tools.core.arch import (
    BEIT,
    DATA2VEC,
    DEFAULT_POOL_SCALES,
    Arch,
    Family,
    default_out_indices,
    window_from_table_rows,
    window_from_tokens,
)
from beit_tools.core.checkpoint import TensorInfo
from beit_tools.errors import BeitToolsError

# Marker tensors that decide the family, first match wins.
FAMILY_MARKERS = (
    ("decode_head.conv_seg.weight", Family.SEGMENTATION),
    ("lm_head.weight", Family.MIM),
    ("head.weight", Family.CLASSIFICATION),
)
SHARED_TABLE = "rel_pos_bias.relative_position_bias_table"
LAYER_TABLE = "blocks.0.attn.relative_position_bias_table"
# Arch fields that are true exactly when a tensor is present.
PRESENCE_FLAGS = (
    ("use_shared_relative_position_bias", SHARED_TABLE),
    ("use_relative_position_bias", LAYER_TABLE),
    ("use_absolute_position_embeddings", "pos_embed"),
    ("layer_scale", "blocks.0.gamma_1"),
    ("qkv_bias", "blocks.0.attn.q_bias"),
    ("use_mask_token", "mask_token"),
)
# The output size of the head, per family: (Arch field, tensor whose rows count it).
HEAD_SIZES = {Family.MIM: ("vocab_size", "lm_head.weight"), Family.CLASSIFICATION: ("num_labels", "head.weight")}
HEAD_DIM_CONVENTION = 64
DEFAULT_IMAGE_SIZE = 224
BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")


@dataclass(frozen=True)
class Evidence:
    """Where a value came from: kind is `measured` (a tensor shape), `convention`, `file` (metadata) or `override`."""

    value: Any
    source: str
    kind: str = "measured"

    def __str__(self) -> str:
        if self.kind == "measured":
            return f"{self.value} from {self.source}"
        return f"{self.value} ({self.kind}: {self.source})"

    def to_dict(self) -> dict[str, Any]:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"value": value, "source": self.source, "kind": self.kind}


@dataclass(frozen=True)
class Detection:
    arch: Arch
    evidence: dict[str, Evidence]
    conflicts: tuple[str, ...] = ()  # tensors that disagree about a value; conversion refuses these


def _shape_of(infos: Mapping[str, TensorInfo], key: str) -> str:
    return f"{key} {list(infos[key].shape)}"


def detect(
    infos: Mapping[str, TensorInfo],
    meta: Mapping[str, Any] | None = None,
    *,
    image_size: int | None = None,
    num_heads: int | None = None,
    pool_scales: tuple[int, ...] | None = None,
    known: Mapping[str, Evidence] | None = None,
) -> Detection:
    """Measure the architecture from tensor names and shapes; the overrides fill what tensors cannot say.

    `known` holds what the caller already knows for `flavor` and `normalization` (an option, or the
    registry entry of a downloaded variant); it wins over the file's metadata and the conventions.
    """
    known = known or {}
    meta = meta or {}
    _require_beit(infos)
    ev: dict[str, Evidence] = {}

    family = next((fam for key, fam in FAMILY_MARKERS if key in infos), None)
    if family is None:
        raise BeitToolsError(
            "this BEiT checkpoint has no head: none of head.weight, lm_head.weight, decode_head.conv_seg.weight",
            "beit-tools converts classification, masked-image-modeling and ADE20K segmentation checkpoints",
        )
    marker = next(key for key, fam in FAMILY_MARKERS if fam is family)
    ev["family"] = Evidence(family.value, _shape_of(infos, marker))

    proj = "patch_embed.proj.weight"
    hidden, channels, patch, patch_w = infos[proj].shape
    if patch != patch_w:
        raise BeitToolsError(f"non-square patches are not supported ({_shape_of(infos, proj)})")
    ev["hidden_size"] = Evidence(hidden, _shape_of(infos, proj))
    ev["patch_size"] = Evidence(patch, _shape_of(infos, proj))
    ev["num_channels"] = Evidence(channels, _shape_of(infos, proj))

    layers = _count_blocks(infos)
    ev["num_hidden_layers"] = Evidence(layers, f"blocks.0 … blocks.{layers - 1}")
    fc1 = "blocks.0.mlp.fc1.weight"
    if fc1 not in infos:
        raise BeitToolsError(f"the checkpoint lacks {fc1}", "the file is incomplete; fetch or export it again")
    intermediate = infos[fc1].shape[0]
    ev["intermediate_size"] = Evidence(intermediate, _shape_of(infos, fc1))

    for name, key in PRESENCE_FLAGS:
        present = key in infos
        ev[name] = Evidence(present, key if present else f"no {key}")
    shared, per_layer = ev["use_shared_relative_position_bias"].value, ev["use_relative_position_bias"].value
    table = SHARED_TABLE if shared else LAYER_TABLE if per_layer else None
    abs_pos = ev["use_absolute_position_embeddings"].value
    ev["num_attention_heads"] = _heads(infos, table, hidden, num_heads, meta.get("config_text", ""))
    ev["image_size"], conflicts = _image_size(infos, table, abs_pos, patch, image_size)
    ev["use_mean_pooling"] = _pooling(infos, family)

    if family in HEAD_SIZES:
        name, key = HEAD_SIZES[family]
        ev[name] = Evidence(infos[key].shape[0], _shape_of(infos, key))
    else:
        ev |= _segmentation(infos, meta, hidden, layers, pool_scales)
    ev["flavor"] = known.get("flavor") or _flavor(meta)
    ev["normalization"] = known.get("normalization") or _normalization(meta, family)
    fields = {name: e.value for name, e in ev.items() if name != "family"}
    arch = Arch(family=family, **fields)
    return Detection(arch=arch, evidence=ev, conflicts=conflicts)


def _require_beit(infos: Mapping[str, TensorInfo]) -> None:
    needed = ("cls_token", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight")
    absent = [k for k in needed if k not in infos]
    if not absent:
        return
    if len(absent) < len(needed):
        raise BeitToolsError(
            f"the checkpoint lacks {', '.join(absent)}", "the file is incomplete; fetch or export it again"
        )
    heads = sorted({k.split(".")[0] for k in infos})
    sample = ", ".join(list(infos)[:3])
    raise BeitToolsError(
        f"not a BEiT checkpoint: no cls_token, patch_embed or blocks.N.attn.qkv; its {len(infos)} tensors "
        f"are grouped under {', '.join(heads[:8])}{' …' if len(heads) > 8 else ''} (e.g. {sample})",
        "pass an original unilm BEiT file (classification, pretraining or ADE20K)",
    )


def _count_blocks(infos: Mapping[str, TensorInfo]) -> int:
    indices = {int(m.group(1)) for k in infos if (m := BLOCK_KEY.match(k))}
    if not indices:
        raise BeitToolsError("the checkpoint has no transformer blocks (blocks.N.*)")
    layers = max(indices) + 1
    gaps = sorted(set(range(layers)) - indices)
    if gaps:
        raise BeitToolsError(
            f"the checkpoint lacks block {gaps[0]} (blocks 0-{layers - 1} are expected, {len(gaps)} absent)",
            "the file is incomplete; fetch or export it again",
        )
    return layers


def _heads(
    infos: Mapping[str, TensorInfo], table: str | None, hidden: int, override: int | None, config_text: str
) -> Evidence:
    if table is not None:
        heads = infos[table].shape[1]
        if override is not None and override != heads:
            raise BeitToolsError(
                f"--num-heads {override} contradicts {_shape_of(infos, table)}, which has {heads} heads",
                "drop --num-heads",
            )
        return Evidence(heads, _shape_of(infos, table))
    if override is not None:
        if hidden % override:
            raise BeitToolsError(f"--num-heads {override} does not divide the hidden size {hidden}")
        return Evidence(override, "--num-heads", "override")
    stated = _config_ints(config_text, "num_heads")
    if stated and hidden % stated[0] == 0:
        return Evidence(stated[0], "meta.config: num_heads", "file")
    if hidden % HEAD_DIM_CONVENTION:
        raise BeitToolsError(
            f"no relative position table to count heads, and hidden size {hidden} is not a multiple of 64",
            "give the head count with --num-heads",
        )
    return Evidence(
        hidden // HEAD_DIM_CONVENTION,
        f"no relative position table, so head dim 64 is assumed ({hidden}/64); --num-heads overrides",
        "convention",
    )


def _image_size(
    infos: Mapping[str, TensorInfo], table: str | None, abs_pos: bool, patch: int, override: int | None
) -> tuple[Evidence, tuple[str, ...]]:
    """The image size and, when the position tensors disagree, why (the relative table's window is kept)."""
    measured: list[tuple[int, str]] = []
    if table is not None:
        window = window_from_table_rows(infos[table].shape[0])
        if window is None:
            raise BeitToolsError(f"{_shape_of(infos, table)} has a row count that fits no square window")
        measured.append((window * patch, _shape_of(infos, table)))
    if abs_pos:
        window = window_from_tokens(infos["pos_embed"].shape[1])
        if window is None:
            raise BeitToolsError(f"{_shape_of(infos, 'pos_embed')} has a token count that fits no square grid")
        measured.append((window * patch, _shape_of(infos, "pos_embed")))
    conflicts: tuple[str, ...] = ()
    if len({size for size, _ in measured}) > 1:
        conflicts = (
            "the relative position table and pos_embed disagree on the window: "
            + "; ".join(f"{src} → {size}px" for size, src in measured),
        )
    if measured:
        size, source = measured[0]
        if override is not None and override != size:
            raise BeitToolsError(
                f"--image-size {override} contradicts {source}, which fixes the image size at {size}",
                "drop --image-size",
            )
        return Evidence(size, source), conflicts
    if override is not None:
        return Evidence(override, "--image-size", "override"), conflicts
    convention = "no position table or pos_embed fixes the window; --image-size overrides"
    return Evidence(DEFAULT_IMAGE_SIZE, convention, "convention"), conflicts


def _pooling(infos: Mapping[str, TensorInfo], family: Family) -> Evidence:
    if family is not Family.CLASSIFICATION:
        return Evidence(True, f"{family.value} keeps transformers' final layernorm an identity", "convention")
    if "fc_norm.weight" in infos:
        return Evidence(True, "fc_norm.weight: mean pooling of patch tokens")
    if "norm.weight" in infos:
        return Evidence(False, "norm.weight without fc_norm: the CLS token is pooled")
    raise BeitToolsError(
        "the classification checkpoint has neither fc_norm (mean pooling) nor norm (CLS pooling)",
        "the file is incomplete; fetch or export it again",
    )


PATCH8_FPN = (
    "this is unilm's patch-8 segmentation backbone: its FPN is one transposed convolution, then identity, "
    "2x and 4x max-pooling (only fpn1.0 is stored), and transformers' BeitForSemanticSegmentation has only the "
    "patch-16 FPN (two transposed convolutions with BatchNorm, one, identity, 2x max-pooling)"
)


def _require_expressible_heads(infos: Mapping[str, TensorInfo]) -> None:
    """Valid mmseg heads that transformers' BEiT has no modules for are refused with what they are."""
    if "fpn1.0.weight" in infos and "fpn1.1.weight" not in infos and "fpn2.0.weight" not in infos:
        raise BeitToolsError(PATCH8_FPN, "no conversion to BeitForSemanticSegmentation can compute what it computes")
    first_aux = "auxiliary_head.convs.0.conv.weight"
    if first_aux in infos and infos[first_aux].shape[-1] != 3:
        k = infos[first_aux].shape[-1]
        raise BeitToolsError(
            f"{_shape_of(infos, first_aux)}: an FCN auxiliary head with {k}x{k} convolutions; transformers' BEiT "
            "auxiliary head has 3x3 convolutions and cannot hold it",
            "the auxiliary head is used only in training; this file cannot be converted with it",
        )


def _segmentation(
    infos: Mapping[str, TensorInfo],
    meta: Mapping[str, Any],
    hidden: int,
    layers: int,
    pool_scales: tuple[int, ...] | None,
) -> dict[str, Evidence]:
    _require_expressible_heads(infos)
    ev: dict[str, Evidence] = {}
    seg = "decode_head.conv_seg.weight"
    classes, channels = infos[seg].shape[:2]
    if channels != hidden:
        raise BeitToolsError(
            f"{_shape_of(infos, seg)}: the decode head has {channels} channels, but transformers' UperHead "
            f"uses the hidden size ({hidden})",
            "this head cannot be expressed as BeitForSemanticSegmentation",
        )
    ev["num_labels"] = Evidence(classes, _shape_of(infos, seg))
    config_text = meta.get("config_text", "")

    found = _config_ints(config_text, "out_indices")
    if found:
        ev["out_indices"] = Evidence(tuple(found), "meta.config: out_indices", "file")
    else:
        ev["out_indices"] = Evidence(
            default_out_indices(layers),
            f"unilm's ADE20K blocks for {layers} layers (3,5,7,11 scaled by L/12)",
            "convention",
        )

    psp = {int(m.group(1)) for k in infos if (m := re.match(r"decode_head\.psp_modules\.(\d+)\.", k))}
    scales = _config_ints(config_text, "pool_scales")
    if pool_scales is not None:
        if len(pool_scales) != len(psp):
            raise BeitToolsError(f"--pool-scales gives {len(pool_scales)} scales for {len(psp)} psp_modules")
        ev["pool_scales"] = Evidence(tuple(pool_scales), "--pool-scales", "override")
    elif scales and len(scales) == len(psp):
        ev["pool_scales"] = Evidence(tuple(scales), "meta.config: pool_scales", "file")
    elif len(psp) == len(DEFAULT_POOL_SCALES):
        ev["pool_scales"] = Evidence(
            DEFAULT_POOL_SCALES,
            f"{len(psp)} psp_modules, the UperHead default scales; the weights cannot tell scales apart, "
            "--pool-scales overrides",
            "convention",
        )
    else:
        raise BeitToolsError(
            f"the decode head has {len(psp)} pyramid pooling modules and the file does not say their scales",
            "only the default (1, 2, 3, 6) can be inferred without the mmseg config",
        )

    aux = "auxiliary_head.conv_seg.weight" in infos
    ev["use_auxiliary_head"] = Evidence(aux, "auxiliary_head.conv_seg.weight" if aux else "no auxiliary_head")
    if aux:
        first = "auxiliary_head.convs.0.conv.weight"
        convs = {int(m.group(1)) for k in infos if (m := re.match(r"auxiliary_head\.convs\.(\d+)\.", k))}
        if first in infos:
            ev["auxiliary_channels"] = Evidence(infos[first].shape[0], _shape_of(infos, first))
        else:
            aux_seg = "auxiliary_head.conv_seg.weight"
            ev["auxiliary_channels"] = Evidence(infos[aux_seg].shape[1], _shape_of(infos, aux_seg))
        ev["auxiliary_num_convs"] = Evidence(len(convs), f"{len(convs)} conv module(s) under auxiliary_head.convs")
        cat = "auxiliary_head.conv_cat.conv.weight" in infos
        ev["auxiliary_concat_input"] = Evidence(cat, "auxiliary_head.conv_cat" if cat else "no auxiliary_head.conv_cat")
    return ev


def _flavor(meta: Mapping[str, Any]) -> Evidence:
    model = str((meta.get("args") or {}).get("model", ""))
    if "data2vec" in model.lower():
        return Evidence(DATA2VEC, f"args.model = {model}", "file")
    return Evidence(BEIT, "no data2vec-vision evidence in the file; --arch data2vec-vision writes it so", "convention")


# mmseg's img_norm_cfg means on 0-255, as configs write them.
CONFIG_MEANS = {"123.675": "imagenet", "127.5": "half"}


def _normalization(meta: Mapping[str, Any], family: Family) -> Evidence:
    """How the inputs were normalised in training: the file's args or mmseg config, else the convention."""
    args = meta.get("args") or {}
    if "imagenet_default_mean_and_std" in args:
        value = "imagenet" if args["imagenet_default_mean_and_std"] else "half"
        return Evidence(value, f"args.imagenet_default_mean_and_std = {args['imagenet_default_mean_and_std']}", "file")
    m = re.search(r"img_norm_cfg\s*=\s*dict\(\s*mean\s*=\s*\[\s*([\d.]+)", meta.get("config_text", ""))
    if m and m.group(1) in CONFIG_MEANS:
        return Evidence(CONFIG_MEANS[m.group(1)], f"meta.config: img_norm_cfg mean {m.group(1)}", "file")
    if family is Family.SEGMENTATION:
        return Evidence("imagenet", "mmseg's ADE20K configs normalise with ImageNet's mean/std", "convention")
    return Evidence(
        "half",
        "BEiT v1's mean = std = 0.5; BEiT v2 and ImageNet-1k pretraining used ImageNet's, which the tensors "
        "cannot show: --normalization imagenet",
        "convention",
    )


def _config_ints(config_text: str, name: str) -> list[int] | None:
    """The first `name=[a, b, ...]`, `name=(a, b, ...)` or `name=N` in an mmseg config dump."""
    m = re.search(rf"\b{name}\s*=\s*[\[(]?([\d,\s]+)[\])]?", config_text)
    if not m:
        return None
    return [int(x) for x in re.findall(r"\d+", m.group(1))]
