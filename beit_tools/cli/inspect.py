"""`beit-tools inspect`: parse, call core.inspection, render."""

from __future__ import annotations

from pathlib import Path

import typer

from beit_tools.cli.common import DebugOption, JsonOption, TrustOption, quiet_libraries, reported_errors


def inspect(
    source: Path = typer.Argument(..., help="The unilm checkpoint: .pth/.pt/.bin (torch) or .safetensors."),
    keys: bool = typer.Option(False, "--keys", help="Also list every tensor: source -> target, op, shape, dtype."),
    labels: Path | None = typer.Option(None, "--labels", help="Class names file, as convert would use it."),
    image_size: int | None = typer.Option(None, "--image-size", min=1, help="As for convert."),
    num_heads: int | None = typer.Option(None, "--num-heads", min=1, help="As for convert."),
    use_ema: bool = typer.Option(False, "--use-ema", help="Inspect the 'model_ema' weights."),
    trust_checkpoint: bool = TrustOption,
    json_output: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Show what a checkpoint is and exactly what `convert` would do with every key. Writes nothing.

    Exit 0 when it would convert, 1 when it cannot be read or would not convert (the report says why).
    """
    quiet_libraries()
    from beit_tools.cli import render

    with reported_errors(debug):
        from beit_tools.core.inspection import inspect_checkpoint

        report = inspect_checkpoint(
            source,
            trust_checkpoint=trust_checkpoint,
            use_ema=use_ema,
            image_size=image_size,
            num_heads=num_heads,
            labels_file=labels,
        )
        if json_output:
            render.print_json(report.to_dict())
        else:
            render.render_report(report, keys=keys)
    if not report.convertible:
        raise typer.Exit(1)
