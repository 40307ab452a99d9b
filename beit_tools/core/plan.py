"""Apply the rule table to a checkpoint: every source key converted, dropped with a reason, or unused.

The plan is the one object behind the diff table, the JSON report, the writer and the checks. It is
built from names and shapes only; the single exception is the small index buffers it drops, which it
compares with the recomputed index so a non-standard window never disappears silently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from math import prod
from typing import TYPE_CHECKING, Any

from beit_tools.core.arch import FLAVORS, Arch, Flavor, relative_position_index
from beit_tools.core.checkpoint import TensorInfo
from beit_tools.core.detect import Detection
from beit_tools.core.dtypes import FLOAT32, DType, dtype_name
from beit_tools.core.features import FeatureLayout, target_arch
from beit_tools.core.layout import ExpectedTensor, expected_layout
from beit_tools.core.ops import Cast, Op
from beit_tools.core.rules import Rule, addition_for, match, rules_for
from beit_tools.errors import BeitToolsError

UNUSED, ADDED = "unused", "added"
# Count names shown in the diff table, per outcome.
OUTCOMES = {"rename": "renamed", "split": "split", "drop": "dropped", ADDED: "added", UNUSED: "unused"}
if TYPE_CHECKING:
    import torch

Reader = Callable[[list[str]], Iterator[tuple[str, "torch.Tensor"]]]


@dataclass(frozen=True)
class KeyMapping:
    """What conversion does with one source tensor (or one tensor the plan adds)."""

    source_key: str  # as stored in the file
    key: str  # canonical unilm name
    rule: str
    op: Op | None  # None: no rule takes this key
    targets: tuple[str, ...]
    reason: str
    shape: tuple[int, ...]
    dtype: DType
    added: str = ""  # why the plan makes this tensor (zeros) although the file has none

    @property
    def outcome(self) -> str:
        return UNUSED if self.op is None else ADDED if self.added else self.op.name

    @property
    def target_shapes(self) -> list[tuple[int, ...]]:
        return self.op.target_shapes(self.shape, len(self.targets)) if self.op else []

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source_key,
            "key": self.key,
            "op": self.outcome,
            "rule": self.rule,
            "targets": list(self.targets),
            "reason": self.added or self.reason,
            "shape": list(self.shape),
            "dtype": dtype_name(self.dtype),
        }


@dataclass(frozen=True)
class TargetTensor:
    """One tensor of the output: its name, shape and dtype, and how its op makes it from the source tensor."""

    key: str
    shape: tuple[int, ...]
    dtype: DType
    source: str  # canonical source key
    op: Op
    part: int  # which of the op's targets this is
    parts: int
    source_shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return prod(self.shape) * self.dtype.itemsize

    def produce(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.op.produce(tensor, self.parts)[self.part].to(self.dtype.torch).contiguous()

    def byte_range(self, start: int, source: DType) -> tuple[int, int] | None:
        """Where this target's bytes lie in the file, when they are the source's own (same dtype, row-major
        source at `start`); None when they must be computed."""
        if source != self.dtype:
            return None
        offset, length = self.op.byte_ranges(self.source_shape, source.itemsize, self.parts)[self.part]
        return start + offset, length


@dataclass(frozen=True)
class ShapeMismatch:
    key: str
    expected: tuple[int, ...]
    actual: tuple[int, ...]


@dataclass
class Plan:
    arch: Arch  # what the file holds
    mappings: list[KeyMapping]
    missing: list[ExpectedTensor] = field(default_factory=list)
    wrong_shapes: list[ShapeMismatch] = field(default_factory=list)
    index_mismatches: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    target: Arch | None = None  # what config.json describes, when it differs (added tensors, feature indices)
    features: FeatureLayout | None = None  # segmentation: which hidden states reach the FPN

    @property
    def target_arch(self) -> Arch:
        return self.target or self.arch

    @property
    def unused(self) -> list[KeyMapping]:
        return [m for m in self.mappings if m.op is None]

    @property
    def added(self) -> dict[str, KeyMapping]:
        """Canonical keys of the tensors the plan makes as zeros, with their mappings."""
        return {m.key: m for m in self.mappings if m.added}

    def counts(self) -> dict[str, int]:
        c = Counter(OUTCOMES[m.outcome] for m in self.mappings)
        return {name: c.get(name, 0) for name in OUTCOMES.values()} | {"missing": len(self.missing)}

    def by_rule(self) -> list[tuple[str, str, int, str, str]]:
        """(rule, outcome, count, reason, first example) in first-seen order, for the diff table."""
        seen: dict[tuple[str, str], list[Any]] = {}
        for m in self.mappings:
            example = f"{m.source_key} → {', '.join(m.targets)}" if m.targets else m.source_key
            entry = seen.setdefault((m.rule, m.outcome), [0, m.added or m.reason, example])
            entry[0] += 1
        return [(rule, op, n, reason, example) for (rule, op), (n, reason, example) in seen.items()]

    def target_tensors(self, cast: Cast) -> list[TargetTensor]:
        """Output tensors in source order, cast as asked; two sources for one target is a defect."""
        out: dict[str, TargetTensor] = {}
        for m in self.mappings:
            if m.op is None or not m.op.writes:
                continue
            dtype = cast.target_dtype(m.dtype)
            for i, (key, shape) in enumerate(zip(m.targets, m.target_shapes, strict=True)):
                if key in out:
                    raise BeitToolsError(
                        f"two source tensors map to {key}: {out[key].source} and {m.key}",
                        "this is a beit-tools rule defect; please report it",
                    )
                out[key] = TargetTensor(key, shape, dtype, m.key, m.op, i, len(m.targets), m.shape)
        return list(out.values())

    def reader(self, read: Reader) -> Reader:
        """`read` for the file's tensors, with zeros for the ones the plan adds."""
        added = self.added

        def both(keys: list[str]) -> Iterator[tuple[str, torch.Tensor]]:
            import torch

            from_file = iter(read([k for k in keys if k not in added]))
            for key in keys:
                if key in added:
                    yield key, torch.zeros(added[key].shape, dtype=added[key].dtype.torch)
                else:
                    yield next(from_file)

        return both

    def problems(self, *, allow_unused: bool = False) -> list[str]:
        """Why this plan cannot be written, most fundamental first; empty when it can."""
        out: list[str] = list(self.conflicts)
        if self.missing:
            names = ", ".join(t.key for t in self.missing[:4])
            more = f" and {len(self.missing) - 4} more" if len(self.missing) > 4 else ""
            out.append(f"the checkpoint lacks {len(self.missing)} tensor(s) this architecture needs: {names}{more}")
        for w in self.wrong_shapes[:3]:
            out.append(f"{w.key} has shape {list(w.actual)}, but the architecture needs {list(w.expected)}")
        out.extend(self.index_mismatches[:3])
        if self.unused and not allow_unused:
            names = ", ".join(m.source_key for m in self.unused[:4])
            more = f" and {len(self.unused) - 4} more" if len(self.unused) > 4 else ""
            out.append(f"{len(self.unused)} tensor(s) have no place in the converted model: {names}{more}")
        return out

    def require_convertible(self, *, allow_unused: bool = False, context: str = "") -> None:
        """Raise the first problem as a one-line error (with a count of the rest), if there is any."""
        problems = self.problems(allow_unused=allow_unused)
        if not problems:
            return
        more = f" (and {len(problems) - 1} more; `beit-tools inspect` lists them)" if len(problems) > 1 else ""
        only_unused = not (self.conflicts or self.missing or self.wrong_shapes or self.index_mismatches)
        hint = (
            "pass --allow-unused to leave them out"
            if only_unused
            else "the file is incomplete or not a standard BEiT layout; fetch or export it again"
        )
        raise BeitToolsError(f"{context}{problems[0]}{more}", hint)

    def to_dict(self) -> dict[str, Any]:
        return {
            "hf_class": self.target_arch.hf_class,
            "counts": self.counts(),
            "rules": [
                {"rule": r, "op": op, "count": n, "reason": why, "example": ex} for r, op, n, why, ex in self.by_rule()
            ],
            "unused": [m.source_key for m in self.unused],
            "missing": [t.key for t in self.missing],
            "conflicts": self.conflicts,
            "features": self.features.to_dict() if self.features else None,
            "wrong_shapes": [
                {"key": w.key, "expected": list(w.expected), "actual": list(w.actual)} for w in self.wrong_shapes
            ],
        }


