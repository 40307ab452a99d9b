"""The unilm -> Hugging Face rule table, written once per family.

A rule matches a canonical unilm key (prefixes already stripped) and says what becomes of it, as an
op object (`ops.py`): rename to one target, split the fused qkv rows into query/key/value, or drop
with a reason.
Targets are the hub-canonical names `save_pretrained` writes, which transformers 4.x and 5.x both load.
The first matching rule wins; a key no rule matches is reported as unused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from beit_tools.core.arch import Family
from beit_tools.core.ops import DROP, RENAME, SPLIT, Op


@dataclass(frozen=True)
class Rule:
    name: str
    source: str
    targets: tuple[str, ...] = ()
    op: Op = RENAME
    reason: str = ""
    check: str | None = None  # a named check the plan runs on the dropped tensor
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", re.compile(self.source))

    def apply(self, key: str) -> tuple[str, ...] | None:
        """Target keys for `key`, or None when the rule does not match it."""
        m = self.pattern.fullmatch(key)
        if m is None:
            return None
        return tuple(m.expand(t) for t in self.targets)


LAYER = r"beit.encoder.layer.\1"
ATTN = LAYER + ".attention.attention"
BN = r"(?:weight|bias|running_mean|running_var|num_batches_tracked)"
CONV_MODULE = rf"(?:conv\.weight|bn\.{BN})"

EMBEDDINGS = (
    Rule("cls token", r"cls_token", ("beit.embeddings.cls_token",)),
    Rule("mask token", r"mask_token", ("beit.embeddings.mask_token",)),
    Rule("absolute positions", r"pos_embed", ("beit.embeddings.position_embeddings",)),
    Rule(
        "patch embedding",
        r"patch_embed\.proj\.(weight|bias)",
        (r"beit.embeddings.patch_embeddings.projection.\1",),
    ),
    Rule(
        "shared position table",
        r"rel_pos_bias\.relative_position_bias_table",
        ("beit.encoder.relative_position_bias.relative_position_bias_table",),
    ),
    Rule(
        "position index",
        r"(?:rel_pos_bias|blocks\.\d+\.attn)\.relative_position_index",
        op=DROP,
        reason="derivable buffer: transformers recomputes it from the window (checked equal before dropping)",
        check="relative_position_index",
    ),
)

BLOCKS = (
    Rule(
        "qkv split",
        r"blocks\.(\d+)\.attn\.qkv\.weight",
        (ATTN + ".query.weight", ATTN + ".key.weight", ATTN + ".value.weight"),
        SPLIT,
        reason="fused [3D, D] rows split into query, key, value (the key has no bias in BEiT)",
    ),
    Rule("query bias", r"blocks\.(\d+)\.attn\.q_bias", (ATTN + ".query.bias",)),
    Rule("value bias", r"blocks\.(\d+)\.attn\.v_bias", (ATTN + ".value.bias",)),
    Rule(
        "layer position table",
        r"blocks\.(\d+)\.attn\.relative_position_bias_table",
        (ATTN + ".relative_position_bias.relative_position_bias_table",),
    ),
    Rule(
        "attention output",
        r"blocks\.(\d+)\.attn\.proj\.(weight|bias)",
        (LAYER + r".attention.output.dense.\2",),
    ),
    Rule("norm before", r"blocks\.(\d+)\.norm1\.(weight|bias)", (LAYER + r".layernorm_before.\2",)),
    Rule("norm after", r"blocks\.(\d+)\.norm2\.(weight|bias)", (LAYER + r".layernorm_after.\2",)),
    Rule("mlp in", r"blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", (LAYER + r".intermediate.dense.\2",)),
    Rule("mlp out", r"blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", (LAYER + r".output.dense.\2",)),
    Rule("layer scale", r"blocks\.(\d+)\.gamma_(1|2)", (LAYER + r".lambda_\2",)),
)

HEADS: dict[Family, tuple[Rule, ...]] = {
    Family.MIM: (
        Rule("final norm", r"norm\.(weight|bias)", (r"layernorm.\1",)),
        Rule("visual token head", r"lm_head\.(weight|bias)", (r"lm_head.\1",)),
        Rule(
            "pretraining-only blocks",
            r"cls_pt_layers\..+",
            op=DROP,
            reason="pretraining-only (BEiT v2 patch aggregation): transformers has no module for it",
        ),
    ),
    Family.CLASSIFICATION: (
        Rule("pooling norm", r"fc_norm\.(weight|bias)", (r"beit.pooler.layernorm.\1",)),
        Rule("CLS norm", r"norm\.(weight|bias)", (r"beit.layernorm.\1",)),
        Rule("classifier", r"head\.(weight|bias)", (r"classifier.\1",)),
    ),
    Family.SEGMENTATION: (
        Rule("fpn", rf"(fpn1\.[013]|fpn2\.0)\.({BN})", (r"\1.\2",)),
        Rule("decode classifier", r"decode_head\.conv_seg\.(weight|bias)", (r"decode_head.classifier.\1",)),
        Rule(
            "decode head",
            rf"decode_head\.((?:psp_modules\.\d+\.1|bottleneck|lateral_convs\.\d+|fpn_convs\.\d+|fpn_bottleneck)\.{CONV_MODULE})",
            (r"decode_head.\1",),
        ),
        Rule(
            "auxiliary classifier",
            r"auxiliary_head\.conv_seg\.(weight|bias)",
            (r"auxiliary_head.classifier.\1",),
        ),
        Rule(
            "auxiliary head",
            rf"auxiliary_head\.((?:convs\.\d+|conv_cat)\.{CONV_MODULE})",
            (r"auxiliary_head.\1",),
        ),
    ),
}


def rules_for(family: Family) -> tuple[Rule, ...]:
    return EMBEDDINGS + BLOCKS + HEADS[family]


def match(rules: tuple[Rule, ...], key: str) -> tuple[Rule, tuple[str, ...]] | None:
    for rule in rules:
        targets = rule.apply(key)
        if targets is not None:
            return rule, targets
    return None
