"""The one place results become rich tables, progress bars or JSON. Nothing else prints."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from beit_tools.core.arch import NORMALIZATIONS

if TYPE_CHECKING:
    from beit_tools.core.convert import ConversionResult
    from beit_tools.core.inspection import Report
    from beit_tools.core.plan import Plan
    from beit_tools.core.push import PushPlan, PushResult
    from beit_tools.core.variants import Variant
    from beit_tools.core.verify import VerifyResult

STATUS_STYLES = {"pass": "green", "fail": "bold red", "warn": "yellow", "skip": "dim"}
EVIDENCE_STYLES = {"measured": "", "convention": "yellow", "file": "green", "override": "cyan", "registry": "blue"}
OP_STYLES = {
    "rename": "green",
    "split": "cyan",
    "drop": "yellow",
    "added": "magenta",
    "unused": "bold red",
    "missing": "bold red",
}


def stdout() -> Console:
    return Console(highlight=False, soft_wrap=False)


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def print_error(message: str, hint: str | None) -> None:
    """A single line on stderr: what is wrong, then what to do."""
    text = f"[bold red]error:[/] {escape(message)}"
    if hint:
        text += f" [dim]— {escape(hint)}[/]"
    Console(stderr=True, highlight=False, soft_wrap=True).print(text)


def note(text: str) -> None:
    """A status line on stderr for a person watching (terminals only, like the progress bars)."""
    console = stderr()
    if console.is_terminal:
        console.print(f"[dim]{escape(text)}[/]")


def warn(text: str) -> None:
    """A warning on stderr that cannot be missed."""
    stderr().print(f"[bold yellow]warning:[/] {escape(text)}")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@contextmanager
def byte_progress(description: str) -> Iterator[tuple[Any, Any]]:
    """A bytes progress bar on stderr (size, speed, time left), shown from the first `start(total[, name])`.

    Yields (start, advance) callbacks; each `start` begins a new task, so one bar can follow a download
    and then the writing.
    """
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = stderr()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    tasks: list[Any] = []

    def start(total: int | None, name: str | None = None) -> None:
        if not tasks:
            progress.start()
        tasks.append(progress.add_task(f"{description} {name}" if name else description, total=total))

    try:
        yield start, lambda n: progress.advance(tasks[-1], n)
    finally:
        if tasks:
            progress.stop()


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def _position(arch: Any) -> str:
    kinds = [
        name
        for flag, name in (
            (arch.use_relative_position_bias, "relative, per layer"),
            (arch.use_shared_relative_position_bias, "relative, shared"),
            (arch.use_absolute_position_embeddings, "absolute"),
        )
        if flag
    ]
    return " + ".join(kinds) or "none"


def _origin_rows(origin: Any) -> list[tuple[str, str]]:
    """Where a downloaded source came from: the variant, the address fetched, the file's digest."""
    rows = []
    if origin.variant is not None:
        rows.append(("variant", f"{origin.variant.name} ({origin.variant.file}.pth)"))
    if origin.kind != "file":
        rows.append(("fetched from", origin.url or origin.address))
    return rows


def _shown(value: Any) -> str:
    return str(list(value)) if isinstance(value, tuple) else str(value)


