"""Every bad input gets one clear line, exit 1, no traceback and no output; pickles never run code;
an interrupted or concurrent conversion leaves nothing half-written."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from beit_tools.core.arch import Arch, Family
from beit_tools.synthetic import default_spec, make_checkpoint, save_checkpoint, tiny_arch, write_synthetic
from tests.test_checkpoint import RunsCode

EXE = Path(sys.executable).with_name("beit-tools")
ARCH = tiny_arch(Family.CLASSIFICATION)


def _checkpoint_with(tmp: Path, edit) -> Path:
    obj = make_checkpoint(default_spec(ARCH))
    edit(obj["model"])
    return save_checkpoint(obj, tmp / "edited.pth")


def _file(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def _folder(tmp: Path, name: str) -> Path:
    path = tmp / name
    path.mkdir()
    return path


def _truncated(tmp: Path, legacy: bool) -> Path:
    path = write_synthetic(tmp / "t.pth", default_spec(ARCH), legacy=legacy)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


BAD_INPUTS = {
    "missing": (lambda t: t / "missing.pth", "no such file"),
    "directory": (lambda t: _folder(t, "dir.pth"), "is a directory"),
    "empty": (lambda t: _file(t, "e.pth", b""), "is empty"),
    "random-bytes": (lambda t: _file(t, "r.pth", os.urandom(1 << 14)), "not a PyTorch or safetensors checkpoint"),
    "truncated-zip": (lambda t: _truncated(t, legacy=False), "damaged"),
    "damaged-legacy": (lambda t: _truncated(t, legacy=True), "cannot be read as a torch-legacy checkpoint"),
    "not-beit": (
        lambda t: save_checkpoint(
            {"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.weight": torch.zeros(10, 8)}, t / "r.pth"
        ),
        "not a BEiT checkpoint: no cls_token, patch_embed or blocks.N.attn.qkv; "
        "its 2 tensors are grouped under conv1, fc",
    ),
    "missing-tensor": (
        lambda t: _checkpoint_with(t, lambda w: w.pop("blocks.1.norm2.bias")),
        "lacks 1 tensor(s) this architecture needs: blocks.1.norm2.bias",
    ),
    "wrong-shape": (
        lambda t: _checkpoint_with(t, lambda w: w.__setitem__("head.weight", torch.zeros(5, 31))),
        "head.weight has shape [5, 31], but the architecture needs [5, 32]",
    ),
    "inconsistent-layers": (
        lambda t: _checkpoint_with(t, lambda w: w.__setitem__("blocks.1.mlp.fc2.weight", torch.zeros(32, 64))),
        "blocks.1.mlp.fc2.weight has shape [32, 64], but the architecture needs [32, 128]",
    ),
}
ONE_LINE = {"missing", "directory", "empty", "random-bytes", "truncated-zip", "damaged-legacy", "not-beit"}


def _command(name: str, source: Path, out: Path) -> list[object]:
    return {
        "convert": ["convert", source, "-o", out],
        "inspect": ["inspect", source],
        "verify": ["verify", out, "--against", source],
    }[name]


@pytest.fixture(scope="module")
def converted_folder(tmp_path_factory) -> Path:
    """A good converted folder, for `verify --against <bad source>`."""
    from beit_tools.core.convert import ConvertOptions, convert

    tmp = tmp_path_factory.mktemp("good")
    convert(ConvertOptions(write_synthetic(tmp / "good.pth", default_spec(ARCH)), tmp / "out"))
    return tmp / "out"


@pytest.mark.parametrize("command", ["convert", "inspect", "verify"])
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input(case: str, command: str, invoke, tmp_path: Path, converted_folder: Path) -> None:
    make, message = BAD_INPUTS[case]
    source = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = converted_folder if command == "verify" else tmp_path / "out"
    result = invoke(*_command(command, source, out))
    assert result.exit_code == 1
    assert "Traceback" not in result.stdout + result.stderr
    if case in ONE_LINE or command != "inspect":
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
        assert result.stdout == ""
    else:  # inspect reports what a BEiT file lacks inside its report, in red
        problems = [line for line in result.stdout.splitlines() if line.startswith("problem:")]
        assert len(problems) == 1 and message in problems[0], result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("command", ["convert", "inspect", "verify"])
def test_a_pickle_that_runs_code_never_runs(command: str, invoke, tmp_path: Path, converted_folder: Path) -> None:
    marker = tmp_path / "marker"
    obj = make_checkpoint(default_spec(ARCH).with_(training_extras=True))
    obj["hook"] = RunsCode(marker)
    source = save_checkpoint(obj, tmp_path / "evil.pth")
    out = converted_folder if command == "verify" else tmp_path / "out"
    result = invoke(*_command(command, source, out))
    assert result.exit_code == 1
    assert "posix.system" in result.stderr and "--trust-checkpoint" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_trust_checkpoint_says_what_it_did(invoke, tmp_path: Path) -> None:
    result = invoke(
        "convert", write_synthetic(tmp_path / "c.pth", default_spec(ARCH)), "-o", tmp_path / "o", "--trust-checkpoint"
    )
    assert result.exit_code == 0
    assert "loaded with full pickle (--trust-checkpoint)" in result.stdout


def test_nan_weights_warn_in_convert(invoke, tmp_path: Path) -> None:
    source = _checkpoint_with(tmp_path, lambda w: w["blocks.0.norm1.bias"].__setitem__(0, float("inf")))
    result = invoke("convert", source, "-o", tmp_path / "out")
    assert result.exit_code == 0
    assert "1 tensor(s) hold NaN or Inf: blocks.0.norm1.bias" in result.stdout


def test_output_under_a_file_is_one_line(invoke, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    source = write_synthetic(tmp_path / "c.pth", default_spec(ARCH))
    result = invoke("convert", source, "-o", tmp_path / "afile" / "out")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: cannot write {tmp_path / 'afile' / 'out'}: {tmp_path / 'afile'} is a file")
    assert result.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "c.pth"]


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_a_full_output_location_leaves_nothing(tmp_path: Path) -> None:
    """The process may write at most 100 kB per file: the weights do not fit, as on a full disk."""
    source = write_synthetic(tmp_path / "c.pth", default_spec(ARCH))
    done = subprocess.run(
        [EXE, "convert", source, "-o", tmp_path / "out"], capture_output=True, text=True, preexec_fn=_limit_file_size
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: cannot write {tmp_path / 'out'}: File too large")
    assert done.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pth"]


# --- interrupts and concurrent runs on a BEiT-base-sized checkpoint ------------------------------

BASE = Arch(Family.CLASSIFICATION, use_relative_position_bias=True, num_labels=1000)


@pytest.fixture(scope="module")
def base_checkpoint(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("base") / "beit_base.pth", default_spec(BASE))


def _start_and_pause_mid_write(source: Path, out: Path) -> subprocess.Popen:
    """Start a conversion and freeze it while its weights file is partly written."""
    proc = subprocess.Popen(
        [EXE, "convert", source, "-o", out], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    partial = out.parent / f".{out.name}.partial" / "model.safetensors"
    deadline = time.monotonic() + 300
    while not (partial.exists() and partial.stat().st_size > 1 << 20):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the conversion never started writing"
        time.sleep(0.001)
    proc.send_signal(signal.SIGSTOP)
    assert partial.stat().st_size < source.stat().st_size // 2, "caught too late to be mid-write"
    return proc


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_mid_write_leaves_nothing(sig, code: int, base_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _start_and_pause_mid_write(base_checkpoint, out)
    proc.send_signal(sig)
    proc.send_signal(signal.SIGCONT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == code
    assert stderr.strip() == "error: interrupted; nothing was written"
    assert list(tmp_path.iterdir()) == []


def test_two_conversions_into_one_output(base_checkpoint: Path, tmp_path: Path, invoke) -> None:
    out = tmp_path / "out"
    first = _start_and_pause_mid_write(base_checkpoint, out)
    try:
        second = invoke("convert", base_checkpoint, "-o", out, "--overwrite")
        assert second.exit_code == 1
        assert second.stderr.startswith(f"error: another beit-tools process (pid {first.pid}) is writing {out} now")
    finally:
        first.send_signal(signal.SIGCONT)
    first.communicate(timeout=300)
    assert first.returncode == 0
    import transformers

    _, info = transformers.BeitForImageClassification.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_run_killed_outright_does_not_block_the_next(tmp_path: Path) -> None:
    """SIGKILL cannot be caught; its leftover folder names a dead owner and is cleared by the next run."""
    from beit_tools.core.convert import ConvertOptions, convert

    stale = tmp_path / ".out.partial"
    stale.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (stale / ".owner").write_text(str(dead.pid))
    (stale / "model.safetensors").write_bytes(b"half")
    convert(ConvertOptions(write_synthetic(tmp_path / "c.pth", default_spec(ARCH)), tmp_path / "out"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pth", "out"]


def test_output_that_holds_the_source_or_the_current_folder_is_refused(invoke, tmp_path: Path, monkeypatch) -> None:
    source = write_synthetic(tmp_path / "c.pth", default_spec(ARCH))
    result = invoke("convert", source, "-o", tmp_path, "--overwrite")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: output {tmp_path} holds {source}; writing there would replace it")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for out in (".", ".."):
        result = invoke("convert", source, "-o", out, "--overwrite")
        assert result.exit_code == 1 and "holds" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pth", "work"]
    assert list(work.iterdir()) == []
