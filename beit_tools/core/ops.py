"""What a rule does to one source tensor, as an object: the target shapes, how the targets are made,
the exact inverse, and which bytes of the (row-major) source each target is.

The plan, the writer, `inspect` and `verify` all go through these, so "split" means one thing
everywhere; verify's round trip applies `invert` to what was written, an independent check of the
order the targets were written in.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import TYPE_CHECKING, ClassVar

from beit_tools.core.dtypes import DType

if TYPE_CHECKING:
    import torch

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Op:
    """The base: one source tensor in, `len(targets)` tensors out."""

    name: ClassVar[str] = ""
    writes: ClassVar[bool] = True  # False for ops whose source has no place in the output

    def target_shapes(self, shape: Shape, count: int) -> list[Shape]:
        raise NotImplementedError

    def produce(self, tensor: torch.Tensor, count: int) -> list[torch.Tensor]:
        raise NotImplementedError

    def invert(self, targets: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def byte_ranges(self, shape: Shape, itemsize: int, count: int) -> list[tuple[int, int]]:
        """(offset, length) of each target inside the source's bytes, for a source stored row-major."""
        raise NotImplementedError


@dataclass(frozen=True)
class Rename(Op):
    """The tensor as it is, under another name."""

    name: ClassVar[str] = "rename"

    def target_shapes(self, shape: Shape, count: int) -> list[Shape]:
        return [shape]

    def produce(self, tensor: torch.Tensor, count: int) -> list[torch.Tensor]:
        return [tensor]

    def invert(self, targets: list[torch.Tensor]) -> torch.Tensor:
        (only,) = targets
        return only

    def byte_ranges(self, shape: Shape, itemsize: int, count: int) -> list[tuple[int, int]]:
        return [(0, prod(shape) * itemsize)]


@dataclass(frozen=True)
class SplitRows(Op):
    """Consecutive equal row blocks, one per target: the fused qkv weight's [0:D], [D:2D], [2D:3D]."""

    name: ClassVar[str] = "split"

    def target_shapes(self, shape: Shape, count: int) -> list[Shape]:
        if shape[0] % count:
            raise ValueError(f"{shape[0]} rows do not split into {count} equal blocks")
        return [(shape[0] // count, *shape[1:])] * count

    def produce(self, tensor: torch.Tensor, count: int) -> list[torch.Tensor]:
        return list(tensor.chunk(count, dim=0))

    def invert(self, targets: list[torch.Tensor]) -> torch.Tensor:
        import torch

        return torch.cat(targets, dim=0)

    def byte_ranges(self, shape: Shape, itemsize: int, count: int) -> list[tuple[int, int]]:
        block = prod(shape) * itemsize // count
        return [(i * block, block) for i in range(count)]


@dataclass(frozen=True)
class Drop(Op):
    """No place in the output (a derivable buffer, or a part transformers does not have)."""

    name: ClassVar[str] = "drop"
    writes: ClassVar[bool] = False

    def target_shapes(self, shape: Shape, count: int) -> list[Shape]:
        return []

    def produce(self, tensor: torch.Tensor, count: int) -> list[torch.Tensor]:
        return []


@dataclass(frozen=True)
class Cast:
    """The dtype change every written floating tensor goes through; integer buffers keep theirs."""

    dtype: DType

    def target_dtype(self, source: DType) -> DType:
        return self.dtype if source.is_floating_point else source

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.dtype.torch) if tensor.is_floating_point() else tensor

    def lossless(self, source: DType) -> bool:
        target = self.target_dtype(source)
        return target == source or (source.is_floating_point and target.itemsize > source.itemsize)


RENAME, SPLIT, DROP = Rename(), SplitRows(), Drop()
