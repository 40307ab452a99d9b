"""Write the model folder: weights in safetensors, then config, processor and provenance.

Each tensor whose bytes do not change (a rename, a row block of the fused qkv weight, in the source's
dtype) is copied from the source file to the output inside the kernel (`copy_file_range`, with a
buffered fallback) and never enters Python; the rest (casts, strided views, added zeros) is computed
one tensor at a time. Tensors are laid out as safetensors' own `save_file` lays them out (by element
size, then name), so the file is byte-identical to that straightforward write. The folder is assembled
in a temporary sibling and renamed into place only when complete: a failed or interrupted run leaves
nothing behind.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beit_tools.core.plan import TargetTensor
from beit_tools.errors import BeitToolsError

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9
BUFFER = 8 * 2**20  # the buffered fallback's chunk
# copy_file_range cannot serve this pair of files (old kernel, other filesystems): copy through a buffer.
NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF, errno.ETXTBSY}


@dataclass(frozen=True)
class Payload:
    """How one output tensor's bytes are obtained: a byte range of the source file, or computed bytes."""

    copy: tuple[int, int] | None = None  # (offset, length) in the source file
    compute: Callable[[], Any] | None = None  # returns a bytes-like object of the tensor's size


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


def file_order(targets: list[TargetTensor]) -> list[TargetTensor]:
    """safetensors' layout: larger elements first, then by name."""
    return sorted(targets, key=lambda t: (-t.dtype.itemsize, t.key))


def _header(targets: list[TargetTensor]) -> bytes:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in targets:
        header[t.key] = {"dtype": t.dtype.code, "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw


def copy_range(source: int, target: int, offset: int, length: int, at: int) -> None:
    """`length` bytes at `offset` of `source` to position `at` of `target`, in the kernel when it can."""
    while length:
        try:
            done = os.copy_file_range(source, target, length, offset, at)
        except OSError as e:
            if e.errno not in NO_KERNEL_COPY:
                raise
            _copy_buffered(source, target, offset, length, at)
            return
        if done == 0:
            raise BeitToolsError("the source file ended before a tensor's data", "fetch the file again")
        offset, at, length = offset + done, at + done, length - done


def _copy_buffered(source: int, target: int, offset: int, length: int, at: int) -> None:
    while length:
        block = os.pread(source, min(BUFFER, length), offset)
        if not block:
            raise BeitToolsError("the source file ended before a tensor's data", "fetch the file again")
        os.pwrite(target, block, at)
        offset, at, length = offset + len(block), at + len(block), length - len(block)


def write_safetensors(
    path: Path,
    targets: list[TargetTensor],
    payload: Callable[[TargetTensor], Payload],
    source: int,
    on_written: Callable[[int], None] = lambda n: None,
) -> None:
    """One safetensors file of `targets`, each filled as `payload` says (`source`: the source file's fd)."""
    ordered = file_order(targets)
    header = _header(ordered)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, header)
        at = len(header)
        for target in ordered:
            how = payload(target)
            if how.copy is not None:
                offset, length = how.copy
                copy_range(source, fd, offset, length, at)
            else:
                assert how.compute is not None
                data = memoryview(how.compute()).cast("B")
                if len(data) != target.nbytes:
                    raise BeitToolsError(f"internal: {target.key} came out as {len(data)} bytes, not {target.nbytes}")
                os.pwrite(fd, data, at)
            at += target.nbytes
            on_written(target.nbytes)
    finally:
        os.close(fd)


def write_weights(
    directory: Path,
    targets: list[TargetTensor],
    payload: Callable[[TargetTensor], Payload],
    source: Path,
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
    fd = os.open(source, os.O_RDONLY)
    try:
        for name, group in zip(names, shards, strict=True):
            write_safetensors(directory / name, group, payload, fd, on_written)
    finally:
        os.close(fd)
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(t.nbytes for t in targets)},
            "weight_map": {t.key: name for name, group in zip(names, shards, strict=True) for t in group},
        }
        write_json(directory / INDEX_NAME, index)
        return [*names, INDEX_NAME]
    return names


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
