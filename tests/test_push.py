"""`beit-tools push`: the gate, the model card, and publishing through the real huggingface_hub client.

Publishing runs the CLI as a process against `HubServer` on 127.0.0.1 (HF_ENDPOINT, HF_TOKEN,
HF_HUB_DISABLE_XET=1, HF_HOME in a temp dir) and asserts on what the server stored.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file, save_file

from beit_tools.core.arch import Family
from beit_tools.core.card import ADE_URL, CATS_URL, usage_snippet
from beit_tools.core.convert import ConvertOptions, convert
from beit_tools.core.push import PushOptions, prepare
from beit_tools.synthetic import default_spec, tiny_arch, write_synthetic
from tests.servers import HubServer
from tests.test_sources import EXE, process_env

WRITE, READ = "hf_write_0123456789abcdef", "hf_read_fedcba9876543210"


def converted(tmp_path: Path, family: Family = Family.CLASSIFICATION, variant: str | None = None, **arch) -> Path:
    source = write_synthetic(tmp_path / f"{family.value}.pth", default_spec(tiny_arch(family, **arch)))
    out = tmp_path / f"out-{family.value}"
    convert(ConvertOptions(source, out))
    if variant:
        provenance = json.loads((out / "provenance.json").read_text())
        (out / "provenance.json").write_text(json.dumps(provenance | {"variant": variant}))
    return out


def card_of(out: Path, **options) -> tuple[dict, str]:
    plan = prepare(PushOptions(out, "my-org/beit-test", dry_run=True, **options))
    card = ModelCard(plan.card)
    return card.data.to_dict(), card.text


# --- the card ------------------------------------------------------------------------------------


def test_card_of_an_official_classifier(tmp_path) -> None:
    out = converted(tmp_path, num_labels=1000, variant="base-ft22kto1k")
    data, text = card_of(out)
    assert data["license"] == "mit" and data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "image-classification"
    assert data["datasets"] == ["imagenet-1k"] and data["tags"] == [
        "beit",
        "image-classification",
        "vision",
        "imagenet-1k",
    ]
    assert "model-index" not in data  # no evaluation was run here, so no figures are claimed as results
    assert "Official checkpoint: `base-ft22kto1k`" in text and "top-1 85.2%" in text
    assert "| parity: logits | pass |" in text and "| round trip | pass |" in text
    assert "mean = std = 0.5" in text and "@inproceedings{bao2022beit" in text


def test_card_of_a_segmentation_model_and_of_a_pretrained_one(tmp_path) -> None:
    seg, seg_text = card_of(converted(tmp_path, Family.SEGMENTATION, num_labels=150), license="apache-2.0")
    assert (seg["pipeline_tag"], seg["datasets"], seg["license"]) == (
        "image-segmentation",
        ["scene_parse_150"],
        "apache-2.0",
    )
    assert "do_reduce_labels=True" in seg_text and "sliding-window inference (640×640 crops, stride 426)" in seg_text
    assert "feed its FPN the outputs of the original's blocks [0, 1, 2, 3], with 1 added pass-through" in seg_text
    mim, mim_text = card_of(converted(tmp_path, Family.MIM))
    assert "pipeline_tag" not in mim and "license" not in mim and "datasets" not in mim  # a user's own file
    assert mim["tags"] == ["beit", "masked-image-modeling", "vision"]
    assert "bool_masked_pos" in mim_text


def _image(path: Path) -> Path:
    Image.new("RGB", (50, 40), (200, 120, 40)).save(path)
    return path


@pytest.mark.parametrize("family", list(Family))
def test_the_usage_snippet_runs_as_written(family: Family, tmp_path) -> None:
    """The card's code, with the repo id pointing at the folder and the image at a local copy."""
    out = converted(tmp_path, family)
    image = _image(tmp_path / "image.png")
    code = usage_snippet(family, "my-org/beit-test")
    code = code.replace('"my-org/beit-test"', repr(str(out)))
    code = code.replace(f'"{CATS_URL}"', repr(str(image))).replace(f'"{ADE_URL}"', repr(str(image)))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "card-snippet", "exec"), {})
    assert printed.getvalue().strip()


def test_an_existing_card_is_kept_unless_overwritten(tmp_path) -> None:
    out = converted(tmp_path)
    (out / "README.md").write_text("# my own card\n")
    assert prepare(PushOptions(out, "o/n", dry_run=True, skip_verify=True)).card == "# my own card\n"
    plan = prepare(PushOptions(out, "o/n", dry_run=True, skip_verify=True, card_overwrite=True))
    assert plan.card_action == "replaced" and "published without verification" in plan.card


