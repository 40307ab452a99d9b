"""The Hugging Face Hub through huggingface_hub: files for `hf://` sources, and its failures as one line.

huggingface_hub does the talking (its cache, token order, `HF_ENDPOINT`, offline rules); this module
only chooses what to ask for and says what went wrong in the project's terms. It is imported only by
commands that reach the Hub, so `--help` and local conversions never pay for it.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beit_tools.errors import BeitToolsError

if TYPE_CHECKING:
    from beit_tools.core.sources import Callbacks, HubFile

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
OFFLINE_HINT = "run once with network access, or drop --offline / HF_HUB_OFFLINE"


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


# huggingface_hub's exceptions, most specific first: (class name, what went wrong, what to do).
# `{what}` is the repo or file asked for, `{endpoint}` the Hub's address, `{detail}` the server's words.
FAILURES: tuple[tuple[str, str, str], ...] = (
    ("OfflineModeIsEnabled", "{what} is not in the Hugging Face cache and offline mode is on", OFFLINE_HINT),
    ("GatedRepoError", "{what} is gated: its conditions must be accepted on the Hub", "accept them, then log in"),
    (
        "RepositoryNotFoundError",
        "{what}: no such repository on {endpoint}, or it is private and the token cannot see it",
        "check the name; log in with `hf auth login` or set HF_TOKEN for a private repo",
    ),
    ("RevisionNotFoundError", "{what}: no such revision", "check the name after @"),
    ("RemoteEntryNotFoundError", "{what}: no such file in the repository", "check the path after the repo"),
    (
        "LocalEntryNotFoundError",
        "{what} is not in the Hugging Face cache, and {endpoint} cannot be reached",
        "check the network or HF_ENDPOINT",
    ),
    ("EntryNotFoundError", "{what}: no such file in the repository", "check the path after the repo"),
    ("ConnectError", "cannot reach {endpoint} ({detail})", "check the network or HF_ENDPOINT"),
    ("TimeoutException", "{endpoint} did not answer in time", "check the network or HF_ENDPOINT"),
)
# HTTP statuses that say what is wrong with the credentials, for errors no class above covers.
STATUS_FAILURES = {
    401: ("the token was refused by {endpoint} (invalid or expired)", "log in with `hf auth login`, or fix HF_TOKEN"),
    403: ("the token may not do this on {what}", "use a token with write access to that namespace"),
}


def hub_error(e: BaseException, what: str, *, offline: bool = False) -> BeitToolsError:
    """One line for a huggingface_hub/httpx failure while working on `what`."""
    names = {cls.__name__ for cls in type(e).__mro__}
    detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if offline and "LocalEntryNotFoundError" in names:
        names.add("OfflineModeIsEnabled")
    for name, message, hint in FAILURES:
        if name in names:
            return BeitToolsError(message.format(what=what, endpoint=endpoint(), detail=detail), hint)
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status in STATUS_FAILURES:
        message, hint = STATUS_FAILURES[status]
        return BeitToolsError(message.format(what=what, endpoint=endpoint()), hint)
    if isinstance(status, int) and status >= 500:
        return BeitToolsError(f"{endpoint()} answered {status}, a server error", "try again later")
    return BeitToolsError(f"{what}: the Hub answered {detail}", "rerun with --debug for the details")


@dataclass(frozen=True)
class HubDownload:
    path: Path
    commit: str | None


class _ProgressBar:
    """Just enough of tqdm's interface for huggingface_hub to report bytes into our callbacks."""

    callbacks: Callbacks

    def __init__(self, *args: Any, total: int | None = None, initial: int = 0, desc: str = "", **kwargs: Any) -> None:
        self.n = initial
        self.total = total
        self.callbacks.start(total, desc or "download")
        self.callbacks.advance(initial)

    def update(self, n: int | float = 1) -> None:
        self.n += int(n)
        self.callbacks.advance(int(n))

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Callable[..., None]:  # set_description, refresh, reset, ...
        return lambda *args, **kwargs: None


def download(address: HubFile, filename: str, *, offline: bool, callbacks: Callbacks | None = None) -> HubDownload:
    """`filename` of the repo in `address`, through huggingface_hub's cache."""
    from huggingface_hub import hf_hub_download

    kwargs: dict[str, Any] = {
        "repo_type": address.repo_type,
        "revision": address.revision,
        "local_files_only": offline,
    }
    if callbacks is not None and "tqdm_class" in inspect.signature(hf_hub_download).parameters:
        kwargs["tqdm_class"] = type("Bar", (_ProgressBar,), {"callbacks": callbacks})
    what = replace(address, filename=filename).address
    try:
        path = Path(hf_hub_download(address.repo_id, filename, **kwargs))
    except Exception as e:
        raise hub_error(e, what, offline=offline) from e
    parts = path.parts
    commit = parts[parts.index("snapshots") + 1] if "snapshots" in parts else None
    return HubDownload(path, commit)


def single_checkpoint(address: HubFile, *, offline: bool) -> str:
    """The one checkpoint file of a repo named without a file (safetensors preferred over pickles)."""
    if offline:
        raise BeitToolsError(
            f"{address.address} names no file, and offline the repository cannot be listed",
            "add the file's path after the repo name",
        )
    from huggingface_hub import HfApi

    try:
        info = HfApi().repo_info(address.repo_id, repo_type=address.repo_type, revision=address.revision)
    except Exception as e:
        raise hub_error(e, address.address) from e
    files = [s.rfilename for s in info.siblings or []]
    found = [f for f in files if f.endswith(CHECKPOINT_SUFFIXES)]
    preferred = [f for f in found if f.endswith(".safetensors")] or found
    if len(preferred) == 1:
        return preferred[0]
    if not preferred:
        raise BeitToolsError(f"{address.address} holds no checkpoint file ({len(files)} files)", "name the file")
    raise BeitToolsError(
        f"{address.address} holds {len(preferred)} checkpoint files: {', '.join(preferred[:5])}",
        "add the one to convert after the repo name",
    )
