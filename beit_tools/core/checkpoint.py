"""Open a checkpoint safely: sniff its format, unpickle without running code, unwrap the container.

Torch zip files and safetensors files are read without torch: their structure gives every tensor's
name, shape, dtype and, for row-major tensors, the byte range of its data in the file, so tensors can
be checked, copied or computed one at a time and never all held at once. Legacy (pre-zip) torch files,
`--trust-checkpoint` and zip files with anything unusual in their pickle go through torch.load.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import Any

from beit_tools.core import torchzip
from beit_tools.core.dtypes import BY_CODE, DType, from_torch
from beit_tools.core.formats import HEAD_BYTES, checkpoint_format, safetensors_header
from beit_tools.errors import BeitToolsError

# Containers tried in order when the weights are not the top-level dict itself.
WEIGHT_CONTAINERS = ("model", "module", "state_dict")
# Key prefixes that wrap the real names: DeepSpeed/DataParallel, then the mmseg backbone.
STRIPPED_PREFIXES = ("module.", "backbone.")
CRC_CHECK_BELOW = 64 * 2**20  # zip files smaller than this have every member's CRC checked on opening

# Classes real unilm/mmseg training files pickle besides tensors. None of them runs code when
# unpickled; they are the only globals safe loading accepts without --trust-checkpoint.
SAFE_GLOBAL_NAMES = (
    "argparse.Namespace",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
    "numpy.dtypes.Float64DType",
    "numpy.dtypes.Float32DType",
    "numpy.dtypes.Float16DType",
    "numpy.dtypes.Int64DType",
    "numpy.dtypes.Int32DType",
    "numpy.dtypes.BoolDType",
)

TRUST_HINT = "if you trust where this file came from, rerun with --trust-checkpoint, which lets it run code"


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: DType

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


@dataclass(frozen=True)
class Location:
    """Where a row-major tensor's bytes lie in the file."""

    offset: int
    nbytes: int


@dataclass(frozen=True)
class Strided:
    """A tensor that is a non-row-major view of a storage: the storage's bytes and the view's geometry."""

    storage_offset: int  # file offset of the storage's first byte
    storage_nbytes: int
    offset: int  # in elements
    stride: tuple[int, ...]


@dataclass(frozen=True)
class ContainerEntry:
    """One top-level entry of the file and a short description of what it holds."""

    key: str
    kind: str
    summary: str


@dataclass
class Checkpoint:
    """A source checkpoint with canonical (unprefixed) unilm key names."""

    path: Path
    format: str  # "torch-zip" | "torch-legacy" | "safetensors"
    size_bytes: int
    weights_from: str  # the container the weights came from, or "(top level)"
    stripped_prefixes: tuple[str, ...]
    container: tuple[ContainerEntry, ...]
    source_keys: dict[str, str]  # canonical key -> key as stored in the file
    infos: dict[str, TensorInfo]  # canonical key -> shape and dtype, known without reading data
    loaded_with: str  # how the file was opened: "safetensors", "weights-only" or "full pickle"
    classes: tuple[str, ...]  # classes besides tensors and plain containers the file holds
    meta: dict[str, Any] = field(default_factory=dict)  # mmseg CLASSES / config text, unilm args
    locations: dict[str, Location] = field(default_factory=dict, repr=False)  # row-major tensors in the file
    strided: dict[str, Strided] = field(default_factory=dict, repr=False)  # views read through their storage
    _tensors: Mapping[str, Any] = field(default_factory=dict, repr=False)  # torch tensors, when torch loaded it

    def location(self, key: str) -> Location | None:
        return self.locations.get(key)

    def read_bytes(self, key: str) -> bytes:
        """The tensor's data, row-major, as bytes (read now; nothing is kept)."""
        if key in self.locations:
            loc = self.locations[key]
            return _pread(self.path, loc.offset, loc.nbytes)
        if key in self.strided:
            return self.array(key).tobytes()
        return tensor_bytes(self._tensors[key]).tobytes()

    def sample_bytes(self, key: str, elements: int) -> bytes:
        """The first and last `elements` elements of a tensor (all of it when that is not much less)."""
        location, item = self.locations.get(key), self.infos[key].dtype.itemsize
        if location is None or location.nbytes <= 2 * elements * item:
            return self.read_bytes(key)
        span = elements * item
        tail = location.offset + location.nbytes - span
        return _pread(self.path, location.offset, span) + _pread(self.path, tail, span)

    def array(self, key: str) -> Any:
        """The tensor as a numpy array (bfloat16 as its raw uint16 bits)."""
        import numpy as np

        info = self.infos[key]
        if key in self.strided:
            view = self.strided[key]
            raw = np.frombuffer(_pread(self.path, view.storage_offset, view.storage_nbytes), dtype=info.dtype.numpy)
            item = info.dtype.itemsize
            strides = tuple(s * item for s in view.stride)
            picked = np.lib.stride_tricks.as_strided(raw[view.offset :], shape=info.shape, strides=strides)
            return np.ascontiguousarray(picked)
        if key in self.locations:
            return np.frombuffer(self.read_bytes(key), dtype=info.dtype.numpy).reshape(info.shape)
        return tensor_bytes(self._tensors[key]).view(info.dtype.numpy).reshape(info.shape)

    def tensor(self, key: str) -> Any:
        """The tensor as a torch tensor of its own memory (read now; torch is imported here)."""
        return next(self.iter_tensors([key]))[1]

    def iter_tensors(self, keys: list[str]) -> Iterator[tuple[str, Any]]:
        """(canonical key, torch tensor) for `keys`, one at a time."""
        import torch

        for key in keys:
            if key in self._tensors:
                yield key, self._tensors[key]
                continue
            info = self.infos[key]
            data = bytearray(self.read_bytes(key))
            flat = torch.frombuffer(data, dtype=info.dtype.torch) if data else torch.empty(0, dtype=info.dtype.torch)
            yield key, flat.reshape(info.shape)