INDEX_CHECKS: dict[str, Callable[[Arch, Any], bool]] = {
    "relative_position_index": lambda arch, a: (
        a.shape == (arch.num_tokens, arch.num_tokens) and bool((a == relative_position_index(arch.window)).all())
    ),
}


def make_plan(
    detection: Detection,
    infos: Mapping[str, TensorInfo],
    source_keys: Mapping[str, str],
    read: Callable[[str], Any] | None = None,
    features: FeatureLayout | None = None,
) -> Plan:
    """Account for every source key, and for every tensor the output needs that the file cannot have.

    `read` loads a tensor as a numpy array for the drop checks (None skips them); `features` is a segmentation model's
    feature layout, which may add pass-through layers.
    """
    arch = detection.arch
    flavor = FLAVORS[arch.flavor]
    target = target_arch(arch, features)
    rules = rules_for(arch.family)
    layout = expected_layout(arch)
    mappings: list[KeyMapping] = []
    index_mismatches: list[str] = []
    for key, info in infos.items():
        found = match(rules, key)
        stored = source_keys.get(key, key)
        if found is None:
            mappings.append(
                KeyMapping(stored, key, "(no rule)", None, (), "no rule for this key", info.shape, info.dtype)
            )
            continue
        rule, targets = found
        targets = tuple(flavor.rename(t) for t in targets)
        if rule.check is not None and read is not None and not INDEX_CHECKS[rule.check](arch, read(key)):
            index_mismatches.append(
                f"{stored} differs from the index transformers recomputes for a {arch.window}x{arch.window} window"
            )
        mappings.append(KeyMapping(stored, key, rule.name, rule.op, targets, rule.reason, info.shape, info.dtype))
    reading = f"hidden_states[j{features.offset:+d}]" if features else ""
    mappings += _additions(arch, target, infos, layout, rules, flavor, reading)
    missing = [t for k, t in layout.items() if k not in infos and not t.optional]
    wrong = [
        ShapeMismatch(source_keys.get(k, k), t.shape, infos[k].shape)
        for k, t in layout.items()
        if k in infos and infos[k].shape != t.shape
    ]
    changed = target if target != arch else None
    return Plan(arch, mappings, missing, wrong, index_mismatches, list(detection.conflicts), changed, features)


def _additions(
    arch: Arch,
    target: Arch,
    infos: Mapping[str, TensorInfo],
    layout: dict[str, ExpectedTensor],
    rules: tuple[Rule, ...],
    flavor: Flavor,
    reading: str,
) -> list[KeyMapping]:
    """Zeros for what the target architecture needs beyond the file's (see rules.ADDITIONS)."""
    floating = Counter(i.dtype for i in infos.values() if i.dtype.is_floating_point)
    dtype = floating.most_common(1)[0][0] if floating else FLOAT32
    out = []
    for key, expected in expected_layout(target).items():
        if key in infos or key in layout or expected.optional:
            continue
        explained, found = addition_for(arch, key, reading), match(rules, key)
        if explained is None or found is None:
            raise BeitToolsError(f"internal: the output needs {key}, which nothing provides")
        (addition, reason), (rule, targets) = explained, found
        targets = tuple(flavor.rename(t) for t in targets)
        name = f"{key} (added)"
        out.append(KeyMapping(name, key, addition.name, rule.op, targets, rule.reason, expected.shape, dtype, reason))
    return out