def summary_table(result: ConversionResult) -> Table:
    analysis = result.analysis
    arch = analysis.detection.arch
    ckpt = analysis.checkpoint
    table = Table(title="Conversion", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    weights = ckpt.weights_from + (f", stripped {' '.join(ckpt.stripped_prefixes)}" if ckpt.stripped_prefixes else "")
    rows = [
        ("source", f"{ckpt.path} ({ckpt.format}, {_size(ckpt.size_bytes)}, weights from {weights})"),
        *_origin_rows(result.origin),
        ("family", f"{arch.family.value} → {arch.hf_class}"),
        (
            "config",
            f"hidden {arch.hidden_size}, layers {arch.num_hidden_layers}, heads {arch.num_attention_heads}, "
            f"mlp {arch.intermediate_size}, image {arch.image_size}, patch {arch.patch_size}",
        ),
        ("positions", _position(arch)),
        ("layer scale", "yes" if arch.layer_scale else "no"),
    ]
    if arch.family.value == "image-classification":
        rows.append(("pooling", "mean of patch tokens" if arch.use_mean_pooling else "CLS token"))
    features = result.analysis.plan.features
    if features is not None:
        rows.append(("FPN features", features.describe()))
    chosen = result.analysis.detection.evidence["normalization"]
    mean, _ = NORMALIZATIONS[arch.normalization]
    rows.append(("normalization", f"{arch.normalization}, mean {list(mean)} ({chosen.kind}: {chosen.source})"))
    if arch.family.value == "masked-image-modeling":
        rows.append(("visual tokens", str(arch.vocab_size)))
    if result.labels is not None:
        rows.append(("labels", f"{len(result.labels.id2label)} from {result.labels.source}"))
    rows += [
        ("by convention", f"{name} = {_shown(ev.value)}: {ev.source}")
        for name, ev in result.analysis.detection.evidence.items()
        if ev.kind == "convention" and name not in ("use_mean_pooling", "normalization", "flavor")
    ]
    rows += [
        ("dtype", result.dtype.name),
        ("output", f"{result.output} ({_size(result.bytes_written)} of weights: {', '.join(result.files)})"),
    ]
    for name, value in rows:
        table.add_row(name, escape(value))
    return table


def plan_table(plan: Plan) -> Table:
    """The mapping diff: how many keys each rule renamed, split or dropped, and what is unused or missing."""
    table = Table(title="Mapping", title_justify="left")
    table.add_column("rule")
    table.add_column("op")
    table.add_column("keys", justify="right")
    table.add_column("why", overflow="fold")
    for rule, op, count, reason, example in plan.by_rule():
        style = OP_STYLES.get(op, "")
        table.add_row(escape(rule), f"[{style}]{op}[/]", str(count), escape(reason or example))
    for m in plan.unused[:10]:
        table.add_row(escape(m.source_key), "[bold red]unused[/]", "1", "no rule for this key")
    for t in plan.missing[:10]:
        table.add_row(escape(t.key), "[bold red]missing[/]", "1", "the architecture needs it; the file lacks it")
    counts = plan.counts()
    table.add_section()
    table.add_row(
        "total",
        "",
        str(sum(v for k, v in counts.items() if k != "missing")),
        ", ".join(f"{v} {k}" for k, v in counts.items() if v or k != "added"),
    )
    return table


def render_conversion(result: ConversionResult) -> None:
    console = stdout()
    console.print(summary_table(result))
    console.print(plan_table(result.analysis.plan))
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")
    console.print(f"[green]✓[/] wrote {escape(str(result.output))}")


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}K" if n >= 1e3 else str(n)


