"""Write the model folder: tensors streamed into safetensors, then config, processor and provenance.

Tensors are written one at a time straight from the (memory-mapped) source: no model is built and no
second copy of the weights is held. The folder is assembled in a temporary sibling and renamed into
place only when complete, so a failed or interrupted run leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from beit_tools.core.dtypes import SAFETENSORS_CODES
from beit_tools.core.plan import TargetTensor
from beit_tools.errors import BeitToolsError

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9


def shard(targets: list[TargetTensor], max_bytes: int) -> list[list[TargetTensor]]:
    """Consecutive groups of at most `max_bytes` (a single larger tensor gets a shard of its own)."""
    shards: list[list[TargetTensor]] = [[]]
    size = 0
    for t in targets:
        if shards[-1] and size + t.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


def _header(targets: list[TargetTensor]) -> bytes:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in targets:
        header[t.key] = {
            "dtype": SAFETENSORS_CODES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + t.nbytes],
        }
        offset += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw


def write_safetensors(
    path: Path,
    targets: list[TargetTensor],
    tensors: Iterator[tuple[TargetTensor, torch.Tensor]],
    on_written: Callable[[int], None] = lambda n: None,
) -> None:
    """Stream `tensors` (in the order of `targets`) into one safetensors file."""
    with path.open("wb") as f:
        f.write(_header(targets))
        for expected, (target, tensor) in zip(targets, tensors, strict=True):
            if target.key != expected.key or tuple(tensor.shape) != expected.shape:
                raise BeitToolsError(f"internal: {target.key} arrived out of order or with shape {list(tensor.shape)}")
            data = tensor.reshape(-1).view(torch.uint8).numpy()
            f.write(memoryview(data))
            on_written(target.nbytes)


def write_weights(
    directory: Path,
    targets: list[TargetTensor],
    read: Callable[[list[str]], Iterator[tuple[str, torch.Tensor]]],
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    on_written: Callable[[int], None] = lambda n: None,
) -> list[str]:
    """Write model.safetensors, or numbered shards plus an index when larger than `max_shard_bytes`.

    Returns the names of the files written.
    """
    shards = shard(targets, max_shard_bytes)
    names = (
        [WEIGHTS_NAME]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    for name, group in zip(names, shards, strict=True):
        write_safetensors(directory / name, group, _produce(group, read), on_written)
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(t.nbytes for t in targets)},
            "weight_map": {t.key: name for name, group in zip(names, shards, strict=True) for t in group},
        }
        write_json(directory / INDEX_NAME, index)
        return [*names, INDEX_NAME]
    return names


def _produce(
    group: list[TargetTensor], read: Callable[[list[str]], Iterator[tuple[str, torch.Tensor]]]
) -> Iterator[tuple[TargetTensor, torch.Tensor]]:
    """Read each source tensor once, however many targets it feeds (targets of a source are adjacent)."""
    sources = list(dict.fromkeys(t.source for t in group))
    by_source: dict[str, list[TargetTensor]] = {}
    for t in group:
        by_source.setdefault(t.source, []).append(t)
    for source, tensor in read(sources):
        for t in by_source[source]:
            yield t, t.produce(tensor)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output(out: Path, overwrite: bool, keep: tuple[Path, ...] = ()) -> None:
    """Refuse an output that exists and holds something, unless overwriting was asked for.

    Never replace a folder that holds the current directory or a path in `keep` (the source file):
    `-o . --overwrite` must not delete the checkpoint it is converting.
    """
    absolute = Path(os.path.abspath(out))
    for path in (Path.cwd(), *keep):
        if _inside(Path(os.path.abspath(path)), absolute):
            held = "the current folder" if path == Path.cwd() else str(path)
            raise BeitToolsError(f"output {out} holds {held}; writing there would replace it", "choose another -o")
    if out.exists() and not out.is_dir():
        raise BeitToolsError(f"output {out} exists and is not a directory", "choose another -o path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise BeitToolsError(f"output {out} already exists and is not empty", "pass --overwrite to replace it")


OWNER_FILE = ".owner"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _claim(tmp: Path, out: Path) -> None:
    """Create the working folder; it doubles as the lock that keeps two conversions off one output."""
    try:
        tmp.mkdir()
    except FileExistsError:
        try:
            pid = int((tmp / OWNER_FILE).read_text())
        except (OSError, ValueError):
            pid = None
        if pid is not None and pid != os.getpid() and _alive(pid):
            raise BeitToolsError(
                f"another beit-tools process (pid {pid}) is writing {out} now",
                "wait for it to finish, or choose another -o",
            ) from None
        shutil.rmtree(tmp, ignore_errors=True)  # left by a run that was killed outright
        tmp.mkdir()
    (tmp / OWNER_FILE).write_text(str(os.getpid()))


@contextmanager
def atomic_directory(out: Path, overwrite: bool, keep: tuple[Path, ...] = ()) -> Iterator[Path]:
    """Yield a hidden sibling of `out` to fill; on success it replaces `out`, on any failure it is removed."""
    check_output(out, overwrite, keep)
    out = Path(os.path.abspath(out))
    parent = out.parent
    blocker = next((p for p in (parent, *parent.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise BeitToolsError(f"cannot write {out}: {blocker} is a file, not a folder", "choose another -o location")
    tmp = parent / f".{out.name}.partial"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _claim(tmp, out)
    except OSError as e:
        raise _write_error(out, e) from e
    try:
        yield tmp
        check_output(out, overwrite, keep)  # something may have appeared there meanwhile
        (tmp / OWNER_FILE).unlink()
        old = parent / f".{out.name}.old-{os.getpid()}"
        if out.exists():
            out.rename(old)
        try:
            tmp.rename(out)
        except OSError:
            if old.exists():
                old.rename(out)  # put the previous output back
            raise
        shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _write_error(out, e) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_error(out: Path, e: OSError) -> BeitToolsError:
    reason = e.strerror or str(e)
    return BeitToolsError(f"cannot write {out}: {reason}", "choose a writable -o location with enough free space")