# --- publishing ----------------------------------------------------------------------------------


@pytest.fixture
def hub():
    with HubServer(tokens={WRITE: ("alice", "write"), READ: ("alice", "read")}).running() as server:
        yield server


def push(tmp_path: Path, hub: HubServer, *args: object, token: str | None = WRITE, **env: str):
    extra = {"HF_TOKEN": token} if token else {}
    environment = process_env(tmp_path, HF_ENDPOINT=hub.url, **extra, **env)
    return subprocess.run([EXE, "push", *map(str, args)], capture_output=True, text=True, env=environment, timeout=300)


def published(hub: HubServer, repo_id: str, ref: str = "main") -> dict[str, bytes]:
    repo = hub.repos[("model", repo_id)]
    return repo.commits[repo.refs[ref]].files


def error_line(stderr: str) -> str:
    """The one error line (a --skip-verify warning may come before it)."""
    lines = stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], stderr
    return lines[-1]


def no_token_anywhere(token: str, *texts: str, folders: tuple[Path, ...] = (), hub: HubServer | None = None) -> None:
    assert all(token not in t for t in texts)
    for folder in folders:
        for path in folder.rglob("*"):
            assert not path.is_file() or token.encode() not in path.read_bytes(), path
    for repo in hub.repos.values() if hub else []:
        for commit in repo.commits.values():
            assert all(token.encode() not in data for data in commit.files.values())


def test_push_publishes_the_folder_in_one_commit_and_an_unchanged_push_adds_none(tmp_path, hub) -> None:
    out = converted(tmp_path)
    first = push(tmp_path, hub, out, "--repo", "alice/beit-ft", "--license", "mit")
    assert first.returncode == 0, first.stderr
    repo = hub.repos[("model", "alice/beit-ft")]
    assert len(repo.commits) == 2  # the repo's initial commit and ours
    files = published(hub, "alice/beit-ft")
    assert sorted(files) == sorted(p.name for p in out.iterdir())
    for name, data in files.items():
        assert data == (out / name).read_bytes(), name
    uploads = [p for m, p in hub.api_calls() if m == "PUT" and p.startswith("/lfs-upload/")]
    assert len(uploads) == 1 and files["model.safetensors"] in hub.lfs.values()  # the large-file path
    card = ModelCard(files["README.md"].decode())
    assert card.data.license == "mit" and card.data.pipeline_tag == "image-classification"
    assert "published main:" in first.stdout and "/alice/beit-ft/commit/" in first.stdout
    again = push(tmp_path, hub, out, "--repo", "alice/beit-ft", "--license", "mit")
    assert again.returncode == 0 and "no new commit" in again.stdout
    assert len(repo.commits) == 2
    no_token_anywhere(WRITE, first.stdout, first.stderr, again.stdout, again.stderr, folders=(out,), hub=hub)


def test_create_pr_opens_a_pull_request_and_revision_lands_on_its_branch(tmp_path, hub) -> None:
    out = converted(tmp_path)
    assert push(tmp_path, hub, out, "--repo", "alice/beit-ft").returncode == 0
    main = hub.repos[("model", "alice/beit-ft")].refs["main"]
    pr = push(
        tmp_path, hub, out, "--repo", "alice/beit-ft", "--create-pr", "--license", "apache-2.0", "--card-overwrite"
    )
    assert pr.returncode == 0, pr.stderr
    assert "opened a pull request: " in pr.stdout and "/alice/beit-ft/discussions/1" in pr.stdout
    repo = hub.repos[("model", "alice/beit-ft")]
    assert repo.refs["main"] == main and "refs/pr/1" in repo.refs
    assert b"license: apache-2.0" in published(hub, "alice/beit-ft", "refs/pr/1")["README.md"]
    branch = push(
        tmp_path, hub, out, "--repo", "alice/beit-ft", "--revision", "dev", "--commit-message", "Try dev", "--json"
    )
    assert branch.returncode == 0, branch.stderr
    result = json.loads(branch.stdout)
    assert result["revision"] == "dev" and result["changed"] is True and result["commit"] == repo.refs["dev"]
    assert repo.refs["main"] == main and repo.commits[repo.refs["dev"]].message == "Try dev"


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("hf_not_a_token", "the token was refused by http://127.0.0.1:"),
        (READ, "the token may not do this on alice/beit-ft"),
    ],
)
def test_a_wrong_or_read_only_token_fails_cleanly(token, message, tmp_path, hub) -> None:
    out = converted(tmp_path)
    result = push(tmp_path, hub, out, "--repo", "alice/beit-ft", token=token)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and message in result.stderr
    assert hub.repos == {}
    no_token_anywhere(token, result.stdout, result.stderr, folders=(out,))


