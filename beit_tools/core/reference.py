"""The original BEiT forward pass, run directly on raw unilm tensors (canonical names).

Written from the original model's semantics, not from the converter: it reads `blocks.i.attn.qkv.weight`
and friends as the unilm code holds them, fuses the q/v biases itself and gathers the relative
position bias with its own index. `verify --against` runs it on the source checkpoint and compares with
what transformers computes from the converted folder, so a mapping fault cannot hide behind itself.

Covers the backbone of all three families, the classification and visual-token heads, and the
mmseg UperNet pipeline (FPN necks on blocks `out_indices`, PSP + FPN decode head, conv_seg).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from beit_tools.core.arch import LAYER_NORM_EPS, Arch, Family, relative_position_index

Tensors = Mapping[str, torch.Tensor]
BN_EPS = 1e-5  # mmseg SyncBN / torch BatchNorm default


@dataclass
class ReferenceOutput:
    hidden_states: list[torch.Tensor]  # [embeddings, after block 0, ..., after block L-1], CLS first
    logits: torch.Tensor | None  # classification [B, C], MIM [B, W*W, V], segmentation [B, K, H/4, W/4]


def _ln(x: torch.Tensor, sd: Tensors, name: str) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], LAYER_NORM_EPS)


def _relative_bias(table: torch.Tensor, window: int) -> torch.Tensor:
    """[H, T, T] bias: the table row for every (query token, key token) pair."""
    index = torch.from_numpy(relative_position_index(window))
    tokens = index.shape[0]
    return table[index.reshape(-1)].reshape(tokens, tokens, -1).permute(2, 0, 1)


def _attention(x: torch.Tensor, sd: Tensors, prefix: str, heads: int, bias: torch.Tensor | None) -> torch.Tensor:
    batch, tokens, dim = x.shape
    if f"{prefix}.q_bias" in sd:
        q_bias = sd[f"{prefix}.q_bias"]
        qkv_bias = torch.cat((q_bias, torch.zeros_like(q_bias), sd[f"{prefix}.v_bias"]))
    else:  # qkv_bias=False: a bias-free projection
        qkv_bias = None
    qkv = F.linear(x, sd[f"{prefix}.qkv.weight"], qkv_bias)
    qkv = qkv.reshape(batch, tokens, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    scores = (q * (dim // heads) ** -0.5) @ k.transpose(-2, -1)
    if bias is not None:
        scores = scores + bias
    out = scores.softmax(dim=-1) @ v
    out = out.transpose(1, 2).reshape(batch, tokens, dim)
    return F.linear(out, sd[f"{prefix}.proj.weight"], sd[f"{prefix}.proj.bias"])


def _block(x: torch.Tensor, sd: Tensors, i: int, arch: Arch, shared: torch.Tensor | None) -> torch.Tensor:
    p = f"blocks.{i}"
    bias = shared
    if arch.use_relative_position_bias:
        own = _relative_bias(sd[f"{p}.attn.relative_position_bias_table"], arch.window)
        bias = own if bias is None else bias + own
    attn = _attention(_ln(x, sd, f"{p}.norm1"), sd, f"{p}.attn", arch.num_attention_heads, bias)
    x = x + (sd[f"{p}.gamma_1"] * attn if arch.layer_scale else attn)
    h = F.linear(_ln(x, sd, f"{p}.norm2"), sd[f"{p}.mlp.fc1.weight"], sd[f"{p}.mlp.fc1.bias"])
    h = F.linear(F.gelu(h), sd[f"{p}.mlp.fc2.weight"], sd[f"{p}.mlp.fc2.bias"])
    return x + (sd[f"{p}.gamma_2"] * h if arch.layer_scale else h)


def backbone(
    sd: Tensors, arch: Arch, pixels: torch.Tensor, bool_masked_pos: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """Token sequences: the embeddings, then the output of every block.

    `bool_masked_pos` [B, patches] replaces those patch embeddings by the mask token, as pretraining did.
    """
    x = F.conv2d(pixels, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=arch.patch_size)
    x = x.flatten(2).transpose(1, 2)
    if bool_masked_pos is not None:
        w = bool_masked_pos.unsqueeze(-1).type_as(x)
        x = x * (1 - w) + sd["mask_token"].expand(x.shape[0], x.shape[1], -1) * w
    x = torch.cat((sd["cls_token"].expand(x.shape[0], -1, -1), x), dim=1)
    if arch.use_absolute_position_embeddings:
        x = x + sd["pos_embed"]
    shared = None
    if arch.use_shared_relative_position_bias:
        shared = _relative_bias(sd["rel_pos_bias.relative_position_bias_table"], arch.window)
    states = [x]
    for i in range(arch.num_hidden_layers):
        x = _block(x, sd, i, arch, shared)
        states.append(x)
    return states


# --- mmseg UperNet -------------------------------------------------------------------------------


def _bn(x: torch.Tensor, sd: Tensors, name: str) -> torch.Tensor:
    return F.batch_norm(
        x,
        sd[f"{name}.running_mean"],
        sd[f"{name}.running_var"],
        sd[f"{name}.weight"],
        sd[f"{name}.bias"],
        training=False,
        eps=BN_EPS,
    )


def _conv_module(x: torch.Tensor, sd: Tensors, name: str) -> torch.Tensor:
    """mmseg ConvModule: bias-free conv (padding keeps the size), BatchNorm, ReLU."""
    weight = sd[f"{name}.conv.weight"]
    x = F.conv2d(x, weight, padding=weight.shape[-1] // 2)
    return F.relu(_bn(x, sd, f"{name}.bn"))


def _resize(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def token_maps(states: list[torch.Tensor], arch: Arch) -> list[torch.Tensor]:
    """The outputs of blocks `out_indices` as [B, D, W, W] maps (CLS dropped), as the original takes them."""
    batch = states[0].shape[0]
    return [
        states[i + 1][:, 1:].transpose(1, 2).reshape(batch, arch.hidden_size, arch.window, arch.window)
        for i in arch.out_indices
    ]


def fpn_features(states: list[torch.Tensor], sd: Tensors, arch: Arch) -> list[torch.Tensor]:
    """The four multi-scale maps of the unilm BEiT backbone: blocks `out_indices` at ×4, ×2, ×1, ×½."""
    maps = token_maps(states, arch)
    up = F.conv_transpose2d(maps[0], sd["fpn1.0.weight"], sd["fpn1.0.bias"], stride=2)
    up = F.gelu(_bn(up, sd, "fpn1.1"))
    first = F.conv_transpose2d(up, sd["fpn1.3.weight"], sd["fpn1.3.bias"], stride=2)
    second = F.conv_transpose2d(maps[1], sd["fpn2.0.weight"], sd["fpn2.0.bias"], stride=2)
    return [first, second, maps[2], F.max_pool2d(maps[3], kernel_size=2, stride=2)]


def uper_head(features: list[torch.Tensor], sd: Tensors, arch: Arch) -> torch.Tensor:
    """mmseg UPerHead: PSP on the coarsest map, top-down FPN, fused, then conv_seg."""
    top = features[-1]
    pooled = [
        _resize(_conv_module(F.adaptive_avg_pool2d(top, scale), sd, f"decode_head.psp_modules.{n}.1"), top.shape[2:])
        for n, scale in enumerate(arch.pool_scales)
    ]
    laterals = [_conv_module(f, sd, f"decode_head.lateral_convs.{n}") for n, f in enumerate(features[:-1])]
    laterals.append(_conv_module(torch.cat([top, *pooled], dim=1), sd, "decode_head.bottleneck"))
    for n in range(len(laterals) - 1, 0, -1):
        laterals[n - 1] = laterals[n - 1] + _resize(laterals[n], laterals[n - 1].shape[2:])
    outs = [_conv_module(lat, sd, f"decode_head.fpn_convs.{n}") for n, lat in enumerate(laterals[:-1])]
    outs.append(laterals[-1])
    outs = [outs[0], *(_resize(o, outs[0].shape[2:]) for o in outs[1:])]
    fused = _conv_module(torch.cat(outs, dim=1), sd, "decode_head.fpn_bottleneck")
    return F.conv2d(fused, sd["decode_head.conv_seg.weight"], sd["decode_head.conv_seg.bias"])


class Float32(Mapping[str, torch.Tensor]):
    """The tensors of `source` in fp32, each made when it is used: no second copy of a checkpoint is held."""

    def __init__(self, source: Tensors) -> None:
        self.source = source

    def __getitem__(self, key: str) -> torch.Tensor:
        tensor = self.source[key]
        return tensor.float() if tensor.is_floating_point() else tensor

    def __iter__(self):
        return iter(self.source)

    def __len__(self) -> int:
        return len(self.source)


@torch.no_grad()
def reference_forward(
    sd: Tensors, arch: Arch, pixels: torch.Tensor, bool_masked_pos: torch.Tensor | None = None
) -> ReferenceOutput:
    """The original model's outputs for `pixels` (fp32 throughout; `sd` may read its tensors lazily)."""
    sd = Float32(sd)
    states = backbone(sd, arch, pixels.float(), bool_masked_pos)
    last = states[-1]
    if arch.family is Family.CLASSIFICATION:
        mean_pooled = arch.use_mean_pooling
        pooled = _ln(last[:, 1:].mean(dim=1), sd, "fc_norm") if mean_pooled else _ln(last, sd, "norm")[:, 0]
        logits = F.linear(pooled, sd["head.weight"], sd["head.bias"])
    elif arch.family is Family.MIM:
        logits = F.linear(_ln(last, sd, "norm")[:, 1:], sd["lm_head.weight"], sd["lm_head.bias"])
    else:
        logits = uper_head(fpn_features(states, sd, arch), sd, arch)
    return ReferenceOutput(states, logits)
