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


# The segmentation picture: [image with the mask blended in][the mask][legend], geometry shared with the tests.
MAX_SIDE = 640  # the picture's panels are the image scaled to fit this
LEGEND_WIDTH = 280
LEGEND_ROW = 26
LEGEND_TOP = 34  # first row's top edge
SWATCH = (10, 18)  # x offset and side of a legend colour square
BLEND = 0.5


def panel_size(image: Image.Image) -> tuple[int, int]:
    scale = min(1.0, MAX_SIDE / max(image.size))
    return max(1, round(image.width * scale)), max(1, round(image.height * scale))


def segmentation_overlay(
    image: Image.Image, mask: list[list[int]], names: dict[int, str], path: Path, top: int = 8
) -> list[tuple[int, float]]:
    """Write the picture; `mask` is one class per pixel at the panel size. Returns the legend (class, share)."""
    colours = palette(max(len(names), 1))
    width, height = panel_size(image)
    flat = [c for row in mask for c in row]
    painted = Image.new("RGB", (width, height))
    painted.putdata([colours[c % len(colours)] for c in flat])
    base = image.convert("RGB").resize((width, height))
    counts: dict[int, int] = {}
    for c in flat:
        counts[c] = counts.get(c, 0) + 1
    legend = sorted(((c, n / len(flat)) for c, n in counts.items()), key=lambda item: -item[1])[:top]
    canvas = Image.new("RGB", (2 * width + LEGEND_WIDTH, max(height, LEGEND_TOP + LEGEND_ROW * len(legend))), "white")
    canvas.paste(Image.blend(base, painted, BLEND), (0, 0))
    canvas.paste(painted, (width, 0))
    draw = ImageDraw.Draw(canvas)
    left = 2 * width
    draw.text((left + SWATCH[0], 10), "top classes (share of pixels)", fill="black")
    for row, (c, share) in enumerate(legend):
        y = LEGEND_TOP + row * LEGEND_ROW
        x = left + SWATCH[0]
        draw.rectangle((x, y, x + SWATCH[1] - 1, y + SWATCH[1] - 1), fill=colours[c % len(colours)])
        draw.text((x + SWATCH[1] + 8, y + 3), f"{names.get(c, str(c))[:28]}  {100 * share:.1f}%", fill="black")
    canvas.save(path, format="PNG")
    return legend


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
