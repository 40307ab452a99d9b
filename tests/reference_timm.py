"""timm's BEiT, built from a detected architecture and loaded with the source tensors: the independent reference."""

from __future__ import annotations

import torch
from timm.models.beit import Beit

from beit_tools.core.arch import Arch, Family


def timm_model(arch: Arch, state_dict: dict[str, torch.Tensor]) -> Beit:
    """timm's Beit holding the unilm tensors (canonical names) of `state_dict`, in eval mode and fp32."""
    if arch.family is Family.CLASSIFICATION:
        pool, classes = ("avg" if arch.use_mean_pooling else "token"), arch.num_labels
    else:
        pool, classes = "", 0
    model = Beit(
        img_size=arch.image_size,
        patch_size=arch.patch_size,
        in_chans=arch.num_channels,
        num_classes=classes,
        global_pool=pool,
        embed_dim=arch.hidden_size,
        depth=arch.num_hidden_layers,
        num_heads=arch.num_attention_heads,
        mlp_ratio=arch.intermediate_size / arch.hidden_size,
        qkv_bias=arch.qkv_bias,
        init_values=0.1 if arch.layer_scale else None,
        use_abs_pos_emb=arch.use_absolute_position_embeddings,
        use_rel_pos_bias=arch.use_relative_position_bias,
        use_shared_rel_pos_bias=arch.use_shared_relative_position_bias,
        use_fc_norm=arch.family is Family.CLASSIFICATION and arch.use_mean_pooling,
    )
    backbone = {
        k: v.float()
        for k, v in state_dict.items()
        if not k.endswith("relative_position_index")
        and not k.startswith(("mask_token", "lm_head.", "fpn", "decode_head.", "auxiliary_head."))
    }
    result = model.load_state_dict(backbone, strict=False)
    allowed_missing = {"norm.weight", "norm.bias"} if arch.family is Family.SEGMENTATION else set()
    assert set(result.missing_keys) == allowed_missing, result.missing_keys
    assert not result.unexpected_keys, result.unexpected_keys
    return model.eval()


def timm_block_outputs(model: Beit, pixels: torch.Tensor) -> list[torch.Tensor]:
    """The token sequence after every block (CLS included), through timm's own modules."""
    x = model.patch_embed(pixels)
    x = torch.cat((model.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
    if model.pos_embed is not None:
        x = x + model.pos_embed
    shared = model.rel_pos_bias() if model.rel_pos_bias is not None else None
    outputs = []
    for block in model.blocks:
        x = block(x, shared_rel_pos_bias=shared)
        outputs.append(x)
    return outputs


def timm_outputs(arch: Arch, state_dict: dict[str, torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
    """Classification logits, or MIM visual-token logits (timm features through the file's lm_head)."""
    model = timm_model(arch, state_dict)
    with torch.no_grad():
        if arch.family is Family.CLASSIFICATION:
            return model(pixels)
        if arch.family is Family.MIM:
            features = model.forward_features(pixels)[:, 1:]
            return torch.nn.functional.linear(
                features, state_dict["lm_head.weight"].float(), state_dict["lm_head.bias"].float()
            )
    raise ValueError(f"no single output for {arch.family}")


def timm_masked_logits(
    arch: Arch, state_dict: dict[str, torch.Tensor], pixels: torch.Tensor, bool_masked_pos: torch.Tensor
) -> torch.Tensor:
    """MIM visual-token logits with masked patches, through timm's modules (the mask token as unilm applies it)."""
    model = timm_model(arch, state_dict)
    with torch.no_grad():
        x = model.patch_embed(pixels)
        w = bool_masked_pos.unsqueeze(-1).type_as(x)
        x = x * (1 - w) + state_dict["mask_token"].float() * w
        x = torch.cat((model.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        if model.pos_embed is not None:
            x = x + model.pos_embed
        shared = model.rel_pos_bias() if model.rel_pos_bias is not None else None
        for block in model.blocks:
            x = block(x, shared_rel_pos_bias=shared)
        x = model.norm(x)[:, 1:]
        return torch.nn.functional.linear(x, state_dict["lm_head.weight"].float(), state_dict["lm_head.bias"].float())
