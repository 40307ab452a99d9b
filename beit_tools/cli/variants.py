"""`beit-tools variants`: the official checkpoints convert and verify know by name."""

from __future__ import annotations

from beit_tools.cli.common import JsonOption


def variants(json_output: bool = JsonOption) -> None:
    """List the official BEiT checkpoints: name, family, size, labels, file and whether its logits are known.

    Example: `beit-tools convert --variant base-ft22kto1k` downloads, converts and names the folder.
    """
    from beit_tools.cli import render
    from beit_tools.core.variants import VARIANTS

    if json_output:
        render.print_json([v.to_dict() for v in VARIANTS.values()])
    else:
        render.render_variants(list(VARIANTS.values()))
