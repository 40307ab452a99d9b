"""Ops as objects: each op's targets, its exact inverse and its byte ranges agree with each other."""

from __future__ import annotations

import pytest
import torch

from beit_tools.core.arch import Family
from beit_tools.core.dtypes import BFLOAT16, FLOAT16, FLOAT32, INT64
from beit_tools.core.ops import DROP, RENAME, SPLIT, Cast
from beit_tools.core.plan import KeyMapping, Plan
from beit_tools.errors import BeitToolsError
from beit_tools.synthetic import tiny_arch


@pytest.mark.parametrize(("op", "shape", "count"), [(RENAME, (6, 4), 1), (SPLIT, (12, 5), 3), (RENAME, (7,), 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_targets_invert_exactly_and_are_the_byte_ranges_of_the_source(op, shape, count, dtype) -> None:
    source = torch.randn(shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    targets = op.produce(source, count)
    assert [tuple(t.shape) for t in targets] == op.target_shapes(shape, count)
    assert torch.equal(op.invert(targets), source)
    raw = source.contiguous().view(torch.uint8).reshape(-1)
    for target, (offset, length) in zip(targets, op.byte_ranges(shape, dtype.itemsize, count), strict=True):
        assert torch.equal(target.contiguous().view(torch.uint8).reshape(-1), raw[offset : offset + length])


def test_split_order_matters_to_the_inverse() -> None:
    source = torch.arange(12.0).reshape(6, 2)
    query, key, value = SPLIT.produce(source, 3)
    assert torch.equal(query, source[:2]) and torch.equal(value, source[4:])
    assert not torch.equal(SPLIT.invert([key, query, value]), source)
    with pytest.raises(ValueError, match="do not split"):
        SPLIT.target_shapes((7, 2), 3)


def test_drop_writes_nothing_and_casts_know_when_they_are_lossless() -> None:
    assert DROP.target_shapes((3, 3), 0) == [] and not DROP.writes
    half = Cast(FLOAT16)
    assert half.target_dtype(INT64) == INT64 and half.target_dtype(FLOAT32) == FLOAT16
    assert not half.lossless(FLOAT32) and Cast(FLOAT32).lossless(FLOAT16)
    assert Cast(FLOAT32).lossless(BFLOAT16) and not half.lossless(BFLOAT16)


def test_two_sources_mapped_to_one_target_fail() -> None:
    def mapping(key: str) -> KeyMapping:
        return KeyMapping(key, key, "test rule", RENAME, ("classifier.weight",), "", (5, 32), FLOAT32)

    plan = Plan(tiny_arch(Family.CLASSIFICATION), [mapping("head.weight"), mapping("head2.weight")])
    with pytest.raises(
        BeitToolsError, match=r"two source tensors map to classifier\.weight: head\.weight and head2\.weight"
    ):
        plan.target_tensors(Cast(FLOAT32))
