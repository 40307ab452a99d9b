"""Class names for the converted config, resolved offline.

Order of preference: a `--labels` file, the mmseg `meta.CLASSES` inside the checkpoint, a bundled list
whose size matches the head (ImageNet-1k, ImageNet-22k's 21841 classes, ADE20K-150), then LABEL_i.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from beit_tools.core.arch import Arch, Family
from beit_tools.errors import BeitToolsError

# (family, number of classes) -> bundled list
BUNDLED = {
    (Family.CLASSIFICATION, 1000): "imagenet-1k",
    (Family.CLASSIFICATION, 21841): "imagenet-22k",
    (Family.SEGMENTATION, 150): "ade20k-150",
}


@dataclass(frozen=True)
class Labels:
    id2label: dict[int, str]
    source: str
    bundled: str | None = None  # the bundled list's name when the names are one of them (dataset of the head)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "count": len(self.id2label), "set": self.bundled}


def bundled(name: str) -> dict[int, str]:
    text = resources.files("beit_tools.data").joinpath("labels", f"{name}.json").read_text(encoding="utf-8")
    return {int(k): v for k, v in json.loads(text).items()}


def read_labels_file(path: Path) -> dict[int, str]:
    """A JSON object id -> name (or a JSON list), or plain text with one name per line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise BeitToolsError(f"cannot read labels file {path}: {e.strerror or e}", "check the --labels path") from e
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as e:
            raise BeitToolsError(f"labels file {path} is not valid JSON: {e.msg} at line {e.lineno}") from e
        if isinstance(data, list):
            return {i: str(n) for i, n in enumerate(data)}
        try:
            return {int(k): str(v) for k, v in data.items()}
        except ValueError as e:
            raise BeitToolsError(f"labels file {path} has a non-integer id", 'use {"0": "name", ...}') from e
    return {i: line.strip() for i, line in enumerate(line for line in text.splitlines() if line.strip())}


def resolve_labels(
    arch: Arch, classes_in_file: list[str] | None, labels_file: Path | None, label_set: str | None = None
) -> Labels | None:
    """id2label for the converted model; None for masked-image-modeling, which has visual tokens, not labels.

    `label_set` names a bundled list the source is known to use (a registry entry's), before the head-size guess.
    """
    if arch.family is Family.MIM:
        if labels_file is not None:
            raise BeitToolsError("--labels does not apply to a masked-image-modeling checkpoint (it has no classes)")
        return None
    n = arch.num_labels
    if labels_file is not None:
        id2label = read_labels_file(labels_file)
        if sorted(id2label) != list(range(n)):
            raise BeitToolsError(
                f"labels file {labels_file} names {len(id2label)} classes with ids "
                f"{min(id2label, default=0)}-{max(id2label, default=0)}, but the head has {n} (ids 0-{n - 1})",
                "give exactly one name per class",
            )
        return Labels(id2label, f"--labels {labels_file}")
    if label_set is not None and len(bundled(label_set)) == n:
        return Labels(bundled(label_set), f"{label_set} (bundled; the registry entry's label set)", label_set)
    name = BUNDLED.get((arch.family, n))
    if classes_in_file and len(classes_in_file) == n:
        names = {i: c.strip() for i, c in enumerate(classes_in_file)}
        same = name is not None and names == {i: c.strip() for i, c in bundled(name).items()}
        return Labels(names, "meta.CLASSES in the checkpoint", name if same else None)
    if name is not None:
        return Labels(bundled(name), f"{name} (bundled; chosen by the head's {n} classes, --labels overrides)", name)
    return Labels({i: f"LABEL_{i}" for i in range(n)}, "generic LABEL_i (--labels names them)")
