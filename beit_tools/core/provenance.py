"""provenance.json: where a converted model came from and what made it, so it can be traced and re-checked."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import beit_tools

PROVENANCE_NAME = "provenance.json"
CHUNK = 8 * 2**20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def versions() -> dict[str, str]:
    """Versions of what made the folder, read from package metadata (nothing is imported for it)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"beit_tools": beit_tools.__version__}
    for name in ("transformers", "torch", "safetensors"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance(source: dict[str, Any], **facts: Any) -> dict[str, Any]:
    return {
        "tool": "beit-tools",
        "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        **facts,
    }
