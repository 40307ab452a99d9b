"""The architecture of a BEiT checkpoint, in BeitConfig's own terms.

`Arch` is what detection measures, what the synthetic factory builds from, and what becomes
config.json. Geometry helpers (window, relative distances, index) live here because the source
layout, the drop check on saved index buffers and the reference forward pass all need them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

# LayerNorm epsilon of every unilm and timm BEiT; BeitConfig's default (1e-12) is wrong for them.
LAYER_NORM_EPS = 1e-6
# BeitConfig.layer_scale_init_value only decides whether lambda_1/2 exist; the values come from the file.
LAYER_SCALE_INIT = 0.1
# The unilm ADE20K configs for the 12-layer base model; other depths scale these (see default_out_indices).
BASE_OUT_INDICES = (3, 5, 7, 11)
DEFAULT_POOL_SCALES = (1, 2, 3, 6)


class Family(str, Enum):
    MIM = "masked-image-modeling"
    CLASSIFICATION = "image-classification"
    SEGMENTATION = "semantic-segmentation"


@dataclass(frozen=True)
class Flavor:
    """A transformers model type that holds the BEiT architecture: its classes, config and key prefix."""

    name: str
    prefix: str  # what the backbone's keys start with in the saved model
    config_class: str
    classes: dict[Family, str]
    renames: tuple[tuple[str, str], ...] = ()  # (pattern, replacement) on BEiT's saved names, in order

    def rename(self, key: str) -> str:
        """A hub-canonical BEiT key in this model type's saved names."""
        key = self.prefix + key[len("beit.") :] if key.startswith("beit.") else key
        for pattern, replacement in self.renames:
            key = re.sub(pattern, replacement, key)
        return key


