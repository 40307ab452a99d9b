"""Every way a user names a checkpoint, turned into a local file and a record of where it came from.

A source is a path, an http(s) URL, an `hf://[TYPE/]org/repo[@REVISION][/path]` address, or an
official variant by name. URLs and variants go through our cache (`download.py`); `hf://` goes
through huggingface_hub, so its cache, token, `HF_ENDPOINT` and offline rules apply unchanged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from beit_tools.core.download import Download, cache_root, fetch, url_path
from beit_tools.core.variants import TestImage, Variant, variant_by_name
from beit_tools.errors import BeitToolsError, UsageError

# hf://[TYPE/]ORG/NAME[@REVISION][/PATH]; a revision with slashes is written URL-encoded or as refs/pr/N.
HF_ADDRESS = re.compile(
    r"hf://(?:(?P<type>models|datasets|spaces)/)?(?P<repo>[\w.-]+/[\w.-]+)"
    r"(?:@(?P<revision>refs/(?:pr/\d+|convert/[\w.-]+)|[^/]+))?(?:/(?P<path>.+))?"
)
REPO_TYPES = {None: "model", "models": "model", "datasets": "dataset", "spaces": "space"}
TRUTHY = {"1", "true", "yes", "on"}


def offline_requested(flag: bool = False) -> bool:
    """--offline, or huggingface_hub's own switch HF_HUB_OFFLINE, which we honour for every download."""
    return flag or os.environ.get("HF_HUB_OFFLINE", "").lower() in TRUTHY


@dataclass(frozen=True)
class SourceRequest:
    """What the user typed: a SOURCE argument or --variant, and how to reach remote files."""

    source: str | None = None
    variant: str | None = None
    mirror: str | None = None
    cache_dir: Path | None = None
    offline: bool = False

    @property
    def is_offline(self) -> bool:
        return offline_requested(self.offline)

    @property
    def effective_mirror(self) -> str | None:
        return self.mirror or os.environ.get("BEIT_TOOLS_MIRROR") or None


@dataclass(frozen=True)
class HubFile:
    repo_type: str
    repo_id: str
    revision: str | None
    filename: str | None

    @property
    def address(self) -> str:
        prefix = "" if self.repo_type == "model" else f"{self.repo_type}s/"
        rev = f"@{self.revision}" if self.revision else ""
        return f"hf://{prefix}{self.repo_id}{rev}" + (f"/{self.filename}" if self.filename else "")


@dataclass(frozen=True)
class Source:
    """A checkpoint on local disk and where it came from (recorded in provenance)."""

    path: Path
    kind: str  # file | url | hub | variant
    address: str  # as the user gave it
    url: str | None = None
    sha256: str | None = None  # known when the file came through our cache
    variant: Variant | None = None
    hub: dict[str, Any] = field(default_factory=dict)

    def origin(self) -> dict[str, Any]:
        """Provenance fields that say where the file was fetched from (nothing for a local file)."""
        out: dict[str, Any] = {}
        if self.kind != "file":
            out["address"] = self.address
        if self.url:
            out["url"] = self.url
        if self.hub:
            out["hub"] = self.hub
        return out


Progress = Callable[[int | None, str], None]


@dataclass(frozen=True)
class Callbacks:
    """How a download reports itself: start(total bytes or None, name), advance(n), wait()."""

    start: Progress = lambda total, name: None
    advance: Callable[[int], None] = lambda n: None
    wait: Callable[[], None] = lambda: None


def resolve(request: SourceRequest, callbacks: Callbacks | None = None) -> Source:
    """A local file for `request`, fetching it first when it is remote and not cached."""
    callbacks = callbacks or Callbacks()
    if (request.source is None) == (request.variant is None):
        raise UsageError(
            "give exactly one checkpoint: a path, URL or hf:// address, or --variant NAME",
            "`beit-tools variants` lists the official names",
        )
    if request.variant is not None:
        return _from_variant(variant_by_name(request.variant), request, callbacks)
    text = str(request.source)
    if text.startswith("hf://"):
        return _from_hub(text, request, callbacks)
    if re.match(r"https?://", text):
        root = cache_root(request.cache_dir)
        got = _fetch(Download((text,), url_path(root, text)), request, callbacks)
        return Source(got.path, "url", text, url=got.url, sha256=got.sha256)
    return Source(Path(text), "file", text)


def _fetch(download: Download, request: SourceRequest, callbacks: Callbacks):
    return fetch(
        download,
        offline=request.is_offline,
        on_start=callbacks.start,
        on_progress=callbacks.advance,
        on_wait=callbacks.wait,
    )


def _from_variant(variant: Variant, request: SourceRequest, callbacks: Callbacks) -> Source:
    root = cache_root(request.cache_dir)
    path = root / "variants" / variant.file / variant.filename
    got = _fetch(Download(variant.urls(request.effective_mirror), path), request, callbacks)
    return Source(got.path, "variant", variant.name, url=got.url, sha256=got.sha256, variant=variant)


def parse_hub_address(text: str) -> HubFile:
    m = HF_ADDRESS.fullmatch(text)
    if m is None:
        raise UsageError(
            f"{text!r} is not an hf:// address", "write hf://ORG/REPO/path/file.pth, with @REVISION after the repo"
        )
    revision = unquote(m["revision"]) if m["revision"] else None
    return HubFile(REPO_TYPES[m["type"]], m["repo"], revision, m["path"])


def _from_hub(text: str, request: SourceRequest, callbacks: Callbacks) -> Source:
    address = parse_hub_address(text)
    from beit_tools.core import hub

    filename = address.filename or hub.single_checkpoint(address, offline=request.is_offline)
    found = hub.download(address, filename, offline=request.is_offline, callbacks=callbacks)
    return Source(
        found.path,
        "hub",
        text,
        hub={
            "repo_id": address.repo_id,
            "repo_type": address.repo_type,
            "revision": address.revision or "main",
            "filename": filename,
            "commit": found.commit,
        },
    )


def default_output(source: Source) -> Path:
    """A variant is written under its Hub name; anything else to ./out."""
    return Path(source.variant.output_name) if source.variant else Path("out")


def require_variant(source: Source, arch: Any) -> None:
    """Stop when the file that arrived under a variant's name is not that checkpoint."""
    if source.variant is None:
        return
    differences = source.variant.mismatches(arch)
    if differences:
        raise BeitToolsError(
            f"{source.path.name} is not the {source.variant.name} checkpoint: {'; '.join(differences)}",
            f"the address served another file under that name; delete {source.path} and check the mirror",
        )


def fetch_test_image(image: TestImage, *, cache_dir: Path | None = None, offline: bool = False) -> Path:
    """A variant's test image: from the Hub through huggingface_hub, or from its address through our cache."""
    offline = offline_requested(offline)
    if image.hub is not None:
        from beit_tools.core import hub

        repo_type, repo_id, filename, revision = image.hub
        return hub.download(HubFile(repo_type, repo_id, revision, filename), filename, offline=offline).path
    if image.url is None:
        raise BeitToolsError(f"{image.name} has no address to fetch it from")
    download = Download((image.url,), url_path(cache_root(cache_dir), image.url), content="image")
    return fetch(download, offline=offline).path
