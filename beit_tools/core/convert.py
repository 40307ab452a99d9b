"""The conversion pipeline: open -> detect -> plan -> check against transformers -> write."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from beit_tools.core.analysis import Analysis, analyse, source_warnings
from beit_tools.core.checkpoint import Checkpoint
from beit_tools.core.dtypes import BY_NAME, dtype_name
from beit_tools.core.features import FAITHFUL
from beit_tools.core.labels import Labels, resolve_labels
from beit_tools.core.ops import Cast
from beit_tools.core.processor import preprocessor_config
from beit_tools.core.provenance import PROVENANCE_NAME, provenance, sha256_file
from beit_tools.core.schema import beit_config, check_schema
from beit_tools.core.sources import Source, require_variant
from beit_tools.core.writer import (
    DEFAULT_MAX_SHARD_BYTES,
    atomic_directory,
    write_json,
    write_weights,
)
from beit_tools.errors import BeitToolsError


@dataclass
class ConvertOptions:
    source: Path
    output: Path = Path("out")
    dtype: str | None = None
    labels_file: Path | None = None
    image_size: int | None = None
    num_heads: int | None = None
    pool_scales: tuple[int, ...] | None = None
    feature_indices: str = FAITHFUL  # segmentation: faithful (the original's FPN inputs) or transformers (Hub's)
    allow_unused: bool = False
    trust_checkpoint: bool = False
    use_ema: bool = False
    overwrite: bool = False
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
    origin: Source | None = None  # where a downloaded source came from (URL, hf://, variant)


@dataclass
class ConversionResult:
    output: Path
    analysis: Analysis
    labels: Labels | None
    dtype: torch.dtype
    files: list[str]
    bytes_written: int
    sha256: str
    origin: Source
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        arch = self.analysis.plan.target_arch
        return {
            "output": str(self.output),
            "family": arch.family.value,
            "hf_class": arch.family.hf_class,
            "config": arch.config_fields(),
            "labels": self.labels.to_dict() if self.labels else None,
            "dtype": dtype_name(self.dtype),
            "files": self.files,
            "bytes_written": self.bytes_written,
            "source_sha256": self.sha256,
            "source": {"path": str(self.origin.path), **self.origin.origin()},
            "variant": self.origin.variant.name if self.origin.variant else None,
            "plan": self.analysis.plan.to_dict(),
            "warnings": self.warnings,
        }


def source_dtype(ckpt: Checkpoint) -> torch.dtype:
    """The dominant floating dtype of the weights (by bytes): what `--dtype` defaults to."""
    by_bytes: Counter[torch.dtype] = Counter()
    for info in ckpt.infos.values():
        if info.dtype.is_floating_point:
            by_bytes[info.dtype] += info.nbytes
    return by_bytes.most_common(1)[0][0] if by_bytes else torch.float32


def convert(
    options: ConvertOptions,
    on_start: Callable[[int], None] = lambda total: None,
    on_written: Callable[[int], None] = lambda n: None,
) -> ConversionResult:
    """Convert `options.source` into a transformers model folder at `options.output`.

    `on_start(total_bytes)` and `on_written(n_bytes)` report writing progress.
    """
    analysis = analyse(
        options.source,
        trust_checkpoint=options.trust_checkpoint,
        use_ema=options.use_ema,
        image_size=options.image_size,
        num_heads=options.num_heads,
        pool_scales=options.pool_scales,
        feature_indices=options.feature_indices,
    )
    ckpt, arch, plan = analysis.checkpoint, analysis.detection.arch, analysis.plan
    origin = options.origin or Source(ckpt.path, "file", str(ckpt.path))
    require_variant(origin, arch)
    plan.require_convertible(allow_unused=options.allow_unused)

    labels = resolve_labels(arch, ckpt.meta.get("classes"), options.labels_file)
    if options.dtype is not None and options.dtype not in BY_NAME:
        raise BeitToolsError(f"unknown --dtype {options.dtype}", "use float32, float16 or bfloat16")
    dtype = BY_NAME[options.dtype] if options.dtype else source_dtype(ckpt)
    targets = plan.target_tensors(Cast(dtype))
    config = beit_config(plan.target_arch, labels.id2label if labels else None, dtype)
    check_schema({t.key: t.shape for t in targets}, config)

    warnings = source_warnings(ckpt)
    nonfinite: list[str] = []

    def read_checked(keys: list[str]):
        for key, tensor in ckpt.iter_tensors(keys):
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                nonfinite.append(ckpt.source_keys[key])
            yield key, tensor

    digest = origin.sha256 or sha256_file(ckpt.path)
    total = sum(t.nbytes for t in targets)
    with atomic_directory(options.output, options.overwrite, keep=(ckpt.path,)) as tmp:
        on_start(total)
        files = write_weights(tmp, targets, plan.reader(read_checked), options.max_shard_bytes, on_written)
        config.save_pretrained(tmp)
        write_json(tmp / "preprocessor_config.json", preprocessor_config(arch))
        if nonfinite:
            warnings.append(f"{len(nonfinite)} tensor(s) hold NaN or Inf: {', '.join(nonfinite[:4])}")
        write_json(
            tmp / PROVENANCE_NAME,
            provenance(
                {
                    "path": str(ckpt.path.resolve()),
                    "sha256": digest,
                    "bytes": ckpt.size_bytes,
                    "format": ckpt.format,
                    "weights_from": ckpt.weights_from,
                    "stripped_prefixes": list(ckpt.stripped_prefixes),
                    **origin.origin(),
                },
                family=arch.family.value,
                hf_class=arch.family.hf_class,
                variant=origin.variant.name if origin.variant else None,
                overrides={
                    "image_size": options.image_size,
                    "num_heads": options.num_heads,
                    "pool_scales": list(options.pool_scales) if options.pool_scales else None,
                },
                features=plan.features.to_dict() if plan.features else None,
                dtype=dtype_name(dtype),
                labels=labels.to_dict() if labels else None,
                evidence={k: str(v) for k, v in analysis.detection.evidence.items()},
                plan=plan.counts(),
                warnings=warnings,
            ),
        )
        files += ["config.json", "preprocessor_config.json", PROVENANCE_NAME]
    return ConversionResult(options.output, analysis, labels, dtype, files, total, digest, origin, warnings)
