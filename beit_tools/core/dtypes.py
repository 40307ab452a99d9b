"""Element types in one place, without torch: names, safetensors codes, sizes, how to read them with numpy.

Checkpoints are opened, planned and written without importing torch, so dtypes are our own small
objects; `.torch` gives the torch dtype where a tensor has to be computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DType:
    name: str  # as torch names it: float32, bfloat16, int64
    code: str  # safetensors: F32, BF16, I64
    itemsize: int
    is_floating_point: bool
    numpy: str  # numpy dtype to read the raw bytes with (bfloat16 has none: its bits are read as uint16)
    storage: str  # the torch storage class that pickles this dtype

    @property
    def torch(self) -> Any:
        import torch

        return getattr(torch, self.name)

    def __str__(self) -> str:
        return self.name


DTYPES = (
    DType("float64", "F64", 8, True, "<f8", "DoubleStorage"),
    DType("float32", "F32", 4, True, "<f4", "FloatStorage"),
    DType("float16", "F16", 2, True, "<f2", "HalfStorage"),
    DType("bfloat16", "BF16", 2, True, "<u2", "BFloat16Storage"),
    DType("int64", "I64", 8, False, "<i8", "LongStorage"),
    DType("int32", "I32", 4, False, "<i4", "IntStorage"),
    DType("int16", "I16", 2, False, "<i2", "ShortStorage"),
    DType("int8", "I8", 1, False, "i1", "CharStorage"),
    DType("uint8", "U8", 1, False, "u1", "ByteStorage"),
    DType("bool", "BOOL", 1, False, "?", "BoolStorage"),
)
FLOAT64, FLOAT32, FLOAT16, BFLOAT16, INT64 = DTYPES[:5]
BY_CODE = {d.code: d for d in DTYPES}
BY_STORAGE = {d.storage: d for d in DTYPES}
_BY_TORCH_NAME = {d.name: d for d in DTYPES}
# What `--dtype` accepts.
BY_NAME = {
    "float32": FLOAT32,
    "fp32": FLOAT32,
    "float16": FLOAT16,
    "fp16": FLOAT16,
    "bfloat16": BFLOAT16,
    "bf16": BFLOAT16,
}
HALF = (FLOAT16, BFLOAT16)


def from_torch(dtype: Any) -> DType:
    """Our DType for a torch dtype."""
    return _BY_TORCH_NAME[str(dtype).removeprefix("torch.")]


def dtype_name(dtype: Any) -> str:
    """The plain name of a DType or a torch dtype ('float32')."""
    return dtype.name if isinstance(dtype, DType) else str(dtype).removeprefix("torch.")