def tensor_bytes(tensor: Any) -> Any:
    """A torch tensor's data, row-major, as a flat uint8 numpy array (no copy when already contiguous)."""
    import torch

    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy()


def _pread(path: Path, offset: int, nbytes: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.pread(fd, nbytes, offset)
    finally:
        os.close(fd)
    if len(data) != nbytes:
        raise BeitToolsError(f"{path} ends before a tensor's data ({len(data)} of {nbytes} bytes at {offset})")
    return data


def open_checkpoint(path: str | Path, *, trust: bool = False, use_ema: bool = False) -> Checkpoint:
    """Open `path` for conversion. Raises BeitToolsError with a hint on anything unusable."""
    path = Path(path)
    if not path.exists():
        raise BeitToolsError(f"no such file: {path}", "check the path")
    if path.is_dir():
        raise BeitToolsError(f"{path} is a directory, not a checkpoint file", "pass the .pth/.safetensors file")
    size = path.stat().st_size
    if size == 0:
        raise BeitToolsError(f"{path} is empty (0 bytes)", "the download or copy probably failed; fetch it again")
    fmt = sniff_format(path)
    if fmt == "safetensors":
        return _open_safetensors(path, size)
    if fmt == "torch-zip":
        _check_zip(path, size)
        if not trust:
            try:
                contents = torchzip.read(path)
            except torchzip.Unsupported:
                pass  # torch's own weights-only loader decides
            else:
                return _unwrap(path, fmt, size, contents.obj, use_ema=use_ema, loaded_with="weights-only", zip=contents)
    obj = _torch_load(path, fmt, trust=trust)
    return _unwrap(path, fmt, size, obj, use_ema=use_ema, loaded_with="full pickle" if trust else "weights-only")


def sniff_format(path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(HEAD_BYTES)
    fmt = checkpoint_format(head, path.stat().st_size)
    if fmt is not None:
        return fmt
    raise BeitToolsError(
        f"{path} is not a PyTorch or safetensors checkpoint (unrecognised leading bytes {head[:8].hex()})",
        "expected a .pth/.pt/.bin file written by torch.save, or a .safetensors file",
    )


def safe_globals() -> list[Any]:
    """The allow-listed classes, as (object, pickled name) pairs for torch.serialization.safe_globals."""
    allowed: list[Any] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in SAFE_GLOBAL_NAMES:
            module_name, _, attr = name.rpartition(".")
            try:
                obj = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError):
                continue
            allowed.append((obj, name))
    return allowed


def _unsafe_globals(path: Path) -> list[str]:
    """Globals a zip checkpoint needs beyond torch's defaults and our allow-list, read without unpickling."""
    import torch

    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # damaged files are reported by the load itself
        return []
    return sorted(set(needed) - set(SAFE_GLOBAL_NAMES))


def _check_zip(path: Path, size: int) -> None:
    """A zip that cannot be opened, or (for small files) has a member failing its CRC, is damaged."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip() if size < CRC_CHECK_BELOW else None
    except zipfile.BadZipFile as e:
        raise BeitToolsError(
            f"{path} is a damaged torch zip archive ({e})",
            "the file is probably truncated; fetch it again",
        ) from e
    if bad is not None:
        raise BeitToolsError(f"{path} is damaged: member {bad} fails its CRC check", "fetch the file again")


def _torch_load(path: Path, fmt: str, *, trust: bool) -> Any:
    import torch

    if fmt == "torch-zip" and not trust:
        unsafe = _unsafe_globals(path)
        if unsafe:
            raise BeitToolsError(
                f"{path} needs code to load: it pickles {', '.join(unsafe)}, which safe loading refuses",
                TRUST_HINT,
            )
    mmap = fmt == "torch-zip"
    try:
        if trust:
            return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        found = re.findall(r"GLOBAL ([\w.]+)", str(e))
        if found and not trust:
            raise BeitToolsError(
                f"{path} needs code to load: it pickles {', '.join(sorted(set(found)))}, which safe loading refuses",
                TRUST_HINT,
            ) from e
        raise BeitToolsError(
            f"{path} cannot be unpickled: {_first_line(e)}", "the file is damaged; fetch it again"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise BeitToolsError(
            f"{path} cannot be read as a {fmt} checkpoint: {_first_line(e)}",
            "the file is probably truncated or damaged; fetch it again",
        ) from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _open_safetensors(path: Path, size: int) -> Checkpoint:
    """The header alone: names, dtypes, shapes and byte ranges (tensors start after the header)."""
    damaged = BeitToolsError(f"{path} is a damaged safetensors file", "fetch it again")
    try:
        length, header = safetensors_header(path)
    except ValueError as e:
        raise BeitToolsError(f"{path} is a damaged safetensors file: bad header ({e})", "fetch it again") from e
    if not isinstance(header, dict):
        raise damaged
    infos: dict[str, TensorInfo] = {}
    locations: dict[str, Location] = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype = BY_CODE[entry["dtype"]]
            begin, end = entry["data_offsets"]
            info = TensorInfo(tuple(int(s) for s in entry["shape"]), dtype)
        except KeyError as e:
            raise BeitToolsError(f"{path} holds a tensor of an unsupported dtype or layout: {key}") from e
        if end - begin != info.nbytes or 8 + length + end > size:
            raise BeitToolsError(f"{path} is a damaged safetensors file: {key} lies outside the file", "fetch it again")
        infos[key], locations[key] = info, Location(8 + length + begin, info.nbytes)
    canonical, stripped = _strip_prefixes(list(infos))
    return Checkpoint(
        path=path,
        format="safetensors",
        size_bytes=size,
        weights_from="(top level)",
        stripped_prefixes=stripped,
        container=(ContainerEntry("(tensors)", "state dict", f"{len(infos)} tensors"),),
        source_keys=canonical,
        infos={c: infos[orig] for c, orig in canonical.items()},
        loaded_with="safetensors",
        classes=(),
        locations={c: locations[orig] for c, orig in canonical.items()},
    )


def _is_tensor(value: Any) -> bool:
    if isinstance(value, torchzip.TensorRef):
        return True
    torch = _torch_if_loaded()
    return torch is not None and isinstance(value, torch.Tensor)


def _torch_if_loaded() -> Any:
    """torch, when something already imported it (then values may be torch tensors); never imports it."""
    import sys

    return sys.modules.get("torch")


def _describe(key: str, value: Any) -> ContainerEntry:
    if isinstance(value, Mapping):
        n_tensors = sum(_is_tensor(v) for v in value.values())
        if n_tensors:
            return ContainerEntry(key, "state dict", f"{n_tensors} tensors")
        if key == "meta":
            parts = []
            if "CLASSES" in value:
                parts.append(f"CLASSES ({len(value['CLASSES'])})")
            if "PALETTE" in value:
                parts.append("PALETTE")
            if "config" in value:
                parts.append("config")
            return ContainerEntry(key, "mmseg meta", ", ".join(parts) or f"{len(value)} entries")
        return ContainerEntry(key, "dict", f"{len(value)} entries (ignored)")
    if isinstance(value, argparse.Namespace):
        args = vars(value)
        shown = [f"{k}={args[k]}" for k in ("model", "nb_classes", "input_size") if k in args]
        return ContainerEntry(key, "training args", ", ".join(shown) or f"{len(args)} fields")
    if _is_tensor(value):
        return ContainerEntry(key, "tensor", f"shape {list(value.shape)}")
    if isinstance(value, (int, float, str, bool)):
        return ContainerEntry(key, type(value).__name__, f"{value!r}"[:60])
    return ContainerEntry(key, type(value).__name__, "(ignored)")


PLAIN_TYPES = (dict, list, tuple, set, str, bytes, int, float, bool, type(None))


def classes_in(obj: Any, depth: int = 4) -> set[str]:
    """Qualified names of the non-plain objects in a loaded container (what unpickling had to construct)."""
    found: set[str] = set()
    if _is_tensor(obj) or (type(obj).__name__ in ("dtype", "Size") and type(obj).__module__ == "torch"):
        return found
    if type(obj) not in PLAIN_TYPES:
        found.add(f"{type(obj).__module__}.{type(obj).__qualname__}")
    if depth == 0:
        return found
    if isinstance(obj, Mapping):
        children = list(obj.values())
    elif isinstance(obj, (list, tuple, set)):
        children = list(obj)
    elif isinstance(obj, argparse.Namespace):
        children = list(vars(obj).values())
    else:
        children = []
    for child in children[:1000]:
        if not _is_tensor(child):
            found |= classes_in(child, depth - 1)
    return found


def _unwrap(
    path: Path,
    fmt: str,
    size: int,
    obj: Any,
    *,
    use_ema: bool,
    loaded_with: str,
    zip: torchzip.ZipContents | None = None,
) -> Checkpoint:
    if not isinstance(obj, Mapping):
        raise BeitToolsError(
            f"{path} holds a {type(obj).__name__}, not a state dict",
            "save the weights with torch.save(model.state_dict(), path)",
        )
    container = tuple(_describe(str(k), v) for k, v in obj.items())
    order = ("model_ema",) if use_ema else WEIGHT_CONTAINERS
    weights_from = "(top level)"
    weights: Any = obj
    for name in order:
        if isinstance(obj.get(name), Mapping):
            weights_from, weights = name, obj[name]
            break
    else:
        if use_ema:
            raise BeitToolsError(f"{path} has no 'model_ema' weights", "drop --use-ema to convert the 'model' weights")
    tensors = {k: v for k, v in weights.items() if _is_tensor(v)}
    if not tensors:
        raise BeitToolsError(
            f"{path} holds no tensors (top-level keys: {', '.join(map(str, list(obj)[:8]))})",
            "expected a state dict, or a dict with 'model', 'module' or 'state_dict'",
        )
    canonical, stripped = _strip_prefixes(list(tensors))
    meta: dict[str, Any] = {}
    mmseg_meta = obj.get("meta")
    if isinstance(mmseg_meta, Mapping):
        if isinstance(mmseg_meta.get("CLASSES"), (list, tuple)):
            meta["classes"] = [str(c) for c in mmseg_meta["CLASSES"]]
        if isinstance(mmseg_meta.get("config"), str):
            meta["config_text"] = mmseg_meta["config"]
    if isinstance(obj.get("args"), argparse.Namespace):
        meta["args"] = {k: v for k, v in vars(obj["args"]).items() if isinstance(v, (int, float, str, bool))}
    by_canonical = {c: tensors[orig] for c, orig in canonical.items()}
    checkpoint = Checkpoint(
        path=path,
        format=fmt,
        size_bytes=size,
        weights_from=weights_from,
        stripped_prefixes=stripped,
        container=container,
        source_keys=canonical,
        infos={c: _info(t) for c, t in by_canonical.items()},
        loaded_with=loaded_with,
        classes=tuple(sorted(classes_in(obj) - {"collections.OrderedDict"})),
        meta=meta,
    )
    if zip is None:
        checkpoint._tensors = by_canonical
    else:
        _locate(checkpoint, by_canonical, zip)
    return checkpoint


def _info(tensor: Any) -> TensorInfo:
    if isinstance(tensor, torchzip.TensorRef):
        return TensorInfo(tensor.shape, tensor.dtype)
    return TensorInfo(tuple(tensor.shape), from_torch(tensor.dtype))


def _locate(checkpoint: Checkpoint, refs: dict[str, torchzip.TensorRef], zip: torchzip.ZipContents) -> None:
    """Byte ranges of row-major tensors; storage spans of the other views."""
    for key, ref in refs.items():
        if ref.storage.key not in zip.data_offsets:
            raise BeitToolsError(
                f"{checkpoint.path} is damaged: the data of {checkpoint.source_keys[key]} is missing",
                "fetch the file again",
            )
        start, length = zip.data_offsets[ref.storage.key]
        item = ref.dtype.itemsize
        if start + length > checkpoint.size_bytes:
            raise BeitToolsError(f"{checkpoint.path} is truncated inside a tensor's data", "fetch it again")
        if ref.contiguous and (ref.offset * item + ref.nbytes) <= length:
            checkpoint.locations[key] = Location(start + ref.offset * item, ref.nbytes)
        else:
            checkpoint.strided[key] = Strided(start, length, ref.offset, ref.stride)


def _strip_prefixes(keys: list[str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """Map canonical names to stored names, removing wrapper prefixes.

    `module.` is stripped when every key has it; `backbone.` is stripped from the keys that have it
    (mmseg keeps `decode_head.` and `auxiliary_head.` beside `backbone.`).
    """
    mapping = {k: k for k in keys}
    stripped: list[str] = []
    for prefix in STRIPPED_PREFIXES:
        has = [c for c in mapping if c.startswith(prefix)]
        if not has:
            continue
        if prefix == "module." and len(has) != len(mapping):
            continue
        stripped.append(prefix)
        mapping = {(c[len(prefix) :] if c.startswith(prefix) else c): orig for c, orig in mapping.items()}
    if len(mapping) != len(keys):
        raise BeitToolsError("keys collide after removing the 'module.'/'backbone.' prefixes")
    return mapping, tuple(stripped)
