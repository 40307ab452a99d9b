"""Opening checkpoints: formats, containers, prefixes, safe unpickling and damaged files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from beit_tools.core.arch import Family
from beit_tools.core.checkpoint import open_checkpoint
from beit_tools.errors import BeitToolsError
from beit_tools.synthetic import (
    default_spec,
    make_checkpoint,
    make_state_dict,
    save_checkpoint,
    save_safetensors,
    tiny_arch,
    write_synthetic,
)

ARCH = tiny_arch(Family.CLASSIFICATION)


class RunsCode:
    """Unpickling this would create a marker file: the canary for code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@dataclass
class CustomExtra:
    note: str


@pytest.mark.parametrize(
    ("container", "prefix", "weights_from", "stripped"),
    [
        ("model", "", "model", ()),
        ("module", "", "module", ()),
        ("model", "module.", "model", ("module.",)),
        ("raw", "", "(top level)", ()),
        ("state_dict", "", "state_dict", ()),
    ],
)
def test_containers_and_prefixes(container, prefix, weights_from, stripped, tmp_path: Path) -> None:
    spec = default_spec(ARCH).with_(container=container, key_prefix=prefix)
    ckpt = open_checkpoint(write_synthetic(tmp_path / "c.pth", spec))
    assert ckpt.weights_from == weights_from
    assert ckpt.stripped_prefixes == stripped
    assert set(ckpt.source_keys) == set(make_state_dict(ARCH))
    assert all(stored == f"{prefix}{key}" for key, stored in ckpt.source_keys.items())


def test_mmseg_file_strips_backbone_prefix_and_reads_meta(tmp_path: Path) -> None:
    arch = tiny_arch(Family.SEGMENTATION)
    ckpt = open_checkpoint(write_synthetic(tmp_path / "seg.pth", default_spec(arch)))
    assert ckpt.stripped_prefixes == ("backbone.",)
    assert ckpt.source_keys["blocks.0.norm1.weight"] == "backbone.blocks.0.norm1.weight"
    assert ckpt.source_keys["decode_head.conv_seg.weight"] == "decode_head.conv_seg.weight"
    assert len(ckpt.meta["classes"]) == arch.num_labels
    assert "out_indices=[0, 1, 2, 3]" in ckpt.meta["config_text"]
    assert {e.key: e.kind for e in ckpt.container}["meta"] == "mmseg meta"


def test_training_checkpoint_loads_safely_and_describes_its_container(tmp_path: Path) -> None:
    spec = default_spec(ARCH).with_(training_extras=True)
    ckpt = open_checkpoint(write_synthetic(tmp_path / "train.pth", spec))
    entries = {e.key: e for e in ckpt.container}
    assert entries["model"].summary == f"{len(make_state_dict(ARCH))} tensors"
    assert entries["epoch"].summary == "99"
    assert entries["args"].kind == "training args" and "nb_classes=5" in entries["args"].summary
    assert ckpt.meta["args"]["input_size"] == ARCH.image_size


def test_legacy_format_and_safetensors_sources(tmp_path: Path) -> None:
    legacy = open_checkpoint(write_synthetic(tmp_path / "legacy.pth", default_spec(ARCH), legacy=True))
    assert legacy.format == "torch-legacy"
    sd = make_state_dict(ARCH, save_index=False)
    st = open_checkpoint(save_safetensors(sd, tmp_path / "timm.safetensors"))
    assert st.format == "safetensors"
    assert st.infos["head.weight"].shape == (5, 32)
    assert torch.equal(st.tensor("head.weight"), sd["head.weight"])


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_pickle_that_runs_code_is_refused_and_never_runs(legacy: bool, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    obj = make_checkpoint(default_spec(ARCH))
    obj["payload"] = RunsCode(marker)
    path = save_checkpoint(obj, tmp_path / "evil.pth", legacy=legacy)
    with pytest.raises(BeitToolsError) as err:
        open_checkpoint(path)
    assert "posix.system" in err.value.message
    assert "--trust-checkpoint" in (err.value.hint or "")
    assert not marker.exists()


def test_trust_checkpoint_loads_other_classes(tmp_path: Path) -> None:
    obj = make_checkpoint(default_spec(ARCH))
    obj["extra"] = CustomExtra("kept by a training script")
    path = save_checkpoint(obj, tmp_path / "custom.pth")
    with pytest.raises(BeitToolsError, match="CustomExtra"):
        open_checkpoint(path)
    assert open_checkpoint(path, trust=True).weights_from == "model"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p, "no such file"),
        (lambda p: (p.mkdir(), p)[1], "is a directory"),
        (lambda p: (p.write_bytes(b""), p)[1], "is empty"),
        (lambda p: (p.write_bytes(os.urandom(4096)), p)[1], "not a PyTorch or safetensors checkpoint"),
    ],
    ids=["missing", "directory", "empty", "random-bytes"],
)
def test_unusable_paths(make, message: str, tmp_path: Path) -> None:
    with pytest.raises(BeitToolsError, match=message):
        open_checkpoint(make(tmp_path / "x.pth"))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_truncated_files(legacy: bool, tmp_path: Path) -> None:
    path = write_synthetic(tmp_path / "t.pth", default_spec(ARCH), legacy=legacy)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BeitToolsError, match=r"damaged|truncated"):
        open_checkpoint(path)


def test_ema_requested_but_absent(tmp_path: Path) -> None:
    with pytest.raises(BeitToolsError, match="model_ema"):
        open_checkpoint(write_synthetic(tmp_path / "c.pth", default_spec(ARCH)), use_ema=True)
