"""`beit-tools inspect`: resolve the source, call core.inspection, render."""

from __future__ import annotations

from pathlib import Path

import typer

from beit_tools.cli.common import (
    SOURCE_HELP,
    ArchName,
    ArchOption,
    CacheDirOption,
    DebugOption,
    FeatureIndices,
    FeatureIndicesOption,
    JsonOption,
    MirrorOption,
    Normalization,
    NormalizationOption,
    OfflineOption,
    PoolScalesOption,
    TrustOption,
    VariantOption,
    fetch_source,
    go_offline,
    parse_pool_scales,
    quiet_libraries,
    reported_errors,
)


def inspect(
    source: str | None = typer.Argument(None, help=SOURCE_HELP, show_default=False),
    variant: str | None = VariantOption,
    keys: bool = typer.Option(False, "--keys", help="Also list every tensor: source -> target, op, shape, dtype."),
    labels: Path | None = typer.Option(None, "--labels", help="Class names file, as convert would use it."),
    image_size: int | None = typer.Option(None, "--image-size", min=1, help="As for convert."),
    num_heads: int | None = typer.Option(None, "--num-heads", min=1, help="As for convert."),
    pool_scales: str | None = PoolScalesOption,
    feature_indices: FeatureIndices = FeatureIndicesOption,
    arch: ArchName | None = ArchOption,
    normalization: Normalization | None = NormalizationOption,
    use_ema: bool = typer.Option(False, "--use-ema", help="Inspect the 'model_ema' weights."),
    mirror: str | None = MirrorOption,
    cache_dir: Path | None = CacheDirOption,
    offline: bool = OfflineOption,
    trust_checkpoint: bool = TrustOption,
    json_output: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Show what a checkpoint is and exactly what `convert` would do with every key. Writes nothing.

    Exit 0 when it would convert, 1 when it cannot be read or would not convert (the report says why).
    Example: `beit-tools inspect beit_base_patch16_224_pt22k.pth`, or `beit-tools inspect --variant base-pt22k`.
    """
    scales = parse_pool_scales(pool_scales)
    quiet_libraries()
    go_offline(offline)
    from beit_tools.cli import render

    with reported_errors(debug):
        from beit_tools.core.inspection import inspect_checkpoint

        origin = fetch_source(source, variant, mirror, cache_dir, offline)
        report = inspect_checkpoint(
            origin.path,
            trust_checkpoint=trust_checkpoint,
            use_ema=use_ema,
            image_size=image_size,
            num_heads=num_heads,
            pool_scales=scales,
            feature_indices=feature_indices.value,
            flavor=arch.value if arch else None,
            normalization=normalization.value if normalization else None,
            labels_file=labels,
            origin=origin,
        )
        if json_output:
            render.print_json(report.to_dict())
        else:
            render.render_report(report, keys=keys)
    if not report.convertible:
        raise typer.Exit(1)