def test_dry_run_sends_nothing(tmp_path, hub) -> None:
    out = converted(tmp_path)
    result = push(tmp_path, hub, out, "--repo", "alice/beit-ft", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert hub.log == []
    assert "model.safetensors" in result.stdout and "library_name: transformers" in result.stdout
    assert "dry run: nothing was sent" in result.stdout and not (out / "README.md").exists()


def test_a_folder_that_fails_verify_is_refused_and_skip_verify_says_so(tmp_path, hub, invoke) -> None:
    out = converted(tmp_path)
    weights = load_file(str(out / "model.safetensors"))
    weights["classifier.bias"][0] = float("nan")
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    refused = invoke("push", out, "--repo", "alice/beit-ft", "--dry-run")
    assert refused.exit_code == 1 and refused.stderr.count("\n") == 1
    assert (
        "refusing to publish" in refused.stderr
        and "finite weights" in refused.stderr
        and "round trip" in refused.stderr
    )
    skipped = invoke("push", out, "--repo", "alice/beit-ft", "--dry-run", "--skip-verify")
    assert skipped.exit_code == 0 and "was NOT verified" in skipped.stderr
    assert "published without verification" in skipped.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--repo", "not a repo"], {}, "'not a repo' is not a Hub repository id"),
        (["--repo", "alice/x"], {"HF_HUB_OFFLINE": "1"}, "push needs the network, and offline mode is on"),
    ],
)
def test_bad_requests_are_one_line(args, env, message, tmp_path, invoke) -> None:
    out = converted(tmp_path)
    result = invoke("push", out, *args, "--skip-verify", env=env)
    assert result.exit_code == 1 and message in error_line(result.stderr)


def test_no_token_is_one_line(tmp_path, hub) -> None:
    out = converted(tmp_path)
    result = push(tmp_path, hub, out, "--repo", "alice/x", "--skip-verify", token=None)
    assert result.returncode == 1 and "no Hugging Face token" in error_line(result.stderr) and hub.repos == {}


def test_an_upload_that_fails_or_is_interrupted_publishes_nothing(tmp_path, hub) -> None:
    out = converted(tmp_path)
    hub.commit_failures = 1
    failed = push(tmp_path, hub, out, "--repo", "alice/beit-ft", "--skip-verify")
    line = error_line(failed.stderr)
    assert failed.returncode == 1 and line.startswith("error: the upload to alice/beit-ft did not complete")
    assert "answered 500, a server error; nothing was published" in line
    repo = hub.repos[("model", "alice/beit-ft")]
    assert len(repo.commits) == 1  # only the repo's initial commit
    hub.lfs_delay = 30.0
    hub.lfs.clear()
    env = process_env(tmp_path, HF_ENDPOINT=hub.url, HF_TOKEN=WRITE)
    puts = sum(m == "PUT" for m, _ in hub.api_calls())
    proc = subprocess.Popen(
        [EXE, "push", out, "--repo", "alice/beit-ft", "--skip-verify"], stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 120
    while sum(m == "PUT" for m, _ in hub.api_calls()) == puts:  # wait until the weights are being uploaded
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and stderr.strip().splitlines()[-1] == "error: interrupted; nothing was published"
    assert len(repo.commits) == 1


def test_push_help_lists_every_option(invoke) -> None:
    text = invoke("push", "--help").stdout
    for option in ("--repo", "--private", "--revision", "--create-pr", "--commit-message", "--token", "--dry-run"):
        assert option in text
    assert "--skip-verify" in text and "--json" in text


def test_an_unreachable_endpoint_is_one_line(tmp_path) -> None:
    from tests.servers import free_port

    out = converted(tmp_path)
    env = process_env(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{free_port()}", HF_TOKEN=WRITE)
    result = subprocess.run(
        [EXE, "push", out, "--repo", "alice/x", "--skip-verify"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 1
    assert error_line(result.stderr).startswith("error: cannot reach http://127.0.0.1:")
