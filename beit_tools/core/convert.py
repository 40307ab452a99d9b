"""The conversion pipeline: prepare (open, detect, plan, labels) -> write (weights, config, processor) -> record.

Three things run at once: the writer copies tensors into the output, a scan thread reads the source
once for its sha256 and any NaN/Inf, and, when transformers' facts for this config are not cached yet,
another thread works them out. The folder is renamed into place only after all three agree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from beit_tools.core.analysis import Analysis, analyse, source_warnings, stated
from beit_tools.core.checkpoint import Checkpoint, tensor_bytes
from beit_tools.core.dtypes import BY_NAME, FLOAT32, DType
from beit_tools.core.features import FAITHFUL
from beit_tools.core.labels import Labels, resolve_labels
from beit_tools.core.ops import Cast
from beit_tools.core.plan import Plan, TargetTensor
from beit_tools.core.processor import preprocessor_config
from beit_tools.core.provenance import PROVENANCE_NAME, provenance
from beit_tools.core.scan import SourceScan, nonfinite_unlocated, regions_of
from beit_tools.core.schema import FactsJob, check_schema
from beit_tools.core.sources import Source, require_variant
from beit_tools.core.writer import (
    DEFAULT_MAX_SHARD_BYTES,
    Payload,
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
    flavor: str | None = None  # --arch: the transformers model type to write (default: what the file shows)
    normalization: str | None = None  # --normalization: half | imagenet (default: what the file shows)
    cache: Path | None = None  # where transformers' facts are cached (default: the download cache)


@dataclass
class ConversionResult:
    output: Path
    analysis: Analysis
    labels: Labels | None
    dtype: DType
    files: list[str]
    bytes_written: int
    sha256: str
    origin: Source
    warnings: list[str] = field(default_factory=list)
    copied_bytes: int = 0  # of bytes_written, how many went from the source file to the output untouched

    def to_dict(self) -> dict[str, Any]:
        arch = self.analysis.plan.target_arch
        return {
            "output": str(self.output),
            "family": arch.family.value,
            "hf_class": arch.hf_class,
            "config": arch.config_fields(),
            "labels": self.labels.to_dict() if self.labels else None,
            "dtype": self.dtype.name,
            "files": self.files,
            "bytes_written": self.bytes_written,
            "bytes_copied": self.copied_bytes,
            "source_sha256": self.sha256,
            "source": {"path": str(self.origin.path), **self.origin.origin()},
            "variant": self.origin.variant.name if self.origin.variant else None,
            "plan": self.analysis.plan.to_dict(),
            "warnings": self.warnings,
        }


def source_dtype(ckpt: Checkpoint) -> DType:
    """The dominant floating dtype of the weights (by bytes): what `--dtype` defaults to."""
    by_bytes: Counter[DType] = Counter()
    for info in ckpt.infos.values():
        if info.dtype.is_floating_point:
            by_bytes[info.dtype] += info.nbytes
    return by_bytes.most_common(1)[0][0] if by_bytes else FLOAT32


@dataclass
class Payloads:
    """How each output tensor is made: copied from the source file, or computed."""

    ckpt: Checkpoint
    plan: Plan
    copied: int = 0
    _pending: dict[str, list[Any]] = field(default_factory=dict)  # source key -> [tensor, parts still to write]

    def __post_init__(self) -> None:
        self._added = set(self.plan.added)

    def __call__(self, target: TargetTensor) -> Payload:
        if target.source in self._added:
            return Payload(compute=lambda: bytes(target.nbytes))
        location = self.ckpt.location(target.source)
        span = location and target.byte_range(location.offset, self.ckpt.infos[target.source].dtype)
        if span:
            self.copied += target.nbytes
            return Payload(copy=span)
        return Payload(compute=lambda: self._compute(target))

    def _compute(self, target: TargetTensor) -> Any:
        entry = self._pending.get(target.source)
        if entry is None:
            entry = self._pending[target.source] = [self.ckpt.tensor(target.source), target.parts]
        entry[1] -= 1
        if entry[1] == 0:
            del self._pending[target.source]
        return tensor_bytes(target.produce(entry[0]))


def convert(
    options: ConvertOptions,
    on_start: Callable[[int], None] = lambda total: None,
    on_written: Callable[[int], None] = lambda n: None,
) -> ConversionResult:
    """Convert `options.source` into a transformers model folder at `options.output`.

    `on_start(total_bytes)` and `on_written(n_bytes)` report writing progress.
    """
    from beit_tools.core.download import cache_root

    variant = options.origin.variant if options.origin else None
    analysis = analyse(
        options.source,
        trust_checkpoint=options.trust_checkpoint,
        use_ema=options.use_ema,
        image_size=options.image_size,
        num_heads=options.num_heads,
        pool_scales=options.pool_scales,
        feature_indices=options.feature_indices,
        known=stated(options.flavor, options.normalization, variant),
    )
    ckpt, arch, plan = analysis.checkpoint, analysis.detection.arch, analysis.plan
    origin = options.origin or Source(ckpt.path, "file", str(ckpt.path))
    require_variant(origin, arch)
    plan.require_convertible(allow_unused=options.allow_unused)
    labels = resolve_labels(arch, ckpt.meta.get("classes"), options.labels_file, variant and variant.labels)
    if options.dtype is not None and options.dtype not in BY_NAME:
        raise BeitToolsError(f"unknown --dtype {options.dtype}", "use float32, float16 or bfloat16")
    dtype = BY_NAME[options.dtype] if options.dtype else source_dtype(ckpt)
    targets = plan.target_tensors(Cast(dtype))

    scan = SourceScan(ckpt.path, regions_of(ckpt)).start()
    facts = FactsJob(plan.target_arch, labels.id2label if labels else None, dtype, options.cache or cache_root())
    payloads = Payloads(ckpt, plan)
    unscanned_bad = nonfinite_unlocated(ckpt)
    total = sum(t.nbytes for t in targets)
    warnings = source_warnings(ckpt)
    with atomic_directory(options.output, options.overwrite, keep=(ckpt.path,)) as tmp:
        on_start(total)
        files = write_weights(tmp, targets, payloads, ckpt.path, options.max_shard_bytes, on_written)
        known = facts.result()
        check_schema({t.key: t.shape for t in targets}, known.schema)
        (tmp / "config.json").write_text(known.config_json, encoding="utf-8")
        write_json(tmp / "preprocessor_config.json", preprocessor_config(arch))
        digest, nonfinite = scan.result()
        bad = [ckpt.source_keys[k] for k in (*nonfinite, *unscanned_bad)]
        if bad:
            warnings.append(f"{len(bad)} tensor(s) hold NaN or Inf: {', '.join(bad[:4])}")
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
                hf_class=arch.hf_class,
                variant=origin.variant.name if origin.variant else None,
                overrides={
                    "image_size": options.image_size,
                    "num_heads": options.num_heads,
                    "pool_scales": list(options.pool_scales) if options.pool_scales else None,
                },
                features=plan.features.to_dict() if plan.features else None,
                dtype=dtype.name,
                flavor=arch.flavor,
                normalization=arch.normalization,
                labels=labels.to_dict() if labels else None,
                evidence={k: str(v) for k, v in analysis.detection.evidence.items()},
                plan=plan.counts(),
                warnings=warnings,
            ),
        )
        files += ["config.json", "preprocessor_config.json", PROVENANCE_NAME]
    return ConversionResult(
        options.output, analysis, labels, dtype, files, total, digest, origin, warnings, payloads.copied
    )
