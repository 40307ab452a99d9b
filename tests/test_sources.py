"""Checkpoints by address: URLs through the cache (resume, retries, checks, offline, locking) and hf:// sources.

Every test talks real HTTP to servers on 127.0.0.1; the CLI runs as its own process where the
environment it reads at start-up matters (HF_ENDPOINT, HF_HOME, offline switches, signals).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from beit_tools.core.arch import Family
from beit_tools.core.download import Download, cached, fetch, url_path
from beit_tools.errors import BeitToolsError
from beit_tools.synthetic import default_spec, tiny_arch, write_synthetic
from tests.servers import FileHost, HubServer, free_port

EXE = Path(sys.executable).with_name("beit-tools")
ARCH = tiny_arch(Family.CLASSIFICATION, hidden_size=64, intermediate_size=256)  # ~1 MB: several chunks


@pytest.fixture
def checkpoint(tmp_path: Path) -> bytes:
    return write_synthetic(tmp_path / "made.pth", default_spec(ARCH)).read_bytes()


@pytest.fixture
def host():
    with FileHost().running() as server:
        yield server


def run(*args: object, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def online_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Settings for a CLI run that may download, with its own caches and fast retries."""
    env = {
        "BEIT_TOOLS_CACHE": str(tmp_path / "cache"),
        "HF_HOME": str(tmp_path / "hf-home"),
        "BEIT_TOOLS_DOWNLOAD_RETRIES": "2",
        "HF_HUB_DISABLE_XET": "1",
        "COLUMNS": "200",
        "HF_HUB_OFFLINE": "0",
    }
    return env | extra


def process_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The whole environment for a CLI subprocess: this one's, online, with the settings above."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "BEIT_TOOLS_MIRROR", "HF_TOKEN")}
    return env | online_env(tmp_path, **extra)


def cache_files(tmp_path: Path) -> list[str]:
    """Downloaded files (and their records and partials) in the cache, by name."""
    root = tmp_path / "cache"
    kept = [p for folder in ("urls", "variants") for p in (root / folder).rglob("*") if p.is_file()]
    return sorted(p.name for p in kept)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- URLs ----------------------------------------------------------------------------------------


def test_url_converts_then_converts_again_from_the_cache_with_the_server_gone(tmp_path, checkpoint, invoke) -> None:
    env = online_env(tmp_path)
    with FileHost().running() as host:
        url = host.add("releases/my_finetune.pth", checkpoint)
        first = invoke("convert", url, "-o", tmp_path / "out", env=env)
        assert first.exit_code == 0, first.stderr
        assert len(host.gets("releases/my_finetune.pth")) == 1
    provenance = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert provenance["source"]["url"] == url and provenance["source"]["sha256"] == sha256(checkpoint)
    assert cache_files(tmp_path) == ["my_finetune.pth", "my_finetune.pth.json"]
    record = json.loads(next((tmp_path / "cache").rglob("my_finetune.pth.json")).read_text())
    assert record["sha256"] == sha256(checkpoint) and record["url"] == url and record["bytes"] == len(checkpoint)
    second = invoke("convert", url, "-o", tmp_path / "again", env=env)  # the server has stopped
    assert second.exit_code == 0, second.stderr
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (
        tmp_path / "out" / "model.safetensors"
    ).read_bytes()


def test_a_cut_transfer_resumes_with_a_range_request_and_is_byte_identical(tmp_path, host, checkpoint) -> None:
    url = host.add("ckpt.pth", checkpoint, "cut")
    got = fetch(Download((url,), url_path(tmp_path, url)))
    assert got.path.read_bytes() == checkpoint and got.sha256 == sha256(checkpoint)
    ranges = [h.get("Range") for h in host.gets("ckpt.pth")]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert int(ranges[1][6:-1]) > 0  # it asked only for the rest


def test_a_server_that_ignores_the_range_or_changed_the_file_is_fetched_again_whole(tmp_path, host, checkpoint) -> None:
    url = host.add("ckpt.pth", checkpoint, "cut", "ignore-range")
    assert fetch(Download((url,), url_path(tmp_path / "a", url))).path.read_bytes() == checkpoint
    # A partial file of an older version: If-Range no longer matches, so the server sends the new file whole.
    path = url_path(tmp_path / "b", url)
    path.parent.mkdir(parents=True)
    old = b"PK\x03\x04" + os.urandom(300_000)
    path.with_name(path.name + ".partial").write_bytes(old[:200_000])
    path.with_name(path.name + ".partial.json").write_text(json.dumps({"url": url, "validator": '"old"'}))
    assert fetch(Download((url,), path)).path.read_bytes() == checkpoint
    assert host.gets("ckpt.pth")[-1]["If-Range"] == '"old"'


