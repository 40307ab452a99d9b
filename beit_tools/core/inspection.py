"""`inspect`: what a checkpoint is and what conversion would do with it, without writing anything.

It runs the same open -> detect -> plan as `convert`, then adds what a person deciding whether to
convert wants to see: the container, tensors grouped by part of the model, and warnings. Tensor data
is read only for the small index buffers and for sampled NaN/Inf checks; transformers is not imported.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from beit_tools.core.analysis import Analysis, analyse, source_warnings, stated
from beit_tools.core.checkpoint import Checkpoint
from beit_tools.core.dtypes import dtype_name
from beit_tools.core.features import FAITHFUL
from beit_tools.core.labels import Labels, resolve_labels
from beit_tools.core.scan import all_finite
from beit_tools.core.sources import Source, require_variant
from beit_tools.errors import BeitToolsError

# Parts of the model, first match wins (canonical unilm names).
GROUPS: tuple[tuple[str, str], ...] = (
    ("embeddings", r"cls_token|mask_token|pos_embed|patch_embed\..+|rel_pos_bias\..+"),
    ("blocks", r"blocks\.\d+\..+"),
    ("final norm", r"(fc_)?norm\..+"),
    ("classifier", r"head\..+"),
    ("visual-token head", r"lm_head\..+"),
    ("fpn", r"fpn\d\..+"),
    ("decode head", r"decode_head\..+"),
    ("auxiliary head", r"auxiliary_head\..+"),
    ("pretraining-only", r"cls_pt_(?:layers|norm|lm_head)\..+"),
    ("other", r".+"),
)
SAMPLE = 1 << 15  # elements read from each end of a tensor by the NaN/Inf check


@dataclass(frozen=True)
class TensorGroup:
    name: str
    tensors: int
    parameters: int  # elements of floating tensors (buffers such as indices and counters excluded)
    bytes: int
    dtypes: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tensors": self.tensors,
            "parameters": self.parameters,
            "bytes": self.bytes,
            "dtypes": self.dtypes,
        }


@dataclass
class Report:
    analysis: Analysis
    labels: Labels | None
    groups: list[TensorGroup]
    origin: Source
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def convertible(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        ckpt = self.analysis.checkpoint
        detection = self.analysis.detection
        arch = detection.arch
        config = arch.config_fields()
        return {
            "file": {
                "path": str(ckpt.path),
                "bytes": ckpt.size_bytes,
                "format": ckpt.format,
                "loaded_with": ckpt.loaded_with,
                "classes": list(ckpt.classes),
                **self.origin.origin(),
            },
            "variant": self.origin.variant.name if self.origin.variant else None,
            "container": {
                "entries": [{"key": e.key, "kind": e.kind, "summary": e.summary} for e in ckpt.container],
                "weights_from": ckpt.weights_from,
                "stripped_prefixes": list(ckpt.stripped_prefixes),
            },
            "family": arch.family.value,
            "config": config,
            "evidence": {k: e.to_dict() for k, e in detection.evidence.items()},
            "groups": [g.to_dict() for g in self.groups],
            "plan": self.analysis.plan.to_dict()
            | {"labels": self.labels.to_dict() if self.labels else None, "keys": self._keys()},
            "warnings": self.warnings,
            "convertible": self.convertible,
            "problems": self.problems,
        }

    def _keys(self) -> list[dict[str, Any]]:
        return [m.to_dict() for m in self.analysis.plan.mappings]


def group_tensors(ckpt: Checkpoint) -> list[TensorGroup]:
    compiled = [(name, re.compile(pattern)) for name, pattern in GROUPS]
    members: dict[str, list[str]] = {}
    for key in ckpt.infos:
        name = next(n for n, p in compiled if p.fullmatch(key))
        members.setdefault(name, []).append(key)
    groups = []
    for name, _ in GROUPS:
        keys = members.get(name)
        if not keys:
            continue
        infos = [ckpt.infos[k] for k in keys]
        groups.append(
            TensorGroup(
                name=name,
                tensors=len(keys),
                parameters=sum(i.numel for i in infos if i.dtype.is_floating_point),
                bytes=sum(i.nbytes for i in infos),
                dtypes=dict(Counter(dtype_name(i.dtype) for i in infos)),
            )
        )
    return groups


def warnings_for(analysis: Analysis) -> list[str]:
    ckpt = analysis.checkpoint
    out = source_warnings(ckpt)
    floating = Counter(dtype_name(i.dtype) for i in ckpt.infos.values() if i.dtype.is_floating_point)
    if len(floating) > 1:
        out.append("mixed floating dtypes: " + ", ".join(f"{n} {d}" for d, n in floating.most_common()))
    bad = [
        ckpt.source_keys[key]
        for key, info in ckpt.infos.items()
        if info.dtype.is_floating_point and not all_finite(ckpt.sample_bytes(key, SAMPLE), info.dtype)
    ]
    if bad:
        out.append(f"{len(bad)} tensor(s) hold NaN or Inf (sampled): {', '.join(bad[:4])}")
    features = analysis.plan.features
    if features is not None and not features.faithful:
        out.append(f"FPN features: {features.describe()} (--feature-indices faithful avoids it)")
    return out


def inspect_checkpoint(
    source: str | Path,
    *,
    trust_checkpoint: bool = False,
    use_ema: bool = False,
    image_size: int | None = None,
    num_heads: int | None = None,
    labels_file: Path | None = None,
    origin: Source | None = None,
    pool_scales: tuple[int, ...] | None = None,
    feature_indices: str = FAITHFUL,
    flavor: str | None = None,
    normalization: str | None = None,
) -> Report:
    variant = origin.variant if origin else None
    analysis = analyse(
        source,
        trust_checkpoint=trust_checkpoint,
        use_ema=use_ema,
        image_size=image_size,
        num_heads=num_heads,
        pool_scales=pool_scales,
        feature_indices=feature_indices,
        known=stated(flavor, normalization, variant),
    )
    origin = origin or Source(analysis.checkpoint.path, "file", str(source))
    problems = analysis.plan.problems()
    try:
        require_variant(origin, analysis.detection.arch)
    except BeitToolsError as e:
        problems.insert(0, e.message)
    try:
        classes = analysis.checkpoint.meta.get("classes")
        labels = resolve_labels(analysis.detection.arch, classes, labels_file, variant and variant.labels)
    except BeitToolsError as e:
        labels = None
        problems.append(e.message)
    return Report(analysis, labels, group_tensors(analysis.checkpoint), origin, warnings_for(analysis), problems)
