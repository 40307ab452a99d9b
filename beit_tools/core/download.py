"""Fetch files over HTTP into the local cache: streamed, resumable, and checked before they count as cached.

A cached file is `<folder>/<name>` beside `<name>.json` (its URL, size and sha256); a file without its
record is not cached. A transfer writes `<name>.partial` and `<name>.partial.json` (the URL and the
server's validator), so an interrupted run resumes with an HTTP Range request and starts over when the
server ignores the range or the file changed. The body is sniffed and its size checked before it is
renamed into place: an HTML error page, an empty body or a short file never becomes a checkpoint.
Each file has its own folder, locked while it is fetched, so two processes never write one file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

from beit_tools.core.formats import checkpoint_problem, image_problem
from beit_tools.errors import BeitToolsError

CHUNK = 1 << 16  # small enough that a broken connection loses little of what arrived
DEFAULT_TIMEOUT = 30.0  # seconds without a byte before a connection counts as broken
DEFAULT_RETRIES = 4  # further attempts after the first, on connection errors and 5xx
BACKOFF = 0.5  # seconds before the first retry, doubling after each
# What a downloaded file must be before it may enter the cache: (description, check).
CONTENT_CHECKS: dict[str, Callable[[Path], str | None]] = {"checkpoint": checkpoint_problem, "image": image_problem}

# requests wraps socket errors in long reprs; these name the cause in a few words.
CONNECTION_FAILURES = (
    (r"Connection refused", "connection refused"),
    (r"Connection reset|ConnectionResetError", "connection reset"),
    (r"Name or service not known|nodename nor servname|getaddrinfo failed|Temporary failure", "unknown host"),
    (r"IncompleteRead|Connection broken|RemoteDisconnected|closed connection", "the connection broke"),
)


def cache_root(override: Path | None = None) -> Path:
    """`--cache-dir`, else $BEIT_TOOLS_CACHE, else $HF_HOME/beit-tools (HF_HOME defaults as huggingface_hub's)."""
    if override is not None:
        return override
    if os.environ.get("BEIT_TOOLS_CACHE"):
        return Path(os.environ["BEIT_TOOLS_CACHE"])
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return Path(os.environ.get("HF_HOME") or xdg / "huggingface") / "beit-tools"


def url_path(root: Path, url: str) -> Path:
    """Where a file fetched from an arbitrary URL lives: a folder per URL, the URL's file name inside."""
    name = Path(urlparse(url).path).name or "download"
    return root / "urls" / hashlib.sha256(url.encode()).hexdigest()[:16] / name


@dataclass(frozen=True)
class CachedFile:
    path: Path
    url: str
    sha256: str
    bytes: int
    fetched: bool  # False when it came from the cache without any request


@dataclass(frozen=True)
class Download:
    """A file to have in the cache: the addresses to try in order, where it goes, what it must be."""

    urls: tuple[str, ...]
    path: Path
    content: str = "checkpoint"  # a key of CONTENT_CHECKS

    @property
    def name(self) -> str:
        return self.path.name


def _env_number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _write_json(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _read_json(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def cached(path: Path) -> CachedFile | None:
    """The cached file at `path` when it is complete (its record exists and agrees with its size)."""
    record = _read_json(_record_path(path))
    if record is None or not path.is_file() or record.get("bytes") != path.stat().st_size:
        return None
    return CachedFile(path, str(record.get("url")), str(record.get("sha256")), path.stat().st_size, fetched=False)


@contextmanager
def _locked(folder: Path, on_wait: Callable[[], None]) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (released by the kernel if the process dies)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class _Transient(Exception):
    """A failure worth retrying: connection trouble, a 5xx, a body cut short."""


class _Unavailable(Exception):
    """This address will not give the file: try the next one."""


def fetch(
    download: Download,
    *,
    offline: bool = False,
    on_start: Callable[[int | None, str], None] = lambda total, name: None,
    on_progress: Callable[[int], None] = lambda n: None,
    on_wait: Callable[[], None] = lambda: None,
) -> CachedFile:
    """The cached copy of `download`, fetching it (or the rest of a partial transfer) when needed."""
    hit = cached(download.path)
    if hit is not None:
        return hit
    if offline:
        raise BeitToolsError(
            f"{download.name} is not in the cache ({download.path.parent}) and offline mode is on",
            "run once with network access (or put the file there with its .json record), or drop --offline",
        )
    try:
        download.path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BeitToolsError(f"cannot create the cache folder {download.path.parent}: {e.strerror}") from e
    with _locked(download.path.parent, on_wait):
        hit = cached(download.path)  # another process may have finished it while we waited
        if hit is not None:
            return hit
        failures: list[str] = []
        for url in download.urls:
            try:
                return _fetch_url(url, download, on_start, on_progress)
            except _Unavailable as e:
                failures.append(f"{url}: {e}")
    where = failures[0] if len(failures) == 1 else f"{len(failures)} addresses failed: " + "; ".join(failures)
    raise BeitToolsError(
        f"cannot download {download.name}: {where}",
        "check the address and the network, set a mirror with --mirror / BEIT_TOOLS_MIRROR, or pass a local copy",
    )


def _fetch_url(url: str, download: Download, on_start, on_progress) -> CachedFile:
    attempts = 1 + int(_env_number("BEIT_TOOLS_DOWNLOAD_RETRIES", DEFAULT_RETRIES))
    last = ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(BACKOFF * 2 ** (attempt - 1))
        try:
            return _transfer(url, download, on_start, on_progress)
        except _Transient as e:
            last = str(e)
    raise _Unavailable(f"{last} ({attempts} attempt{'s' if attempts > 1 else ''})")


def _describe(e: Exception) -> str:
    """A short reason for a requests failure, without the exception's nested reprs."""
    import requests

    if isinstance(e, requests.Timeout):
        return f"no response within {_env_number('BEIT_TOOLS_HTTP_TIMEOUT', DEFAULT_TIMEOUT):g} s"
    text = str(e)
    return next((reason for pattern, reason in CONNECTION_FAILURES if re.search(pattern, text)), type(e).__name__)


def _transfer(url: str, download: Download, on_start, on_progress) -> CachedFile:
    import requests

    path, partial = download.path, _partial_path(download.path)
    state_path = _record_path(partial)
    state = _read_json(state_path) if partial.exists() else None
    have = partial.stat().st_size if state and state.get("url") == url else 0
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        if state and state.get("validator"):
            headers["If-Range"] = str(state["validator"])
    timeout = _env_number("BEIT_TOOLS_HTTP_TIMEOUT", DEFAULT_TIMEOUT)
    try:
        response = requests.get(url, headers=headers, stream=True, timeout=timeout)
    except requests.RequestException as e:
        raise _Transient(_describe(e)) from e
    with response:
        status = response.status_code
        if status == 416:  # the range no longer fits the file: start over
            partial.unlink(missing_ok=True)
            raise _Transient("the server could not resume the partial download")
        if status >= 500:
            raise _Transient(f"{status} {response.reason}")
        if status >= 400:
            raise _Unavailable(f"{status} {response.reason}")
        resumed = bool(have) and status == 206 and _range_start(response) == have
        if not resumed:
            have = 0  # the server sent the whole file (it ignored the range, or the file changed)
        total = _total(response, have)
        validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
        _write_json(state_path, {"url": url, "validator": validator, "total": total})
        digest = hashlib.sha256()
        if resumed:
            with partial.open("rb") as f:
                while block := f.read(CHUNK):
                    digest.update(block)
        on_start(total, download.name)
        on_progress(have)
        done = have
        try:
            with partial.open("ab" if resumed else "wb") as f:
                for block in response.iter_content(CHUNK):
                    f.write(block)
                    digest.update(block)
                    done += len(block)
                    on_progress(len(block))
        except requests.RequestException as e:
            raise _Transient(f"{_describe(e)} after {done} bytes") from e
        except OSError as e:
            raise BeitToolsError(
                f"cannot write the download to {partial.parent}: {e.strerror or e}",
                "free some space (or choose --cache-dir); the partial download resumes next time",
            ) from e
    if total is not None and done < total:
        raise _Transient(f"the transfer ended early ({done} of {total} bytes)")
    if total is not None and done > total:
        _discard(partial)
        raise _Unavailable(f"the server sent {done} bytes where it announced {total}")
    problem = CONTENT_CHECKS[download.content](partial)
    if problem:
        _discard(partial)
        raise _Unavailable(problem)
    sha256 = digest.hexdigest()
    fetched_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    _write_json(
        _record_path(path), {"url": url, "sha256": sha256, "bytes": done, "validator": validator, "fetched": fetched_at}
    )
    partial.replace(path)
    state_path.unlink(missing_ok=True)
    return CachedFile(path, url, sha256, done, fetched=True)


def _discard(partial: Path) -> None:
    partial.unlink(missing_ok=True)
    _record_path(partial).unlink(missing_ok=True)


def _range_start(response) -> int | None:
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
    return int(m.group(1)) if m else None


def _total(response, have: int) -> int | None:
    """The full file size the server announces (Content-Range for a resumed body, else Content-Length)."""
    m = re.match(r"bytes \d+-\d+/(\d+)", response.headers.get("Content-Range", ""))
    if m and have:
        return int(m.group(1))
    length = response.headers.get("Content-Length")
    return int(length) + have if length is not None and length.isdigit() else None
