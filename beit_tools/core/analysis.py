"""A checkpoint understood: opened, detected and planned. `inspect` shows it; `convert` executes it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beit_tools.core.arch import BEIT
from beit_tools.core.checkpoint import Checkpoint, open_checkpoint
from beit_tools.core.detect import Detection, Evidence, detect
from beit_tools.core.dtypes import HALF, dtype_name
from beit_tools.core.features import FAITHFUL, layout_for
from beit_tools.core.plan import Plan, make_plan


@dataclass
class Analysis:
    """What a checkpoint is and what conversion would do with each of its tensors."""

    checkpoint: Checkpoint
    detection: Detection
    plan: Plan


def analyse(
    source: str | Path,
    *,
    trust_checkpoint: bool = False,
    use_ema: bool = False,
    image_size: int | None = None,
    num_heads: int | None = None,
    pool_scales: tuple[int, ...] | None = None,
    feature_indices: str = FAITHFUL,
    known: dict[str, Evidence] | None = None,
) -> Analysis:
    ckpt = open_checkpoint(source, trust=trust_checkpoint, use_ema=use_ema)
    detection = detect(
        ckpt.infos, ckpt.meta, image_size=image_size, num_heads=num_heads, pool_scales=pool_scales, known=known
    )
    features = layout_for(detection.arch, feature_indices)
    plan = make_plan(detection, ckpt.infos, ckpt.source_keys, read=ckpt.array, features=features)
    return Analysis(ckpt, detection, plan)


def source_warnings(ckpt: Checkpoint) -> list[str]:
    """What a user should know about the source whatever the command: how it was unpickled, its precision."""
    out = []
    if ckpt.loaded_with == "full pickle":
        out.append("loaded with full pickle (--trust-checkpoint): code in the file, if any, has run")
    half = sorted({dtype_name(i.dtype) for i in ckpt.infos.values() if i.dtype in HALF})
    if half:
        # lossless to convert, but comparisons with an fp32 original hold only to half precision
        out.append(f"{'/'.join(half)} weights: a converted model matches the original only to half precision")
    return out


def stated(flavor: str | None = None, normalization: str | None = None, variant: Any = None) -> dict[str, Evidence]:
    """What the user or the registry says about the model, as evidence detection takes over the file's."""
    out: dict[str, Evidence] = {}
    if variant is not None:
        out["normalization"] = Evidence(variant.normalization, f"the registry entry {variant.name}", "registry")
        out["flavor"] = Evidence(BEIT, f"the registry entry {variant.name}", "registry")
    if flavor is not None:
        out["flavor"] = Evidence(flavor, "--arch", "override")
    if normalization is not None:
        out["normalization"] = Evidence(normalization, "--normalization", "override")
    return out