BEIT, DATA2VEC = "beit", "data2vec-vision"
FLAVORS = {
    BEIT: Flavor(
        BEIT,
        "beit.",
        "BeitConfig",
        {
            Family.MIM: "BeitForMaskedImageModeling",
            Family.CLASSIFICATION: "BeitForImageClassification",
            Family.SEGMENTATION: "BeitForSemanticSegmentation",
        },
    ),
    # transformers has no masked-image-modeling class for data2vec-vision
    DATA2VEC: Flavor(
        DATA2VEC,
        "data2vec_vision.",
        "Data2VecVisionConfig",
        {
            Family.CLASSIFICATION: "Data2VecVisionForImageClassification",
            Family.SEGMENTATION: "Data2VecVisionForSemanticSegmentation",
        },
        # transformers 5 saves data2vec-vision's UperNet heads under their module names (no legacy mapping)
        renames=(
            (r"^decode_head\.psp_modules\.(\d+)\.1\.", r"decode_head.psp_modules.blocks.\1.conv."),
            (r"^decode_head\.bottleneck\.", "decode_head.psp_bottleneck."),
            (r"^((?:decode|auxiliary)_head\..+)\.conv\.weight$", r"\1.convolution.weight"),
            (r"^((?:decode|auxiliary)_head\..+)\.bn\.(\w+)$", r"\1.normalization.\2"),
        ),
    ),
}
# Every transformers class beit-tools writes -> its family (to read a folder back).
FAMILY_OF_CLASS = {cls: family for flavor in FLAVORS.values() for family, cls in flavor.classes.items()}
# Per-channel normalisation of the input pixels: unilm's default, and ImageNet's statistics.
NORMALIZATIONS = {
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass(frozen=True)
class Arch:
    family: Family
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    patch_size: int = 16
    num_channels: int = 3
    image_size: int = 224
    use_absolute_position_embeddings: bool = False
    use_relative_position_bias: bool = False
    use_shared_relative_position_bias: bool = False
    layer_scale: bool = True
    qkv_bias: bool = True  # q_bias/v_bias stored (transformers always has them: zeros stand in when absent)
    use_mean_pooling: bool = True
    use_mask_token: bool = False
    num_labels: int = 0  # classifier rows (classification) or classes (segmentation)
    flavor: str = BEIT  # the transformers model type to write (a key of FLAVORS)
    normalization: str = "half"  # a key of NORMALIZATIONS: what the model was trained to see
    vocab_size: int = 8192  # visual tokens (MIM)
    # segmentation only
    out_indices: tuple[int, ...] = ()
    pool_scales: tuple[int, ...] = DEFAULT_POOL_SCALES
    use_auxiliary_head: bool = False
    auxiliary_channels: int = 256
    auxiliary_num_convs: int = 1
    auxiliary_concat_input: bool = False

    @property
    def hf_class(self) -> str:
        classes = FLAVORS[self.flavor].classes
        if self.family not in classes:
            from beit_tools.errors import BeitToolsError

            raise BeitToolsError(
                f"transformers has no {self.family.value} class for {self.flavor}",
                "convert it as BEiT (--arch beit), which has one",
            )
        return classes[self.family]

    @property
    def window(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return self.window**2 + 1

    @property
    def num_relative_distance(self) -> int:
        return num_relative_distance(self.window)

    @property
    def has_relative_table(self) -> bool:
        return self.use_relative_position_bias or self.use_shared_relative_position_bias

    def config_fields(self) -> dict[str, Any]:
        """BeitConfig keyword arguments (labels are added by the writer)."""
        fields: dict[str, Any] = {
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": "gelu",
            "layer_norm_eps": LAYER_NORM_EPS,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "num_channels": self.num_channels,
            "use_mask_token": self.use_mask_token,
            "use_absolute_position_embeddings": self.use_absolute_position_embeddings,
            "use_relative_position_bias": self.use_relative_position_bias,
            "use_shared_relative_position_bias": self.use_shared_relative_position_bias,
            "layer_scale_init_value": LAYER_SCALE_INIT if self.layer_scale else 0.0,
            "use_mean_pooling": self.use_mean_pooling,
        }
        if self.family is Family.MIM:
            fields["vocab_size"] = self.vocab_size
        else:
            fields["num_labels"] = self.num_labels
        if self.family is Family.SEGMENTATION:
            fields |= {
                "out_indices": list(self.out_indices),
                "pool_scales": list(self.pool_scales),
                "use_auxiliary_head": self.use_auxiliary_head,
                "auxiliary_channels": self.auxiliary_channels,
                "auxiliary_num_convs": self.auxiliary_num_convs,
                "auxiliary_concat_input": self.auxiliary_concat_input,
            }
        return fields

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["family"] = self.family.value
        return d


def num_relative_distance(window: int) -> int:
    """Rows of a relative position table: every (dy, dx) pair plus three CLS entries."""
    return (2 * window - 1) ** 2 + 3


def window_from_table_rows(rows: int) -> int | None:
    """Invert num_relative_distance; None when `rows` is not of that form."""
    side = round((rows - 3) ** 0.5)
    if side * side != rows - 3 or side % 2 == 0:
        return None
    return (side + 1) // 2


def window_from_tokens(tokens: int) -> int | None:
    side = round((tokens - 1) ** 0.5)
    return side if side * side == tokens - 1 else None


def relative_position_index(window: int) -> Any:
    """The [T, T] lookup from token pairs to table rows, as the original computes it (a numpy int64 array).

    Patch a=(ha, wa), b=(hb, wb) -> (ha-hb+W-1)*(2W-1) + (wa-wb+W-1); the CLS row, column and corner use
    the table's last three rows (N-3, N-2, N-1).
    """
    import numpy as np

    n = num_relative_distance(window)
    rows = np.repeat(np.arange(window), window)
    cols = np.tile(np.arange(window), window)
    dy = rows[:, None] - rows[None, :] + window - 1
    dx = cols[:, None] - cols[None, :] + window - 1
    tokens = window * window + 1
    index = np.empty((tokens, tokens), dtype=np.int64)
    index[1:, 1:] = dy * (2 * window - 1) + dx
    index[0, :] = n - 3
    index[:, 0] = n - 2
    index[0, 0] = n - 1
    return index


def default_out_indices(num_layers: int) -> tuple[int, ...]:
    """unilm's ADE20K feature blocks: [3,5,7,11] at 12 layers, [7,11,15,23] at 24.

    Other depths keep the same relative positions, (k+1)·L/12 - 1, which reproduces both official lists.
    """
    picked = [max(0, round((k + 1) * num_layers / 12) - 1) for k in BASE_OUT_INDICES]
    return tuple(picked)