def file_table(report: Report) -> Table:
    ckpt = report.analysis.checkpoint
    table = Table(title="File", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    if ckpt.loaded_with == "weights-only":
        loading = "safe (weights only)" + (f"; allow-listed: {', '.join(ckpt.classes)}" if ckpt.classes else "")
    elif ckpt.loaded_with == "full pickle":
        loading = "full pickle (--trust-checkpoint)" + (f"; classes: {', '.join(ckpt.classes)}" if ckpt.classes else "")
    else:
        loading = "safetensors (no code)"
    weights = ckpt.weights_from + (f", stripped {' '.join(ckpt.stripped_prefixes)}" if ckpt.stripped_prefixes else "")
    for name, value in (
        ("path", str(ckpt.path)),
        ("size", _size(ckpt.size_bytes)),
        ("format", ckpt.format),
        ("loading", loading),
        ("weights", weights),
        *_origin_rows(report.origin),
    ):
        table.add_row(name, escape(value))
    for entry in ckpt.container:
        marker = " [dim](weights)[/]" if entry.key == ckpt.weights_from else ""
        table.add_row(f"[dim]{escape(entry.key)}[/]", f"{escape(entry.kind)}: {escape(entry.summary)}{marker}")
    return table


def config_table(report: Report) -> Table:
    detection = report.analysis.detection
    arch = detection.arch
    table = Table(title=f"Detected: {arch.family.value} → {arch.hf_class}", title_justify="left")
    table.add_column("field")
    table.add_column("value")
    table.add_column("evidence", overflow="fold")
    for name, ev in detection.evidence.items():
        if name == "family":
            continue
        style = EVIDENCE_STYLES.get(ev.kind, "")
        label = f"[{style}]{ev.kind}[/]: " if style else "" if ev.kind == "measured" else f"{ev.kind}: "
        value = list(ev.value) if isinstance(ev.value, tuple) else ev.value
        table.add_row(name, escape(str(value)), label + escape(ev.source))
    features = report.analysis.plan.features
    if features is not None:
        table.add_row("FPN features", escape(features.kind), escape(features.describe()))
    return table


def groups_table(report: Report) -> Table:
    table = Table(title="Tensors", title_justify="left")
    for column in ("group", "tensors", "parameters", "dtypes", "bytes"):
        table.add_column(column, justify="left" if column in ("group", "dtypes") else "right")
    for g in report.groups:
        dtypes = ", ".join(f"{n} {d}" for d, n in g.dtypes.items())
        table.add_row(g.name, str(g.tensors), _count(g.parameters), dtypes, _size(g.bytes))
    table.add_section()
    table.add_row(
        "total",
        str(sum(g.tensors for g in report.groups)),
        _count(sum(g.parameters for g in report.groups)),
        "",
        _size(sum(g.bytes for g in report.groups)),
    )
    return table


def keys_table(plan: Plan) -> Table:
    table = Table(title="Keys", title_justify="left")
    for column in ("source", "op", "target", "shape", "dtype"):
        table.add_column(column, overflow="fold")
    for m in plan.mappings:
        style = OP_STYLES.get(m.outcome, "")
        target = "\n".join(m.targets) or f"[dim]{escape(m.reason)}[/]"
        table.add_row(
            escape(m.source_key),
            f"[{style}]{m.outcome}[/]",
            target if not m.targets else escape(target),
            str(list(m.shape)),
            m.dtype.name,
        )
    return table


def render_report(report: Report, *, keys: bool = False) -> None:
    console = stdout()
    console.print(file_table(report))
    console.print(config_table(report))
    console.print(groups_table(report))
    console.print(plan_table(report.analysis.plan))
    if keys:
        console.print(keys_table(report.analysis.plan))
    for w in report.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")
    for p in report.problems:
        console.print(f"[bold red]problem:[/] {escape(p)}")
    arch = report.analysis.detection.arch
    if report.convertible:
        labels = f" with {len(report.labels.id2label)} labels from {report.labels.source}" if report.labels else ""
        console.print(f"[green]✓[/] convert would write {arch.hf_class}{escape(labels)}")
    else:
        console.print(f"[bold red]✗[/] convert would refuse this file ({len(report.problems)} problem(s) above)")


def render_verify(result: VerifyResult) -> None:
    console = stdout()
    table = Table(title=f"Verify {result.output}", title_justify="left")
    for column in ("check", "status", "measured", "bound", "detail"):
        table.add_column(column, overflow="fold")
    for c in result.checks:
        style = STATUS_STYLES.get(c.status, "")
        table.add_row(escape(c.name), f"[{style}]{c.status}[/]", escape(c.measured), escape(c.bound), escape(c.detail))
    console.print(table)
    if result.layers:
        layers = Table(title="Hidden states vs the original", title_justify="left", min_width=40)
        layers.add_column("layer")
        layers.add_column("max |Δ|", justify="right")
        for d in result.layers:
            layers.add_row(d.layer, f"{d.max_abs:.2e}")
        console.print(layers)
    if result.predictions:
        preds = Table(title=f"Top {len(result.predictions)} {result.prediction_kind}", title_justify="left")
        for column in ("#", "index", "label", "score"):
            preds.add_column(column, justify="right" if column != "label" else "left")
        for n, p in enumerate(result.predictions, start=1):
            preds.add_row(str(n), str(p.index), escape(p.label), f"{p.score:.4f}")
        console.print(preds)
    if result.picture is not None:
        console.print(f"picture: {escape(str(result.picture))}")
    failed = [c.name for c in result.checks if c.status == "fail"]
    if failed:
        console.print(f"[bold red]✗ {len(failed)} check(s) failed:[/] {escape(', '.join(failed))}")
    else:
        console.print(f"[green]✓ all {sum(c.status == 'pass' for c in result.checks)} checks passed[/]")


SHORT_FAMILY = {"masked-image-modeling": "pretraining", "image-classification": "classification"}


def variants_table(variants: list[Variant]) -> Table:
    table = Table(title="Official BEiT checkpoints", title_justify="left")
    for column in ("name", "family", "params", "image", "labels", "file", "known logits"):
        table.add_column(
            column,
            justify="right" if column in ("params", "image") else "left",
            no_wrap=column in ("name", "params"),
            overflow="fold",
        )
    for v in variants:
        expected = v.expected
        if expected is None:
            known = "[dim]-[/]"
        elif expected.first is None:
            known = "shape only"
        else:
            known = "yes" + (f", class {expected.top_class}" if expected.top_class is not None else "")
        labels = f"{v.labels}" if v.labels else "visual tokens"
        family = SHORT_FAMILY.get(v.family.value, v.family.value.split("-")[-1])
        table.add_row(v.name, family, f"{v.params_m:.1f}M", str(v.image_size), labels, escape(v.file), known)
    return table


def render_variants(variants: list[Variant]) -> None:
    console = stdout()
    console.print(variants_table(variants))
    console.print(
        "[dim]`beit-tools convert --variant NAME` downloads (cached) and converts; "
        "--mirror / BEIT_TOOLS_MIRROR replaces the host.[/]"
    )


@contextmanager
def hub_progress(enabled: bool) -> Iterator[None]:
    """huggingface_hub's own progress bars (uploads) on or off for a block; HF_HUB_DISABLE_PROGRESS_BARS=1 wins."""
    import os

    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if enabled and sys.stderr.isatty() and os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") is None:
        enable_progress_bars()
    else:
        disable_progress_bars()
    try:
        yield
    finally:
        if was_disabled:
            disable_progress_bars()
        elif os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") is None:
            enable_progress_bars()


def push_files_table(plan: PushPlan) -> Table:
    table = Table(title=f"Publish {plan.folder} → {plan.repo_id}", title_justify="left")
    table.add_column("file")
    table.add_column("size", justify="right")
    table.add_column("note")
    notes = {"README.md": f"model card ({plan.card_action})"}
    for f in plan.files:
        table.add_row(escape(f.name), _size(f.bytes), escape(notes.get(f.name, "")))
    table.add_section()
    table.add_row("total", _size(sum(f.bytes for f in plan.files)), "")
    return table


def _gate_line(plan: PushPlan) -> str:
    if plan.checks is None:
        return "[bold yellow]not verified (--skip-verify)[/]"
    passed = sum(c["status"] == "pass" for c in plan.checks)
    against = f", parity against {escape(plan.verified_against.name)}" if plan.verified_against else ""
    return f"[green]verified[/]: {passed} checks passed{against}"


def render_push_plan(plan: PushPlan) -> None:
    console = stdout()
    console.print(push_files_table(plan))
    console.print(_gate_line(plan))
    console.print(f"[bold]README.md[/] ({plan.card_action}):")
    console.print(escape(plan.card), soft_wrap=True)
    console.print("[dim]dry run: nothing was sent[/]")


def render_push(result: PushResult) -> None:
    console = stdout()
    console.print(push_files_table(result.plan))
    console.print(_gate_line(result.plan))
    if result.pr_url:
        console.print(f"[green]✓[/] opened a pull request: {escape(result.pr_url)}")
    elif result.changed:
        console.print(f"[green]✓[/] published {escape(result.revision)}: {escape(str(result.commit_url))}")
    else:
        console.print(
            f"[green]✓[/] nothing changed since {escape(str(result.commit))[:12]} on {escape(result.revision)}: "
            "no new commit"
        )