@pytest.mark.parametrize(
    ("serve", "message"),
    [
        (lambda host, data: host.url + "/missing.pth", "404 Not Found"),
        (lambda host, data: host.add("page.pth", b"<!DOCTYPE html><html>Sign in</html>"), "an HTML page"),
        (lambda host, data: host.add("empty.pth", b""), "the body is empty"),
        (lambda host, data: host.add("short.pth", data[: len(data) // 2]), "cut short (its directory is missing)"),
        (lambda host, data: host.add("busy.pth", data, "500", "500"), "500 Internal Server Error (2 attempts)"),
        (lambda host, data: host.add("reset.pth", data, "reset", "reset"), "(2 attempts)"),
        (lambda host, data: f"http://127.0.0.1:{free_port()}/x.pth", "connection refused (2 attempts)"),
        (lambda host, data: host.add("slow.pth", data, "hang", "hang"), "no response within 0.5 s"),
    ],
    ids=["404", "html", "empty", "truncated", "5xx", "reset", "refused", "timeout"],
)
def test_bad_downloads_fail_in_one_line_and_cache_nothing(serve, message, tmp_path, host, checkpoint, invoke) -> None:
    url = serve(host, checkpoint)
    env = online_env(tmp_path, BEIT_TOOLS_HTTP_TIMEOUT="0.5", BEIT_TOOLS_DOWNLOAD_RETRIES="1")
    result = invoke("convert", url, "-o", tmp_path / "out", env=env)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot download") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not (tmp_path / "out").exists()
    assert not [f for f in cache_files(tmp_path) if not f.endswith((".partial", ".partial.json"))]


def test_offline_with_an_empty_cache_says_so(tmp_path, host, checkpoint, invoke) -> None:
    url = host.add("ckpt.pth", checkpoint)
    for args, env in (([url, "--offline"], {"HF_HUB_OFFLINE": "0"}), ([url], {"HF_HUB_OFFLINE": "1"})):
        result = invoke("convert", *args, "-o", tmp_path / "out", env=online_env(tmp_path, **env))
        assert result.exit_code == 1
        assert result.stderr.startswith("error: ckpt.pth is not in the cache") and "offline mode is on" in result.stderr
        assert result.stderr.count("\n") == 1
    assert host.gets("ckpt.pth") == []


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_a_full_disk_during_download_keeps_a_resumable_partial(tmp_path, host, checkpoint) -> None:
    url = host.add("ckpt.pth", checkpoint)
    env = process_env(tmp_path)
    done = subprocess.run(
        [EXE, "convert", url, "-o", tmp_path / "out"],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=_limit_file_size,
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "cannot write the download" in done.stderr and "File too large" in done.stderr
    assert cache_files(tmp_path) == ["ckpt.pth.partial", "ckpt.pth.partial.json"]
    again = run("convert", url, "-o", tmp_path / "out", env=env)
    assert again.returncode == 0, again.stderr
    assert host.gets("ckpt.pth")[-1]["Range"].startswith("bytes=")


def test_ctrl_c_mid_transfer_keeps_a_partial_that_the_next_run_resumes(tmp_path, host, checkpoint) -> None:
    url = host.add("ckpt.pth", checkpoint)
    host.delay = 0.05
    env = process_env(tmp_path)
    proc = subprocess.Popen([EXE, "convert", url, "-o", tmp_path / "out"], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while not [p for p in (tmp_path / "cache").rglob("*.partial") if p.stat().st_size > 100_000]:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and stderr.strip().splitlines()[-1].startswith("error: interrupted")
    assert cache_files(tmp_path) == ["ckpt.pth.partial", "ckpt.pth.partial.json"]
    assert not (tmp_path / "out").exists()
    host.delay = 0.0
    again = run("convert", url, "-o", tmp_path / "out", env=env)
    assert again.returncode == 0, again.stderr
    assert host.gets("ckpt.pth")[-1]["Range"].startswith("bytes=")
    assert next((tmp_path / "cache").rglob("ckpt.pth")).read_bytes() == checkpoint


def test_two_processes_downloading_one_file_share_one_transfer(tmp_path, host, checkpoint) -> None:
    url = host.add("ckpt.pth", checkpoint)
    host.delay = 0.02
    env = process_env(tmp_path)
    procs = [
        subprocess.Popen([EXE, "inspect", url, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outputs]
    assert len(host.gets("ckpt.pth")) == 1
    assert next((tmp_path / "cache").rglob("ckpt.pth")).read_bytes() == checkpoint


def test_threads_in_one_process_are_kept_apart_by_the_lock_too(tmp_path, host, checkpoint) -> None:
    url = host.add("ckpt.pth", checkpoint)
    host.delay = 0.01
    download = Download((url,), url_path(tmp_path, url))
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(fetch(download))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(host.gets("ckpt.pth")) == 1
    assert sorted(r.fetched for r in results) == [False, False, True]  # type: ignore[attr-defined]
    assert cached(download.path).sha256 == sha256(checkpoint)  # type: ignore[union-attr]


def test_the_next_address_is_tried_when_one_fails(tmp_path, host, checkpoint) -> None:
    good = host.add("mirror-b/ckpt.pth", checkpoint)
    got = fetch(Download((host.url + "/mirror-a/ckpt.pth", good), tmp_path / "ckpt.pth"))
    assert got.url == good and got.path.read_bytes() == checkpoint
    with pytest.raises(BeitToolsError, match=r"2 addresses failed: .*404 Not Found; .*404 Not Found"):
        fetch(Download((host.url + "/a/x.pth", host.url + "/b/x.pth"), tmp_path / "x.pth"))


# --- hf:// ---------------------------------------------------------------------------------------


@pytest.fixture
def hub():
    with HubServer().running() as server:
        yield server


def hub_env(tmp_path: Path, hub: HubServer, **extra: str) -> dict[str, str]:
    return process_env(tmp_path, HF_ENDPOINT=hub.url, **extra)


def test_hf_sources_go_through_huggingface_hub_and_its_cache(tmp_path, hub, checkpoint) -> None:
    repo = hub.create("model", "org/beit-ft", {"weights/ft.pth": checkpoint, "README.md": b"# card"})
    env = hub_env(tmp_path, hub)
    result = run("convert", "hf://org/beit-ft/weights/ft.pth", "-o", tmp_path / "out", env=env)
    assert result.returncode == 0, result.stderr
    provenance = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert provenance["source"]["hub"] == {
        "repo_id": "org/beit-ft",
        "repo_type": "model",
        "revision": "main",
        "filename": "weights/ft.pth",
        "commit": repo.refs["main"],
    }
    assert provenance["source"]["sha256"] == sha256(checkpoint)
    snapshot = tmp_path / "hf-home" / "hub" / "models--org--beit-ft" / "snapshots" / repo.refs["main"]
    assert (snapshot / "weights" / "ft.pth").read_bytes() == checkpoint  # huggingface_hub's own cache
    calls = len(hub.log)
    offline = run("inspect", "hf://org/beit-ft/weights/ft.pth", "--offline", env=env)
    assert offline.returncode == 0, offline.stderr
    assert len(hub.log) == calls  # served from the Hub cache without a request


def test_hf_revision_and_a_repo_named_without_a_file(tmp_path, hub, checkpoint) -> None:
    repo = hub.create("model", "org/beit-ft", {"model.pth": b"not used", "README.md": b"x"})
    tagged = repo.commit({"model.safetensors": _safetensors(tmp_path), "model.pth": b"x"}, "v2", repo.refs["main"])
    repo.refs["v2"] = tagged.oid
    env = hub_env(tmp_path, hub)
    result = run("inspect", "hf://org/beit-ft@v2", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["file"]["hub"]["filename"] == "model.safetensors"  # preferred over .pth
    assert json.loads(result.stdout)["file"]["hub"]["commit"] == tagged.oid
    two = hub.create("model", "org/two", {"a.pth": checkpoint, "b.pth": checkpoint})
    assert two
    ambiguous = run("inspect", "hf://org/two", env=env)
    assert ambiguous.returncode == 1 and "holds 2 checkpoint files: a.pth, b.pth" in ambiguous.stderr


def _safetensors(tmp_path: Path) -> bytes:
    from beit_tools.synthetic import make_state_dict, save_safetensors

    return save_safetensors(make_state_dict(ARCH, save_index=False), tmp_path / "timm.safetensors").read_bytes()


@pytest.mark.parametrize(
    ("address", "extra", "message"),
    [
        ("hf://org/nope/x.pth", {}, "hf://org/nope/x.pth: no such repository on http://127.0.0.1:"),
        ("hf://org/beit-ft/nope.pth", {}, "hf://org/beit-ft/nope.pth: no such file in the repository"),
        ("hf://org/beit-ft@v9/ft.pth", {}, "hf://org/beit-ft@v9/ft.pth: no such revision"),
        ("hf://org/beit-ft/ft.pth", {"HF_HUB_OFFLINE": "1"}, "is not in the Hugging Face cache and offline mode is on"),
        ("hf://bad address", {}, "'hf://bad address' is not an hf:// address"),
    ],
)
def test_hf_failures_are_one_line(address, extra, message, tmp_path, hub, checkpoint) -> None:
    hub.create("model", "org/beit-ft", {"ft.pth": checkpoint})
    result = run("convert", address, "-o", tmp_path / "out", env=hub_env(tmp_path, hub, **extra))
    assert result.returncode == (2 if "not an hf://" in message else 1)
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_hub_failures_name_the_cause() -> None:
    """Real exceptions of the libraries, mapped to one line each (an unreachable Hub is retried for ~25 s
    by huggingface_hub itself, too slow to wait for in the suite)."""
    import httpx2
    from huggingface_hub.errors import LocalEntryNotFoundError

    from beit_tools.core.hub import hub_error

    with pytest.raises(httpx2.ConnectError) as refused:
        httpx2.get(f"http://127.0.0.1:{free_port()}/api/whoami-v2")
    assert hub_error(refused.value, "x").message.startswith("cannot reach https://huggingface.co (")
    local = LocalEntryNotFoundError("not cached")
    assert hub_error(local, "hf://o/r/f").message == (
        "hf://o/r/f is not in the Hugging Face cache, and https://huggingface.co cannot be reached"
    )
    assert "offline mode is on" in hub_error(local, "hf://o/r/f", offline=True).message
