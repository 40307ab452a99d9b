"""Regenerate beit_tools/data/labels/*.json (run with the dev environment: timm ships the synset data).

ImageNet-1k and ImageNet-22k names come from timm's offline class data; the 21841-class list is the
21843-entry ImageNet-21k list without entries 9205 and 15027, which the BEiT ft22k heads lack.
ADE20K-150 names and colours are the mmseg class list and palette in scripts/ade20k_classes.txt and
scripts/ade20k_palette.txt (one "R G B" line per class). RVL-CDIP's 16 document classes, in the
dataset's label order, are in scripts/rvlcdip_classes.txt.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "beit_tools" / "data" / "labels"
DROPPED_FROM_21K = (9205, 15027)


def _lines(name: str) -> list[str]:
    text = resources.files("timm.data._info").joinpath(name).read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def main() -> None:
    lemmas = dict(line.split("\t", 1) for line in _lines("imagenet_synset_to_lemma.txt"))
    in1k = _lines("imagenet_synsets.txt")
    in21k = _lines("imagenet21k_goog_synsets.txt")
    in22k = [s for i, s in enumerate(in21k) if i not in DROPPED_FROM_21K]
    assert len(in1k) == 1000 and len(in21k) == 21843 and len(in22k) == 21841
    assert in22k == _lines("imagenet22k_synsets.txt"), "timm's 22k list no longer matches 21k minus two"
    ade = [line.strip() for line in (HERE / "ade20k_classes.txt").read_text().splitlines() if line.strip()]
    assert len(ade) == 150
    rvlcdip = [line.strip() for line in (HERE / "rvlcdip_classes.txt").read_text().splitlines() if line.strip()]
    assert len(rvlcdip) == 16
    OUT.mkdir(parents=True, exist_ok=True)
    for name, names in (
        ("imagenet-1k", [lemmas[s] for s in in1k]),
        ("imagenet-22k", [lemmas[s] for s in in22k]),
        ("ade20k-150", ade),
        ("rvlcdip-16", rvlcdip),
    ):
        path = OUT / f"{name}.json"
        path.write_text(json.dumps({str(i): n for i, n in enumerate(names)}, indent=0, ensure_ascii=False) + "\n")
        print(f"{path}: {len(names)} labels")
    palette = [[int(c) for c in line.split()] for line in (HERE / "ade20k_palette.txt").read_text().splitlines()]
    assert len(palette) == 150 and all(len(c) == 3 for c in palette)
    (OUT.parent / "ade20k-palette.json").write_text(json.dumps(palette) + "\n")


if __name__ == "__main__":
    main()
