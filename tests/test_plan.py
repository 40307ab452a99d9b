"""The plan accounts for every source key; what it cannot place is named before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from beit_tools.core.analysis import analyse
from beit_tools.core.arch import Family
from beit_tools.core.convert import ConvertOptions, convert
from beit_tools.core.rules import HEADS, rules_for
from beit_tools.errors import BeitToolsError
from beit_tools.synthetic import default_spec, make_checkpoint, save_checkpoint, tiny_arch


def checkpoint_with(tmp_path: Path, family: Family = Family.CLASSIFICATION, edit=None) -> Path:
    obj = make_checkpoint(default_spec(tiny_arch(family)))
    weights = obj["state_dict" if family is Family.SEGMENTATION else "model"]
    if edit:
        edit(weights)
    return save_checkpoint(obj, tmp_path / "edited.pth")


@pytest.mark.parametrize("family", list(Family))
def test_every_source_key_is_accounted_for(family: Family, tmp_path: Path) -> None:
    analysis = analyse(checkpoint_with(tmp_path, family))
    plan = analysis.plan
    assert {m.key for m in plan.mappings if not m.added} == set(analysis.checkpoint.source_keys)
    assert not plan.unused and not plan.missing and not plan.wrong_shapes and not plan.index_mismatches
    counts = plan.counts()
    assert counts["split"] == analysis.detection.arch.num_hidden_layers
    assert counts["dropped"] == sum(k.endswith("relative_position_index") for k in analysis.checkpoint.source_keys)
    assert sum(counts.values()) == len(plan.mappings)
    # a segmentation model gets one pass-through layer, so transformers reaches the original's last block
    assert counts["added"] == (16 if family is Family.SEGMENTATION else 0)


def test_unused_keys_fail_unless_allowed(tmp_path: Path) -> None:
    def add_extra(w):
        w["teacher.proj.weight"] = torch.zeros(3, 3)

    path = checkpoint_with(tmp_path, edit=add_extra)
    with pytest.raises(BeitToolsError, match=r"1 tensor\(s\) have no place.*teacher.proj.weight") as err:
        convert(ConvertOptions(path, tmp_path / "out"))
    assert "--allow-unused" in err.value.hint
    assert not (tmp_path / "out").exists()
    result = convert(ConvertOptions(path, tmp_path / "out", allow_unused=True))
    assert result.analysis.plan.counts()["unused"] == 1


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    path = checkpoint_with(tmp_path, edit=lambda w: w.pop("blocks.1.norm2.bias"))
    with pytest.raises(BeitToolsError, match=r"lacks 1 tensor\(s\).*blocks.1.norm2.bias"):
        convert(ConvertOptions(path, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_wrong_shape_names_both_shapes(tmp_path: Path) -> None:
    def widen(w):
        w["blocks.1.mlp.fc1.weight"] = torch.zeros(100, 32)

    with pytest.raises(BeitToolsError, match=r"blocks.1.mlp.fc1.weight has shape \[100, 32\].*needs \[128, 32\]"):
        convert(ConvertOptions(checkpoint_with(tmp_path, edit=widen), tmp_path / "out"))


def test_non_standard_index_buffer_is_not_dropped_silently(tmp_path: Path) -> None:
    def scramble(w):
        w["blocks.0.attn.relative_position_index"] = w["blocks.0.attn.relative_position_index"].flip(0)

    with pytest.raises(BeitToolsError, match="relative_position_index differs from the index transformers recomputes"):
        convert(ConvertOptions(checkpoint_with(tmp_path, edit=scramble), tmp_path / "out"))


def test_every_family_has_its_own_heads_after_the_shared_rules() -> None:
    for family in Family:
        rules = rules_for(family)
        assert rules[-len(HEADS[family]) :] == HEADS[family]
        assert len({r.name for r in rules}) == len(rules)


def test_schema_check_names_what_transformers_would_miss() -> None:
    from beit_tools.core.detect import detect
    from beit_tools.core.dtypes import FLOAT32
    from beit_tools.core.ops import Cast
    from beit_tools.core.plan import make_plan
    from beit_tools.core.schema import beit_config, check_schema, target_schema
    from tests.test_detect import infos_of

    arch = tiny_arch(Family.CLASSIFICATION)
    infos = infos_of(arch)
    plan = make_plan(detect(infos), infos, {k: k for k in infos})
    produced = {t.key: t.shape for t in plan.target_tensors(Cast(FLOAT32))}
    schema = target_schema(beit_config(arch))
    assert produced == schema
    check_schema(produced, schema)
    produced.pop("beit.encoder.layer.1.lambda_2")
    produced["classifier.weight"] = (4, 32)
    with pytest.raises(BeitToolsError, match=r"does not write: beit.encoder.layer.1.lambda_2.*classifier.weight"):
        check_schema(produced, schema)
