"""One sequential read of the source file, beside the conversion: its sha256 and any NaN/Inf in its tensors.

The writer copies tensor bytes inside the kernel and never sees them, so the only full read of the
source is this one, on its own thread (hashlib and numpy release the GIL while they work). Each chunk
feeds the digest and, where it overlaps a floating tensor, the finiteness check; an element split by a
chunk boundary is read on its own.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from beit_tools.core.dtypes import BFLOAT16, DType

CHUNK = 8 * 2**20
BF16_EXPONENT = 0x7F80  # all ones: Inf or NaN


def all_finite(data: Any, dtype: DType) -> bool:
    """Whether raw little-endian bytes of `dtype` hold no NaN or Inf (integers always pass)."""
    import numpy as np

    if not dtype.is_floating_point:
        return True
    values = np.frombuffer(data, dtype=dtype.numpy)
    if dtype == BFLOAT16:
        return not bool(((values & BF16_EXPONENT) == BF16_EXPONENT).any())
    return bool(np.isfinite(values).all())


@dataclass(frozen=True)
class Region:
    key: str
    offset: int
    nbytes: int
    dtype: DType

    @property
    def end(self) -> int:
        return self.offset + self.nbytes


def regions_of(checkpoint: Any) -> list[Region]:
    """The located tensors of a Checkpoint, by canonical name."""
    return [Region(k, loc.offset, loc.nbytes, checkpoint.infos[k].dtype) for k, loc in checkpoint.locations.items()]


def nonfinite_unlocated(checkpoint: Any) -> list[str]:
    """The tensors a scan of the file cannot see (strided views, torch-loaded files) that hold NaN or Inf."""
    unlocated = [k for k in checkpoint.infos if k not in checkpoint.locations]
    return [k for k in unlocated if not all_finite(checkpoint.array(k), checkpoint.infos[k].dtype)]


@dataclass
class SourceScan:
    """Start with `start()`; `result()` waits and returns (sha256, keys whose data is not finite)."""

    path: Path
    regions: list[Region]
    _digest: str = ""
    _bad: set[str] = field(default_factory=set)
    _error: BaseException | None = None
    _thread: threading.Thread | None = None

    def start(self) -> SourceScan:
        self._thread = threading.Thread(target=self._run, name="source-scan", daemon=True)
        self._thread.start()
        return self

    def result(self) -> tuple[str, list[str]]:
        assert self._thread is not None
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._digest, [r.key for r in self.regions if r.key in self._bad]

    def _run(self) -> None:
        try:
            self._scan()
        except BaseException as e:  # handed to result()
            self._error = e

    def _scan(self) -> None:
        digest = hashlib.sha256()
        regions = sorted((r for r in self.regions if r.dtype.is_floating_point), key=lambda r: r.offset)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            position, first = 0, 0
            while block := os.read(fd, CHUNK):
                digest.update(block)
                end = position + len(block)
                while first < len(regions) and regions[first].end <= position:
                    first += 1
                for region in regions[first:]:
                    if region.offset >= end:
                        break
                    if region.key not in self._bad:
                        self._check(fd, region, block, position)
                position = end
        finally:
            os.close(fd)
        self._digest = digest.hexdigest()

    def _check(self, fd: int, region: Region, block: bytes, position: int) -> None:
        """The whole elements of `region` inside this block, and the one element crossing its end."""
        item = region.dtype.itemsize
        lo, hi = max(region.offset, position), min(region.end, position + len(block))
        start = region.offset + -(-(lo - region.offset) // item) * item
        stop = region.offset + (hi - region.offset) // item * item
        view = memoryview(block)
        if start < stop and not all_finite(view[start - position : stop - position], region.dtype):
            self._bad.add(region.key)
        crossing = stop < region.end and stop < position + len(block) < stop + item  # one element, split
        if crossing and not all_finite(os.pread(fd, item, stop), region.dtype):
            self._bad.add(region.key)
