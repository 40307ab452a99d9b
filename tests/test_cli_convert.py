"""`beit-tools convert` as a user runs it: exit codes, one-line errors, tables and JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from beit_tools.core.arch import Family
from beit_tools.synthetic import default_spec, tiny_arch, write_synthetic


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    spec = default_spec(tiny_arch(Family.CLASSIFICATION)).with_(training_extras=True)
    return write_synthetic(tmp_path / "beit_ft.pth", spec)


def test_convert_prints_summary_and_mapping(invoke, checkpoint: Path, tmp_path: Path) -> None:
    result = invoke("convert", checkpoint, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    for text in ("image-classification → BeitForImageClassification", "qkv split", "position index", "total"):
        assert text in result.stdout
    assert "37 renamed, 2 split, 2 dropped, 0 unused, 0 missing" in result.stdout
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_json_output_is_one_object_on_stdout(invoke, checkpoint: Path, tmp_path: Path) -> None:
    result = invoke("convert", checkpoint, "-o", tmp_path / "out", "--json", "--dtype", "float16")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["family"] == "image-classification"
    assert data["dtype"] == "float16"
    assert data["config"]["num_attention_heads"] == 2
    assert data["plan"]["counts"] == {"renamed": 37, "split": 2, "dropped": 2, "added": 0, "unused": 0, "missing": 0}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.pth"], "error: no such file"),
        (["{ckpt}", "-o", "{out}", "--labels", "nolabels.json"], "error: cannot read labels file"),
        (["{ckpt}", "-o", "{out}", "--num-heads", "3"], "error: --num-heads 3 contradicts"),
    ],
)
def test_errors_are_one_line_exit_1_and_write_nothing(invoke, args, message, checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke("convert", *[a.format(ckpt=checkpoint, out=out) for a in args])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_usage_errors_exit_2(invoke, checkpoint: Path) -> None:
    assert invoke("convert", checkpoint, "--dtype", "int8").exit_code == 2
    assert invoke("convert", checkpoint, "--max-shard-size", "lots").exit_code == 2


def test_debug_shows_the_traceback(runner, tmp_path: Path) -> None:
    from beit_tools.cli.app import app

    result = runner.invoke(app, ["convert", str(tmp_path / "missing.pth"), "--debug"])
    assert result.exit_code == 1
    assert result.exception is not None and "no such file" in str(result.exception)


def test_help_is_instant_because_torch_is_not_imported() -> None:
    code = "import sys, beit_tools.cli.app; sys.exit('torch' in sys.modules or 'transformers' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_console_script_runs(checkpoint: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("beit-tools")
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run([exe, "convert", checkpoint, "-o", tmp_path / "o"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout
    bad = subprocess.run([exe, "convert", tmp_path / "nope.pth"], capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


@pytest.mark.parametrize(
    ("command", "phrase"),
    [
        ("convert", "(default: the source's)"),
        ("verify", "(default: a synthetic one)"),
        ("inspect", "exactly what `convert` would do"),
    ],
)
def test_help_texts_render_in_full(invoke, command: str, phrase: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert phrase in " ".join(result.stdout.replace("│", " ").split())
