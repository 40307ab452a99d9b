"""Open a checkpoint safely: sniff its format, unpickle without running code, unwrap the container.

Tensors stay lazy: torch zip files are memory-mapped and safetensors files are read per tensor, so
detection and planning look only at names, shapes and dtypes.
"""

from __future__ import annotations

import argparse
import importlib
import pickle
import re
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from beit_tools.core.dtypes import FROM_SAFETENSORS
from beit_tools.core.formats import HEAD_BYTES, checkpoint_format
from beit_tools.errors import BeitToolsError

# Containers tried in order when the weights are not the top-level dict itself.
WEIGHT_CONTAINERS = ("model", "module", "state_dict")
# Key prefixes that wrap the real names: DeepSpeed/DataParallel, then the mmseg backbone.
STRIPPED_PREFIXES = ("module.", "backbone.")

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
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize


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
    _tensors: Mapping[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _safetensors_path: Path | None = field(default=None, repr=False)

    def tensor(self, key: str) -> torch.Tensor:
        """The tensor's data; reads it from disk only now for lazy formats."""
        return next(self.iter_tensors([key]))[1]

    def iter_tensors(self, keys: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """(canonical key, tensor) for `keys`, reading a safetensors source once for all of them."""
        if self._safetensors_path is not None:
            from safetensors import safe_open

            with safe_open(str(self._safetensors_path), framework="pt") as f:
                for k in keys:
                    yield k, f.get_tensor(self.source_keys[k])
        else:
            for k in keys:
                yield k, self._tensors[k]


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
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # damaged files are reported by the load itself
        return []
    return sorted(set(needed) - set(SAFE_GLOBAL_NAMES))


def _torch_load(path: Path, fmt: str, *, trust: bool) -> Any:
    if fmt == "torch-zip":
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip() if path.stat().st_size < 64 * 2**20 else None
        except zipfile.BadZipFile as e:
            raise BeitToolsError(
                f"{path} is a damaged torch zip archive ({e})",
                "the file is probably truncated; fetch it again",
            ) from e
        if bad is not None:
            raise BeitToolsError(f"{path} is damaged: member {bad} fails its CRC check", "fetch the file again")
        if not trust:
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
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            infos = {}
            for k in keys:
                sl = f.get_slice(k)
                infos[k] = TensorInfo(tuple(sl.get_shape()), _st_dtype(sl.get_dtype()))
    except (SafetensorError, OSError, ValueError) as e:
        raise BeitToolsError(f"{path} is a damaged safetensors file: {_first_line(e)}", "fetch it again") from e
    canonical, stripped = _strip_prefixes(keys)
    return Checkpoint(
        path=path,
        format="safetensors",
        size_bytes=size,
        weights_from="(top level)",
        stripped_prefixes=stripped,
        container=(ContainerEntry("(tensors)", "state dict", f"{len(keys)} tensors"),),
        source_keys=canonical,
        infos={c: infos[orig] for c, orig in canonical.items()},
        loaded_with="safetensors",
        classes=(),
        _safetensors_path=path,
    )


def _st_dtype(name: str) -> torch.dtype:
    try:
        return FROM_SAFETENSORS[name.upper()]
    except KeyError:
        raise BeitToolsError(f"unsupported safetensors dtype {name}") from None


def _describe(key: str, value: Any) -> ContainerEntry:
    if isinstance(value, Mapping):
        n_tensors = sum(isinstance(v, torch.Tensor) for v in value.values())
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
    if isinstance(value, torch.Tensor):
        return ContainerEntry(key, "tensor", f"shape {list(value.shape)}")
    if isinstance(value, (int, float, str, bool)):
        return ContainerEntry(key, type(value).__name__, f"{value!r}"[:60])
    return ContainerEntry(key, type(value).__name__, "(ignored)")


PLAIN_TYPES = (dict, list, tuple, set, str, bytes, int, float, bool, type(None), torch.Tensor, torch.Size)


def classes_in(obj: Any, depth: int = 4) -> set[str]:
    """Qualified names of the non-plain objects in a loaded container (what unpickling had to construct)."""
    found: set[str] = set()
    if type(obj) not in PLAIN_TYPES and not isinstance(obj, (torch.Tensor, torch.dtype)):
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
        if not isinstance(child, torch.Tensor):
            found |= classes_in(child, depth - 1)
    return found


def _unwrap(path: Path, fmt: str, size: int, obj: Any, *, use_ema: bool, loaded_with: str) -> Checkpoint:
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
    tensors = {k: v for k, v in weights.items() if isinstance(v, torch.Tensor)}
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
    return Checkpoint(
        path=path,
        format=fmt,
        size_bytes=size,
        weights_from=weights_from,
        stripped_prefixes=stripped,
        container=container,
        source_keys=canonical,
        infos={c: TensorInfo(tuple(tensors[o].shape), tensors[o].dtype) for c, o in canonical.items()},
        loaded_with=loaded_with,
        classes=tuple(sorted(classes_in(obj) - {"collections.OrderedDict"})),
        meta=meta,
        _tensors={c: tensors[orig] for c, orig in canonical.items()},
    )


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
