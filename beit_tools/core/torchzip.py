"""Read a torch zip checkpoint without torch: its object tree, and where each tensor's bytes lie in the file.

torch.save writes a zip whose `data.pkl` describes the objects and whose `data/<key>` members hold the
storages, stored uncompressed. This unpickler resolves only the few globals such files use (the
tensor-rebuild functions, storage types, OrderedDict and the plain classes unilm and mmseg pickle) and
turns tensors into `TensorRef`s: storage key, dtype, offset, shape and stride. Any other global makes it
give up (`Unsupported`), and the caller falls back to torch's own weights-only loader, which either loads
the file safely or refuses it, naming what it wanted. Nothing here runs code from the file.
"""

from __future__ import annotations

import argparse
import codecs
import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from math import prod
from typing import Any

from beit_tools.core.dtypes import BY_STORAGE, DType
from beit_tools.core.formats import ZIP_MAGIC

LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # a zip local file header, before its name and extra field


class Unsupported(Exception):
    """The pickle needs something this reader does not resolve; torch's loader decides instead."""


@dataclass(frozen=True)
class StorageRef:
    key: str
    dtype: DType
    numel: int


@dataclass(frozen=True)
class TensorRef:
    """A tensor as the pickle describes it: a view of a storage."""

    storage: StorageRef
    offset: int  # in elements
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def dtype(self) -> DType:
        return self.storage.dtype

    @property
    def contiguous(self) -> bool:
        expected, step = [], 1
        for size in reversed(self.shape):
            expected.append(step)
            step *= size
        return all(s == e for s, e, n in zip(self.stride, reversed(expected), self.shape, strict=True) if n > 1)

    @property
    def nbytes(self) -> int:
        return prod(self.shape) * self.dtype.itemsize


def _rebuild_tensor(storage: StorageRef, offset: int, shape: Any, stride: Any, *rest: Any) -> TensorRef:
    return TensorRef(storage, int(offset), tuple(int(s) for s in shape), tuple(int(s) for s in stride))


def _rebuild_parameter(data: TensorRef, *rest: Any) -> TensorRef:
    return data


def _numpy(name: str) -> Callable[..., Any]:
    """A numpy global, imported only when a file uses it (mmseg's meta holds numpy scalars)."""

    def resolve(*args: Any) -> Any:
        import importlib

        module, _, attr = name.rpartition(".")
        return getattr(importlib.import_module(module), attr)(*args)

    return resolve


# Every global this reader resolves: name -> what it becomes. Storage classes resolve to their dtype.
GLOBALS: dict[str, Any] = {
    "collections.OrderedDict": OrderedDict,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch.Size": tuple,
    "argparse.Namespace": argparse.Namespace,
    "_codecs.encode": codecs.encode,
    "numpy.core.multiarray.scalar": _numpy("numpy.core.multiarray.scalar"),
    "numpy._core.multiarray.scalar": _numpy("numpy._core.multiarray.scalar"),
    "numpy.dtype": _numpy("numpy.dtype"),
    **{f"torch.{name}": dtype for name, dtype in BY_STORAGE.items()},
}


class _Reader(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = GLOBALS.get(f"{module}.{name}")
        if found is None:
            raise Unsupported(f"{module}.{name}")
        return found

    def persistent_load(self, pid: Any) -> StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], DType)):
            raise Unsupported(f"persistent id {pid!r:.60}")
        return StorageRef(str(pid[2]), pid[1], int(pid[4]))


@dataclass
class ZipContents:
    obj: Any  # the unpickled object, with TensorRefs for tensors
    data_offsets: dict[str, tuple[int, int]]  # storage key -> (file offset of its bytes, their length)


def read(path: Any) -> ZipContents:
    """Unpickle `data.pkl` of the torch zip at `path` and locate its storages. Raises Unsupported."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise Unsupported("no single data.pkl")
        prefix = pickles[0][: -len("data.pkl")]
        if prefix + "byteorder" in names and zf.read(prefix + "byteorder") != b"little":
            raise Unsupported("big-endian storages")
        try:
            obj = _Reader(io.BytesIO(zf.read(pickles[0]))).load()
        except Unsupported:
            raise
        except Exception as e:  # anything odd in the pickle: torch's loader reports it properly
            raise Unsupported(f"{type(e).__name__}: {e}") from e
        offsets = {}
        with open(path, "rb") as f:
            for info in zf.infolist():
                if not info.filename.startswith(prefix + "data/") or info.compress_type != zipfile.ZIP_STORED:
                    continue
                f.seek(info.header_offset)
                header = LOCAL_HEADER.unpack(f.read(LOCAL_HEADER.size))
                if header[0] != ZIP_MAGIC:
                    raise Unsupported(f"bad local header for {info.filename}")
                start = info.header_offset + LOCAL_HEADER.size + header[9] + header[10]
                offsets[info.filename[len(prefix) + 5 :]] = (start, info.file_size)
    return ZipContents(obj, offsets)
