"""What kind of file this is, from its bytes alone, and whether it is whole.

Used when opening a checkpoint and before a download may enter the cache: an HTML error page, an
empty body or a file cut short must never be kept as a "checkpoint". Nothing here imports torch.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

ZIP_MAGIC = b"PK\x03\x04"
# A legacy (pre-1.6) torch file starts with a pickled magic number: protocol 2, then a long int.
LEGACY_MAGIC = b"\x80\x02\x8a\x0a"
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF8", b"BM")
HEAD_BYTES = 16


def checkpoint_format(head: bytes, size: int) -> str | None:
    """'torch-zip', 'torch-legacy' or 'safetensors' from the leading bytes; None for anything else."""
    if head.startswith(ZIP_MAGIC):
        return "torch-zip"
    if head.startswith(LEGACY_MAGIC):
        return "torch-legacy"
    if len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < size:
        return "safetensors"
    return None


def looks_like_html(head: bytes) -> bool:
    return head.lstrip()[:1] == b"<"


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(HEAD_BYTES)


def safetensors_header(path: Path) -> tuple[int, Any]:
    """(header length, parsed header) of a safetensors file; ValueError when the header is not JSON."""
    with path.open("rb") as f:
        length = int.from_bytes(f.read(8), "little")
        return length, json.loads(f.read(length))


def _body_problem(path: Path, what: str) -> tuple[bytes, str | None]:
    """The leading bytes, and what is wrong with any download body: empty, or an HTML page instead of `what`."""
    if path.stat().st_size == 0:
        return b"", "the body is empty"
    head = _head(path)
    return head, f"the server sent an HTML page, not {what}" if looks_like_html(head) else None


def checkpoint_problem(path: Path) -> str | None:
    """Why `path` is not a whole checkpoint file, or None when it is one."""
    head, problem = _body_problem(path, "a checkpoint")
    if problem:
        return problem
    size = path.stat().st_size
    fmt = checkpoint_format(head, size)
    if fmt is None:
        return f"not a PyTorch or safetensors checkpoint (leading bytes {head[:8].hex()})"
    if fmt == "torch-zip":
        try:
            with zipfile.ZipFile(path):  # reads the central directory at the end of the file
                pass
        except zipfile.BadZipFile:
            return "the torch zip archive is cut short (its directory is missing)"
    if fmt == "safetensors":
        return _safetensors_problem(path, size)
    return None


def _safetensors_problem(path: Path, size: int) -> str | None:
    try:
        length, header = safetensors_header(path)
    except ValueError:
        return "the safetensors header is damaged"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    expected = 8 + length + max(ends, default=0)
    if size < expected:
        return f"the safetensors file is cut short ({size} of {expected} bytes)"
    return None


def image_problem(path: Path) -> str | None:
    """Why `path` is not an image file, or None."""
    head, problem = _body_problem(path, "an image")
    if problem:
        return problem
    if not head.startswith(IMAGE_MAGIC):
        return f"not a PNG, JPEG, GIF or BMP image (leading bytes {head[:8].hex()})"
    return None
