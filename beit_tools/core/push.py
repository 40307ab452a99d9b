"""`push`: publish a converted folder to the Hugging Face Hub, gated by `verify`, with a model card.

`prepare` does everything that needs no network (the gate, the card, the file list), so `--dry-run`
sends no request at all; `publish` then talks to the Hub through huggingface_hub: create the repo,
the branch if needed, and one `upload_folder` commit of the folder as it is. The token is handed to
huggingface_hub and never printed, logged or written.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from beit_tools.core.card import CardRequest, Folder, model_card
from beit_tools.errors import BeitToolsError

CARD_NAME = "README.md"
# Remote files a push replaces as a set: old shards must not outlive a folder written as one file.
WEIGHT_PATTERNS = ["*.safetensors", "model.safetensors.index.json"]
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")
FAILED = "fail"


@dataclass
class PushOptions:
    folder: Path
    repo_id: str
    private: bool = False
    revision: str | None = None
    create_pr: bool = False
    commit_message: str | None = None
    token: str | None = None
    dry_run: bool = False
    skip_verify: bool = False
    license: str | None = None
    card_overwrite: bool = False
    trust_checkpoint: bool = False


@dataclass(frozen=True)
class PushFile:
    name: str
    bytes: int


@dataclass
class PushPlan:
    repo_id: str
    folder: Path
    files: list[PushFile]
    card: str  # the README.md that will be published
    card_action: str  # generated | replaced | kept (the folder's own)
    checks: list[dict[str, Any]] | None  # the gate's checks; None with --skip-verify
    verified_against: Path | None = None  # the source the gate compared with, when at hand

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "folder": str(self.folder),
            "files": [{"name": f.name, "bytes": f.bytes} for f in self.files],
            "card_action": self.card_action,
            "verified": self.checks is not None,
            "verified_against": str(self.verified_against) if self.verified_against else None,
            "checks": self.checks,
            "card": self.card,
        }


@dataclass
class PushResult:
    plan: PushPlan
    repo_url: str
    commit_url: str | None
    pr_url: str | None
    commit: str | None
    changed: bool
    revision: str
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        plan = self.plan.to_dict()
        plan.pop("card")
        return plan | {
            "repo_url": self.repo_url,
            "revision": self.revision,
            "commit": self.commit,
            "commit_url": self.commit_url,
            "pr_url": self.pr_url,
            "changed": self.changed,
        }


def check_repo_id(repo_id: str) -> None:
    if not REPO_ID.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id or repo_id.endswith((".git", ".")):
        raise BeitToolsError(
            f"{repo_id!r} is not a Hub repository id",
            "write NAMESPACE/NAME (letters, digits, '-', '_', '.'; no '--' or '..'), e.g. my-org/beit-base-ft",
        )


def source_at_hand(folder: Folder) -> Path | None:
    """The checkpoint the folder was converted from, when it is still where provenance says and unchanged."""
    from beit_tools.core.provenance import sha256_file

    source = (folder.provenance or {}).get("source") or {}
    path = Path(str(source.get("path", "")))
    if not source.get("path") or not path.is_file():
        return None
    return path if sha256_file(path) == source.get("sha256") else None


def _gate(folder: Folder, options: PushOptions) -> tuple[list[dict[str, Any]], Path | None]:
    """verify's checks (with parity when the source is at hand); a failure refuses the push."""
    from dataclasses import asdict

    from beit_tools.core.verify import VerifyOptions, verify

    against = source_at_hand(folder)
    result = verify(VerifyOptions(folder.path, against=against, trust_checkpoint=options.trust_checkpoint))
    failed = [c.name for c in result.checks if c.status == FAILED]
    if failed:
        raise BeitToolsError(
            f"refusing to publish {folder.path}: {len(failed)} verify check(s) failed: {', '.join(failed)}",
            f"`beit-tools verify {folder.path}` shows why; reconvert, or pass --skip-verify to publish anyway",
        )
    return [asdict(c) for c in result.checks], against


