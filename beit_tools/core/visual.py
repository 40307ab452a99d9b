"""Images for `verify`: a deterministic synthetic input, and PNG pictures of predictions."""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

from PIL import Image, ImageDraw


def synthetic_image(size: int) -> Image.Image:
    """A smooth, colourful, fully deterministic RGB test image (no randomness, no download)."""
    image = Image.new("RGB", (size, size))
    pixels = image.load()
    for y in range(size):
        for x in range(size):
            u, v = x / size, y / size
            pixels[x, y] = (
                int(127.5 * (1 + math.sin(6.0 * u + 2.0 * v))),
                int(127.5 * (1 + math.sin(5.0 * v - 3.0 * u + 1.0))),
                int(127.5 * (1 + math.cos(7.0 * (u - 0.5) * (v - 0.5) * 4.0))),
            )
    return image


def ade20k_palette() -> list[tuple[int, int, int]]:
    text = resources.files("beit_tools.data").joinpath("ade20k-palette.json").read_text()
    return [tuple(c) for c in json.loads(text)]


def palette(classes: int) -> list[tuple[int, int, int]]:
    """ADE20K's colours for 150 classes; a fixed spread of hues otherwise."""
    if classes == 150:
        return ade20k_palette()
    return [((i * 67) % 256, (i * 151 + 80) % 256, (i * 29 + 160) % 256) for i in range(classes)]


def segmentation_picture(image: Image.Image, mask: list[list[int]], classes: int, path: Path) -> None:
    """The input beside its predicted mask in the class palette."""
    colours = palette(classes)
    height, width = len(mask), len(mask[0])
    coloured = Image.new("RGB", (width, height))
    coloured.putdata([colours[c % len(colours)] for row in mask for c in row])
    side = max(256, *image.size)
    canvas = Image.new("RGB", (2 * side, side), "white")
    canvas.paste(image.convert("RGB").resize((side, side)), (0, 0))
    canvas.paste(coloured.resize((side, side), Image.NEAREST), (side, 0))
    canvas.save(path, format="PNG")


def bars_picture(items: list[tuple[str, float]], title: str, path: Path) -> None:
    """Horizontal bars, one per (label, value), scaled to the largest value."""
    row, width, label_width = 28, 720, 360
    canvas = Image.new("RGB", (width, row * (len(items) + 1) + 10), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((10, 8), title, fill="black")
    top = max((v for _, v in items), default=1.0) or 1.0
    for n, (label, value) in enumerate(items, start=1):
        y = n * row + 6
        draw.text((10, y + 4), label[:48], fill="black")
        draw.rectangle(
            (label_width, y, label_width + int((width - label_width - 80) * value / top), y + row - 8),
            fill=(66, 133, 244),
        )
        draw.text((width - 70, y + 4), f"{value:.3f}", fill="black")
    canvas.save(path, format="PNG")
