"""Regenerate the sample outputs in README.md from real runs on synthetic checkpoints.

Each README code block that starts with `$ beit-tools ...` is replaced by what that command prints
now (110 columns). A block may keep only some sections: lines `…` in the README mark cut parts, and
the cut is made again at the same section titles.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file

from beit_tools.core.arch import Family
from beit_tools.synthetic import default_spec, tiny_arch, write_synthetic

README = Path(__file__).resolve().parent.parent / "README.md"
EXE = str(Path(sys.executable).with_name("beit-tools"))
BLOCK = re.compile(r"```\n\$ (beit-tools [^\n]+)\n(.*?)```", re.S)
SECTION = re.compile(r"^(File|Detected|Tensors|Mapping|Verify|Hidden states|Top \d|Conversion|warning:|✓|✗)")


def build(work: Path) -> None:
    write_synthetic(
        work / "beit_ft1k.pth",
        default_spec(tiny_arch(Family.CLASSIFICATION, num_labels=1000)).with_(training_extras=True),
    )
    write_synthetic(work / "beit_pt22k.pth", default_spec(tiny_arch(Family.MIM)).with_(training_extras=True))
    ade = tiny_arch(Family.SEGMENTATION, num_labels=150, num_hidden_layers=12, out_indices=(3, 5, 7, 11))
    write_synthetic(work / "beit_ade.pth", default_spec(ade).with_(training_extras=True))


def run(work: Path, command: str) -> str:
    env = {**os.environ, "COLUMNS": "110"}
    done = subprocess.run([EXE, *command.split()[1:]], cwd=work, capture_output=True, text=True, env=env)
    return "\n".join(line.rstrip() for line in done.stdout.splitlines())


def sections(text: str) -> list[list[str]]:
    out: list[list[str]] = []
    for line in text.splitlines():
        if SECTION.match(line) or not out:
            out.append([])
        out[-1].append(line)
    return out


def keep_like(old: str, new: str) -> str:
    """Keep the sections of `new` whose titles `old` kept, with `…` where `old` cut."""
    if "…\n" not in old + "\n":
        return new
    kept_titles = [s[0] for s in sections(old) if s and s[0] != "…"]
    pieces, cut = [], False
    for section in sections(new):
        if any(section[0].startswith(t.split()[0]) and section[0][:12] == t[:12] for t in kept_titles):
            pieces.append("\n".join(section))
            cut = False
        elif not cut:
            pieces.append("…")
            cut = True
    return "\n".join(pieces)


VARIANTS_BLOCK = re.compile(r"(<!-- variants:start -->\n).*?(<!-- variants:end -->)", re.S)


def variants_markdown() -> str:
    """The registry as a Markdown table, for the README."""
    from beit_tools.core.variants import VARIANTS

    header = "| name | series | family | params | image | labels | inputs | file | known logits | Hub-style folder |"
    rows = [header, "|" + " --- |" * 10]
    for v in VARIANTS.values():
        known = "-" if v.expected is None else "shape only" if v.expected.first is None else "yes"
        rows.append(
            f"| `{v.name}` | {v.series} | {v.family.value} | {v.params_m:.1f}M | {v.image_size} "
            f"| {v.labels or 'visual tokens'} | {v.normalization} | `{v.filename}` | {known} | `{v.output_name}` |"
        )
    return "\n".join(rows) + "\n"


def main() -> None:
    text = VARIANTS_BLOCK.sub(lambda m: m.group(1) + variants_markdown() + m.group(2), README.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build(work)
        run(work, "beit-tools convert beit_ft1k.pth -o beit-ft1k-hf")
        broken = work / "broken"
        subprocess.run(["cp", "-r", str(work / "beit-ft1k-hf"), str(broken)], check=True)
        weights = load_file(str(broken / "model.safetensors"))
        k, v = (f"beit.encoder.layer.1.attention.attention.{n}.weight" for n in ("key", "value"))
        weights[k], weights[v] = weights[v].clone(), weights[k].clone()
        save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
        (work / "beit-ft1k-hf").rename(work / "first-run")

        def replace(match: re.Match[str]) -> str:
            command, old = match.group(1), match.group(2).rstrip("\n")
            if command.startswith("beit-tools convert"):
                subprocess.run(["rm", "-rf", str(work / "beit-ft1k-hf")], check=True)
            new = keep_like(old, run(work, command))
            return f"```\n$ {command}\n{new}\n```"

        text = BLOCK.sub(replace, text)
    README.write_text(text)


if __name__ == "__main__":
    main()
