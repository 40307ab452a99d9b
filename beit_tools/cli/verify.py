"""`beit-tools verify`: parse, call core.verify, render."""

from __future__ import annotations

from pathlib import Path

import typer

from beit_tools.cli.common import (
    CacheDirOption,
    DebugOption,
    JsonOption,
    OfflineOption,
    TrustOption,
    fetch_source,
    go_offline,
    quiet_libraries,
    reported_errors,
)


def verify(
    output: Path = typer.Argument(..., help="The folder `beit-tools convert` wrote."),
    against: str | None = typer.Option(
        None,
        "--against",
        help="The source checkpoint (path, URL or hf:// address): parity with the original architecture, round trip.",
    ),
    image: Path | None = typer.Option(
        None,
        "--image",
        help="Image for the forward pass (default: a synthetic one); a segmentation model also writes "
        "IMAGE.segmentation.png (overlay, mask, legend) unless --save-visual names another file.",
    ),
    top: int = typer.Option(5, "--top", min=1, help="How many predictions to show."),
    variant: str | None = typer.Option(
        None, "--variant", help="Official checkpoint name (e.g. base-ft22kto1k): also check its known logits."
    ),
    atol: float | None = typer.Option(
        None, "--atol", min=0.0, help="Parity bound (default: 1e-4 in fp32, 1e-2 with half-precision weights)."
    ),
    strict: bool = typer.Option(False, "--strict", help="Fail on known transformers deviations too."),
    save_visual: Path | None = typer.Option(None, "--save-visual", help="Write a PNG of the predictions."),
    cache_dir: Path | None = CacheDirOption,
    offline: bool = OfflineOption,
    trust_checkpoint: bool = TrustOption,
    json_output: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Prove a converted model right: clean load, forward pass, expected logits, parity with the original.

    Exit 0 when every check passes, 1 when any fails.
    """
    quiet_libraries()
    go_offline(offline)
    from beit_tools.cli import render

    with reported_errors(debug):
        from beit_tools.core.verify import VerifyOptions
        from beit_tools.core.verify import verify as run_verify

        source = fetch_source(against, None, None, cache_dir, offline).path if against else None
        result = run_verify(
            VerifyOptions(
                output=output,
                against=source,
                image=image,
                top=top,
                variant=variant,
                atol=atol,
                strict=strict,
                save_visual=save_visual,
                trust_checkpoint=trust_checkpoint,
                cache_dir=cache_dir,
                offline=offline,
            )
        )
        if json_output:
            render.print_json(result.to_dict())
        else:
            render.render_verify(result)
    if not result.passed:
        raise typer.Exit(1)
