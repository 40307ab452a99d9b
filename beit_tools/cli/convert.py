"""`beit-tools convert`: resolve the source, call core.convert, render."""

from __future__ import annotations

import re
from enum import Enum
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

SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


class DType(str, Enum):
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in SIZE_UNITS:
        raise typer.BadParameter(f"{text!r} is not a size like 5GB, 500MB or 123456")
    return int(float(m.group(1)) * SIZE_UNITS[m.group(2).upper()])


def convert(
    source: str | None = typer.Argument(None, help=SOURCE_HELP, show_default=False),
    variant: str | None = VariantOption,
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Folder to create (default: the variant's Hub name, else ./out)."
    ),
    dtype: DType | None = typer.Option(None, "--dtype", help="Weights dtype of the output (default: the source's)."),
    labels: Path | None = typer.Option(
        None, "--labels", help="Class names: JSON {id: name} or list, or one name per line."
    ),
    image_size: int | None = typer.Option(
        None, "--image-size", min=1, help="Image size when no position table or pos_embed fixes it."
    ),
    num_heads: int | None = typer.Option(
        None, "--num-heads", min=1, help="Attention heads when no relative position table tells them."
    ),
    pool_scales: str | None = PoolScalesOption,
    feature_indices: FeatureIndices = FeatureIndicesOption,
    arch: ArchName | None = ArchOption,
    normalization: Normalization | None = NormalizationOption,
    allow_unused: bool = typer.Option(
        False, "--allow-unused", help="Leave out tensors no rule maps, instead of failing."
    ),
    use_ema: bool = typer.Option(False, "--use-ema", help="Convert the 'model_ema' weights of a training checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing, non-empty output folder."),
    max_shard_size: str = typer.Option("5GB", "--max-shard-size", help="Split weights into shards above this size."),
    mirror: str | None = MirrorOption,
    cache_dir: Path | None = CacheDirOption,
    offline: bool = OfflineOption,
    trust_checkpoint: bool = TrustOption,
    json_output: bool = JsonOption,
    debug: bool = DebugOption,
) -> None:
    """Convert a unilm BEiT checkpoint into a Hugging Face model folder (safetensors, config, processor, provenance).

    Examples: `beit-tools convert ckpt.pth -o out/`, `beit-tools convert --variant large-ade20k`,
    `beit-tools convert https://host/ft.pth`, `beit-tools convert hf://org/repo/file.pth`.
    """
    shard_bytes = parse_size(max_shard_size)
    scales = parse_pool_scales(pool_scales)
    quiet_libraries()
    go_offline(offline)
    from beit_tools.cli import render

    with reported_errors(debug):
        from beit_tools.core.convert import ConvertOptions
        from beit_tools.core.convert import convert as run_convert
        from beit_tools.core.sources import default_output

        origin = fetch_source(source, variant, mirror, cache_dir, offline)
        options = ConvertOptions(
            source=origin.path,
            output=output or default_output(origin),
            dtype=dtype.value if dtype else None,
            labels_file=labels,
            image_size=image_size,
            num_heads=num_heads,
            pool_scales=scales,
            feature_indices=feature_indices.value,
            flavor=arch.value if arch else None,
            normalization=normalization.value if normalization else None,
            allow_unused=allow_unused,
            trust_checkpoint=trust_checkpoint,
            use_ema=use_ema,
            overwrite=overwrite,
            max_shard_bytes=shard_bytes,
            origin=origin,
        )
        with render.byte_progress("writing weights") as (start, advance):
            result = run_convert(options, on_start=start, on_written=advance)
        if json_output:
            render.print_json(result.to_dict())
        else:
            render.render_conversion(result)
