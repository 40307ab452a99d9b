"""The unilm key layout: every tensor an original checkpoint of a given architecture holds, with its shape.

One table serves three jobs: detection checks a file against it (missing tensors, wrong shapes,
layers that disagree), the synthetic factory builds test checkpoints from it, and `inspect` shows
what a file lacks. `{i}` in a key stands for each block index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from beit_tools.core.arch import Arch, Family

Shape = tuple[int, ...]
BN_STATS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class Slot:
    key: str
    shape: Callable[[Arch], Shape]
    when: Callable[[Arch], bool] = lambda a: True
    optional: bool = False  # derivable buffers the original may or may not have saved


def _d(a: Arch) -> Shape:
    return (a.hidden_size,)


def _table(a: Arch) -> Shape:
    return (a.num_relative_distance, a.num_attention_heads)


def _index(a: Arch) -> Shape:
    return (a.num_tokens, a.num_tokens)


STEM = (
    Slot("cls_token", lambda a: (1, 1, a.hidden_size)),
    Slot("mask_token", lambda a: (1, 1, a.hidden_size), when=lambda a: a.use_mask_token),
    Slot(
        "pos_embed",
        lambda a: (1, a.num_tokens, a.hidden_size),
        when=lambda a: a.use_absolute_position_embeddings,
    ),
    Slot("patch_embed.proj.weight", lambda a: (a.hidden_size, a.num_channels, a.patch_size, a.patch_size)),
    Slot("patch_embed.proj.bias", _d),
    Slot(
        "rel_pos_bias.relative_position_bias_table",
        _table,
        when=lambda a: a.use_shared_relative_position_bias,
    ),
    Slot(
        "rel_pos_bias.relative_position_index",
        _index,
        when=lambda a: a.use_shared_relative_position_bias,
        optional=True,
    ),
)

BLOCK = (
    Slot("blocks.{i}.norm1.weight", _d),
    Slot("blocks.{i}.norm1.bias", _d),
    Slot("blocks.{i}.attn.qkv.weight", lambda a: (3 * a.hidden_size, a.hidden_size)),
    Slot("blocks.{i}.attn.q_bias", _d, when=lambda a: a.qkv_bias),
    Slot("blocks.{i}.attn.v_bias", _d, when=lambda a: a.qkv_bias),
    Slot("blocks.{i}.attn.relative_position_bias_table", _table, when=lambda a: a.use_relative_position_bias),
    Slot(
        "blocks.{i}.attn.relative_position_index",
        _index,
        when=lambda a: a.use_relative_position_bias,
        optional=True,
    ),
    Slot("blocks.{i}.attn.proj.weight", lambda a: (a.hidden_size, a.hidden_size)),
    Slot("blocks.{i}.attn.proj.bias", _d),
    Slot("blocks.{i}.norm2.weight", _d),
    Slot("blocks.{i}.norm2.bias", _d),
    Slot("blocks.{i}.mlp.fc1.weight", lambda a: (a.intermediate_size, a.hidden_size)),
    Slot("blocks.{i}.mlp.fc1.bias", lambda a: (a.intermediate_size,)),
    Slot("blocks.{i}.mlp.fc2.weight", lambda a: (a.hidden_size, a.intermediate_size)),
    Slot("blocks.{i}.mlp.fc2.bias", _d),
    Slot("blocks.{i}.gamma_1", _d, when=lambda a: a.layer_scale),
    Slot("blocks.{i}.gamma_2", _d, when=lambda a: a.layer_scale),
)


def _hidden(a: Arch) -> int:
    return a.hidden_size


def _aux_channels(a: Arch) -> int:
    return a.auxiliary_channels


def _bn(prefix: str, channels: Callable[[Arch], int] = _hidden) -> tuple[Slot, ...]:
    """BatchNorm statistics and affine parameters (`num_batches_tracked` is a scalar)."""
    return tuple(
        Slot(f"{prefix}.{s}", lambda a, s=s: () if s == "num_batches_tracked" else (channels(a),)) for s in BN_STATS
    )


def _conv_module(prefix: str, out_ch: Callable[[Arch], int], in_ch: Callable[[Arch], int], k: int) -> tuple[Slot, ...]:
    """An mmseg ConvModule: bias-free conv followed by BatchNorm."""
    return (Slot(f"{prefix}.conv.weight", lambda a: (out_ch(a), in_ch(a), k, k)), *_bn(f"{prefix}.bn", out_ch))


def _deconv(prefix: str) -> tuple[Slot, ...]:
    return (
        Slot(f"{prefix}.weight", lambda a: (a.hidden_size, a.hidden_size, 2, 2)),
        Slot(f"{prefix}.bias", _d),
    )


def _when(slots: tuple[Slot, ...], cond: Callable[[Arch], bool]) -> tuple[Slot, ...]:
    """The same slots, present only where `cond` also holds."""
    return tuple(Slot(s.key, s.shape, lambda a, w=s.when: cond(a) and w(a), s.optional) for s in slots)


MAX_AUX_CONVS = 4  # FCNHead convs the layout checks; more are still converted, unchecked here
MAX_POOL_SCALES = 8

AUXILIARY_HEAD = _when(
    (
        *(
            s
            for n in range(MAX_AUX_CONVS)
            for s in _when(
                _conv_module(f"auxiliary_head.convs.{n}", _aux_channels, _hidden if n == 0 else _aux_channels, 3),
                lambda a, n=n: a.auxiliary_num_convs > n,
            )
        ),
        *_when(
            _conv_module("auxiliary_head.conv_cat", _aux_channels, lambda a: a.hidden_size + a.auxiliary_channels, 3),
            lambda a: a.auxiliary_concat_input,
        ),
        Slot("auxiliary_head.conv_seg.weight", lambda a: (a.num_labels, a.auxiliary_channels, 1, 1)),
        Slot("auxiliary_head.conv_seg.bias", lambda a: (a.num_labels,)),
    ),
    lambda a: a.use_auxiliary_head,
)

PYRAMID_POOLING = tuple(
    s
    for n in range(MAX_POOL_SCALES)
    for s in _when(
        _conv_module(f"decode_head.psp_modules.{n}.1", _hidden, _hidden, 1), lambda a, n=n: len(a.pool_scales) > n
    )
)

SEGMENTATION_HEADS = (
    *_deconv("fpn1.0"),
    *_bn("fpn1.1"),
    *_deconv("fpn1.3"),
    *_deconv("fpn2.0"),
    *PYRAMID_POOLING,
    *_conv_module("decode_head.bottleneck", _hidden, lambda a: a.hidden_size * (1 + len(a.pool_scales)), 3),
    *(s for n in range(3) for s in _conv_module(f"decode_head.lateral_convs.{n}", _hidden, _hidden, 1)),
    *(s for n in range(3) for s in _conv_module(f"decode_head.fpn_convs.{n}", _hidden, _hidden, 3)),
    *_conv_module("decode_head.fpn_bottleneck", _hidden, lambda a: 4 * a.hidden_size, 3),
    Slot("decode_head.conv_seg.weight", lambda a: (a.num_labels, a.hidden_size, 1, 1)),
    Slot("decode_head.conv_seg.bias", lambda a: (a.num_labels,)),
    *AUXILIARY_HEAD,
)

HEADS: dict[Family, tuple[Slot, ...]] = {
    Family.MIM: (
        Slot("norm.weight", _d),
        Slot("norm.bias", _d),
        Slot("lm_head.weight", lambda a: (a.vocab_size, a.hidden_size)),
        Slot("lm_head.bias", lambda a: (a.vocab_size,)),
    ),
    Family.CLASSIFICATION: (
        Slot("fc_norm.weight", _d, when=lambda a: a.use_mean_pooling),
        Slot("fc_norm.bias", _d, when=lambda a: a.use_mean_pooling),
        Slot("norm.weight", _d, when=lambda a: not a.use_mean_pooling),
        Slot("norm.bias", _d, when=lambda a: not a.use_mean_pooling),
        Slot("head.weight", lambda a: (a.num_labels, a.hidden_size)),
        Slot("head.bias", lambda a: (a.num_labels,)),
    ),
    Family.SEGMENTATION: SEGMENTATION_HEADS,
}


@dataclass(frozen=True)
class ExpectedTensor:
    key: str
    shape: Shape
    optional: bool


def expected_layout(arch: Arch) -> dict[str, ExpectedTensor]:
    """Every unilm key of `arch`, in file order, with its shape."""
    out: dict[str, ExpectedTensor] = {}

    def add(slot: Slot, key: str) -> None:
        if slot.when(arch):
            out[key] = ExpectedTensor(key, tuple(slot.shape(arch)), slot.optional)

    for slot in STEM:
        add(slot, slot.key)
    for i in range(arch.num_hidden_layers):
        for slot in BLOCK:
            add(slot, slot.key.format(i=i))
    for slot in HEADS[arch.family]:
        add(slot, slot.key)
    return out


# Saved buffers: derivable indices and BatchNorm statistics are state, not parameters.
BUFFER_SUFFIXES = ("relative_position_index", "running_mean", "running_var", "num_batches_tracked")


def parameter_count(arch: Arch) -> int:
    """Trainable parameters of the original model, as its training script counts them."""
    total = 0
    for key, tensor in expected_layout(arch).items():
        if not key.endswith(BUFFER_SUFFIXES):
            n = 1
            for s in tensor.shape:
                n *= s
            total += n
    return total