def prepare(options: PushOptions) -> PushPlan:
    """Everything a push needs that involves no network: the gate, the card and the file list."""
    check_repo_id(options.repo_id)
    path = options.folder
    if not path.is_dir():
        raise BeitToolsError(f"{path} is not a folder", "pass the folder `beit-tools convert` wrote")
    if not (path / "config.json").exists():
        raise BeitToolsError(f"{path} has no config.json: it is not a converted model", "run `beit-tools convert`")
    folder = Folder.read(path)
    checks, against = (None, None) if options.skip_verify else _gate(folder, options)
    existing = path / CARD_NAME
    if existing.exists() and not options.card_overwrite:
        card, action = existing.read_text(encoding="utf-8"), "kept"
    else:
        from beit_tools.core.provenance import versions

        request = CardRequest(
            repo_id=options.repo_id,
            license=options.license,
            checks=checks,
            versions=versions(),
            date=datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        )
        card, action = str(model_card(folder, request)), "replaced" if existing.exists() else "generated"
    files = [PushFile(p.name, p.stat().st_size) for p in sorted(path.iterdir()) if _published(p)]
    if action != "kept":
        files = [f for f in files if f.name != CARD_NAME] + [PushFile(CARD_NAME, len(card.encode()))]
    return PushPlan(options.repo_id, path, sorted(files, key=lambda f: f.name), card, action, checks, against)


def _published(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".")


def publish(plan: PushPlan, options: PushOptions, status: Callable[[str], None] = lambda s: None) -> PushResult:
    """Create the repo (and branch), then upload the folder in one commit. Prints nothing; reports via `status`."""
    from beit_tools.core.hub import endpoint, hub_error
    from beit_tools.core.sources import offline_requested

    if offline_requested():
        raise BeitToolsError("push needs the network, and offline mode is on (HF_HUB_OFFLINE)", "unset HF_HUB_OFFLINE")
    from huggingface_hub import HfApi
    from huggingface_hub.utils import get_token

    token = options.token or get_token()
    if not token:
        raise BeitToolsError(
            "no Hugging Face token: push needs one with write access",
            "log in with `hf auth login`, set HF_TOKEN, or pass --token",
        )
    api = HfApi(token=token)
    what = options.repo_id
    try:
        user = api.whoami()
        status(f"logged in to {endpoint()} as {user.get('name')}")
        repo_url = str(api.create_repo(options.repo_id, private=options.private, exist_ok=True))
        revision = options.revision or "main"
        if options.revision and not options.create_pr:
            api.create_branch(options.repo_id, branch=options.revision, exist_ok=True)
        before = api.repo_info(options.repo_id, revision=revision).sha
    except Exception as e:
        raise hub_error(e, what) from e
    if plan.card_action != "kept":
        (plan.folder / CARD_NAME).write_text(plan.card, encoding="utf-8")
    size = sum(f.bytes for f in plan.files)
    status(f"uploading {len(plan.files)} files ({size / 1e6:.1f} MB) to {options.repo_id}@{revision}")
    try:
        info = api.upload_folder(
            repo_id=options.repo_id,
            folder_path=plan.folder,
            revision=options.revision,
            create_pr=options.create_pr,
            commit_message=options.commit_message or f"Upload {plan.folder.name} converted with beit-tools",
            ignore_patterns=[".*", "**/.*"],
            delete_patterns=WEIGHT_PATTERNS,
        )
    except Exception as e:
        cause = hub_error(e, what)
        raise BeitToolsError(
            f"the upload to {options.repo_id} did not complete: {cause.message}; nothing was published",
            "run push again; files already uploaded are not sent twice",
        ) from e
    changed = info.pr_url is not None or info.oid != before
    return PushResult(plan, repo_url, info.commit_url, info.pr_url, info.oid, changed, revision)
