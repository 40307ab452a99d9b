"""`beit-tools inspect`: the report's facts against the factory's truth, its warnings, and bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from beit_tools.core.arch import Family
from beit_tools.synthetic import (
    default_spec,
    make_checkpoint,
    make_state_dict,
    save_checkpoint,
    save_safetensors,
    tiny_abs_pos_arch,
    tiny_arch,
    write_synthetic,
)

SPECS = {
    "mim": default_spec(tiny_arch(Family.MIM)),
    "classification-training": default_spec(tiny_arch(Family.CLASSIFICATION)).with_(training_extras=True),
    "classification-module-prefix": default_spec(tiny_arch(Family.CLASSIFICATION, use_mean_pooling=False)).with_(
        container="module", key_prefix="module."
    ),
    "classification-raw": default_spec(tiny_arch(Family.CLASSIFICATION, image_size=48)).with_(container="raw"),
    "segmentation-mmseg": default_spec(tiny_arch(Family.SEGMENTATION)),
}


def as_json(value):
    return json.loads(json.dumps(value))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_json_report_matches_the_factory(name: str, invoke, tmp_path: Path) -> None:
    spec = SPECS[name]
    path = write_synthetic(tmp_path / "c.pth", spec)
    result = invoke("inspect", path, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    truth = make_state_dict(spec.arch, spec.seed)
    assert report["family"] == spec.arch.family.value
    assert report["config"] == as_json(spec.arch.config_fields())
    assert report["container"]["weights_from"] == ("(top level)" if spec.container == "raw" else spec.container)
    assert sum(g["tensors"] for g in report["groups"]) == len(truth)
    assert sum(g["parameters"] for g in report["groups"]) == sum(
        t.numel() for t in truth.values() if t.is_floating_point()
    )
    keys = report["plan"]["keys"]
    assert {k["key"] for k in keys if k["op"] != "added"} == set(truth)
    layers = spec.arch.num_hidden_layers
    # segmentation: one pass-through layer, so transformers feeds its FPN the original's last block
    added = {f"blocks.{layers}.{k.split('.', 2)[2]}" for k in truth if k.startswith("blocks.0.") and "index" not in k}
    assert {k["key"] for k in keys if k["op"] == "added"} == (
        added if spec.arch.family is Family.SEGMENTATION else set()
    )
    assert report["convertible"] is True and report["problems"] == []
    assert report["plan"]["hf_class"] == spec.arch.hf_class
    patch = spec.arch.patch_size
    assert report["evidence"]["hidden_size"] == {
        "value": 32,
        "source": f"patch_embed.proj.weight [32, 3, {patch}, {patch}]",
        "kind": "measured",
    }


def test_container_and_loading_facts(invoke, tmp_path: Path) -> None:
    path = write_synthetic(tmp_path / "c.pth", SPECS["classification-training"])
    report = json.loads(invoke("inspect", path, "--json").stdout)
    entries = {e["key"]: e for e in report["container"]["entries"]}
    assert entries["epoch"]["summary"] == "99"
    assert "nb_classes=5" in entries["args"]["summary"]
    assert report["file"]["loaded_with"] == "weights-only"
    assert report["file"]["classes"] == ["argparse.Namespace"]
    seg = write_synthetic(tmp_path / "s.pth", SPECS["segmentation-mmseg"])
    report = json.loads(invoke("inspect", seg, "--json").stdout)
    assert report["container"]["stripped_prefixes"] == ["backbone."]
    assert report["evidence"]["out_indices"]["kind"] == "file"
    features = report["plan"]["features"]
    assert features["faithful"] and features["original"] == [0, 1, 2, 3] and features["added_layers"] == 1
    assert features["out_indices"] == [2, 3, 4, 5] and features["fed"] == ["block 0", "block 1", "block 2", "block 3"]
    hub = json.loads(invoke("inspect", seg, "--json", "--feature-indices", "transformers").stdout)
    assert hub["plan"]["features"]["fed"] == ["block 3", "embeddings", "block 0", "block 1"]
    assert any("(--feature-indices faithful avoids it)" in w for w in hub["warnings"])
    assert {g["name"] for g in report["groups"]} == {"embeddings", "blocks", "fpn", "decode head", "auxiliary head"}


def test_rich_report_shows_evidence_and_conventions(invoke, tmp_path: Path) -> None:
    arch = tiny_abs_pos_arch(Family.MIM)
    result = invoke("inspect", write_synthetic(tmp_path / "pt.pth", default_spec(arch)))
    assert result.exit_code == 0
    out = result.stdout
    assert "masked-image-modeling → BeitForMaskedImageModeling" in out
    assert "convention: no relative position table, so head dim 64 is assumed (128/64)" in out
    assert "pos_embed [1, 17, 128]" in out
    assert "✓ convert would write BeitForMaskedImageModeling" in out


def test_unused_and_missing_are_shown_and_exit_1(invoke, tmp_path: Path) -> None:
    obj = make_checkpoint(default_spec(tiny_arch(Family.CLASSIFICATION)))
    obj["model"]["teacher.head.weight"] = torch.zeros(2, 2)
    del obj["model"]["blocks.1.norm1.weight"]
    path = save_checkpoint(obj, tmp_path / "odd.pth")
    result = invoke("inspect", path)
    assert result.exit_code == 1
    assert re.search(r"teacher\.head\.weight\s+│ unused", result.stdout)
    assert re.search(r"blocks\.1\.norm1\.weight\s+│ missing", result.stdout)
    assert "✗ convert would refuse this file" in result.stdout
    report = json.loads(invoke("inspect", path, "--json").stdout)
    assert report["plan"]["unused"] == ["teacher.head.weight"]
    assert report["plan"]["missing"] == ["blocks.1.norm1.weight"]
    assert report["plan"]["counts"]["unused"] == 1 and report["plan"]["counts"]["missing"] == 1
    assert report["convertible"] is False


def test_keys_table_lists_every_tensor(invoke, tmp_path: Path) -> None:
    path = write_synthetic(tmp_path / "c.pth", SPECS["classification-training"])
    out = invoke("inspect", path, "--keys").stdout
    assert "blocks.1.attn.qkv.weight" in out and "beit.encoder.layer.1.attention.attention.value.weight" in out
    assert "[96, 32]" in out


def test_warnings_for_half_precision_nan_and_window_conflicts(invoke, tmp_path: Path) -> None:
    spec = default_spec(tiny_arch(Family.CLASSIFICATION)).with_(dtype=torch.float16)
    obj = make_checkpoint(spec)
    obj["model"]["blocks.0.mlp.fc1.bias"][3] = float("nan")
    obj["model"]["pos_embed"] = torch.zeros(1, 37, 32, dtype=torch.float16)  # a 6x6 grid beside a 4x4 table
    report = json.loads(invoke("inspect", save_checkpoint(obj, tmp_path / "h.pth"), "--json").stdout)
    warnings = " | ".join(report["warnings"])
    assert "float16 weights" in warnings
    assert "NaN or Inf (sampled): blocks.0.mlp.fc1.bias" in warnings
    assert any("disagree on the window" in p for p in report["problems"])


def test_safetensors_source(invoke, tmp_path: Path) -> None:
    path = save_safetensors(make_state_dict(tiny_arch(Family.MIM), save_index=False), tmp_path / "m.safetensors")
    report = json.loads(invoke("inspect", path, "--json").stdout)
    assert report["file"]["format"] == "safetensors" and report["family"] == "masked-image-modeling"


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "is empty"), (b"garbage" * 100, "not a PyTorch or safetensors checkpoint")],
)
def test_bad_input_is_one_line(content: bytes, message: str, invoke, tmp_path: Path) -> None:
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    result = invoke("inspect", path)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pth"]


def test_inspect_does_not_import_transformers(tmp_path: Path) -> None:
    path = write_synthetic(tmp_path / "c.pth", SPECS["classification-training"])
    code = (
        "import sys; from beit_tools.core.inspection import inspect_checkpoint; "
        f"inspect_checkpoint({str(path)!r}); sys.exit('transformers' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_use_ema_reports_the_ema_weights(invoke, tmp_path: Path) -> None:
    spec = default_spec(tiny_arch(Family.CLASSIFICATION)).with_(container="model_ema")
    path = write_synthetic(tmp_path / "ema.pth", spec)
    report = json.loads(invoke("inspect", path, "--json", "--use-ema").stdout)
    assert report["container"]["weights_from"] == "model_ema"
    assert {e["key"] for e in report["container"]["entries"]} == {"model", "model_ema"}
