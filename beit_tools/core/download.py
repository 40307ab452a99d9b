"""Fetch a URL into the local cache once: streamed, resumable, renamed into place only when complete."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from beit_tools.errors import BeitToolsError

CHUNK = 1 << 20
TIMEOUT = 30


def cache_dir() -> Path:
    return Path(os.environ.get("BEIT_TOOLS_CACHE", Path.home() / ".cache" / "beit-tools"))


def cache_path(url: str) -> Path:
    """A stable file name per URL: its last path segment, prefixed by a short hash of the whole URL."""
    name = Path(urlparse(url).path).name or "download"
    return cache_dir() / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"


def fetch(url: str, on_progress: Callable[[int, int | None], None] = lambda done, total: None) -> Path:
    """The cached copy of `url`, downloading it (or the rest of a partial download) when needed."""
    import requests

    target = cache_path(url)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with requests.get(url, stream=True, timeout=TIMEOUT, headers=headers) as response:
            if response.status_code == 416:  # the partial file is already complete
                partial.rename(target)
                return target
            response.raise_for_status()
            if have and response.status_code != 206:
                have = 0  # the server ignored the range: start over
            total = response.headers.get("Content-Length")
            size = int(total) + have if total is not None else None
            with partial.open("ab" if have else "wb") as f:
                done = have
                for block in response.iter_content(CHUNK):
                    f.write(block)
                    done += len(block)
                    on_progress(done, size)
        if size is not None and partial.stat().st_size != size:
            raise BeitToolsError(f"download of {url} ended early ({partial.stat().st_size} of {size} bytes)")
        partial.rename(target)
        return target
    except requests.RequestException as e:
        raise BeitToolsError(
            f"cannot download {url}: {type(e).__name__}", "check the network, or give a local copy"
        ) from e
