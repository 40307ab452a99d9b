"""The unilm -> Hugging Face rule table, written once per family.

A rule matches a canonical unilm key (prefixes already stripped) and says what becomes of it, as an
op object (`ops.py`): rename to one target, split the fused qkv rows into query/key/value, or drop
with a reason.
Targets are the hub-canonical names `save_pretrained` writes, which transformers 4.x and 5.x both load.
The first matching rule wins; a key no rule matches is reported as unused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from beit_tools.core.arch import Arch, Family
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
            r"cls_pt_(?:layers|norm|lm_head)\..+",
            op=DROP,
            reason="pretraining-only (BEiT v2's patch-aggregation blocks, their norm and head): "
            "transformers has no module for them, and inference never runs them",
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


@dataclass(frozen=True)
class Addition:
    """A tensor the output needs and the file cannot have: made as zeros, for the reason given.

    `applies(source_arch, block)` says whether a missing key of block `block` (None outside blocks) is
    explained by this addition; `reason` may name `{block}`.
    """

    name: str
    source: str
    reason: str
    applies: Callable[[Arch, int | None], bool]
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", re.compile(self.source))


ADDITIONS = (
    Addition(
        "zero q/v biases",
        r"blocks\.\d+\.attn\.[qv]_bias",
        "the original has no query/value biases (qkv_bias=False); transformers' BEiT always has them, and zero "
        "biases compute the same",
        lambda arch, block: not arch.qkv_bias,
    ),
    Addition(
        "pass-through layer",
        r"blocks\.\d+\..+",
        "added layer {block}: transformers feeds its FPN {reading} for j in out_indices, so reaching the "
        "original's last block needs more layers than it has; the weights are zeros and the output is never used",
        lambda arch, block: block is not None and block >= arch.num_hidden_layers,
    ),
)


def addition_for(arch: Arch, key: str, reading: str = "") -> tuple[Addition, str] | None:
    """The addition that explains a key the target needs and the file lacks, with its reason.

    `reading` names the hidden states transformers feeds its FPN (e.g. `hidden_states[j-1]`).
    """
    m = re.match(r"blocks\.(\d+)\.", key)
    block = int(m.group(1)) if m else None
    for addition in ADDITIONS:
        if addition.pattern.fullmatch(key) and addition.applies(arch, block):
            return addition, addition.reason.format(block=block, reading=reading)
    return None
