"""What transformers itself says about the target model: its config.json, and the keys and shapes it loads.

The model is built on the meta device (no memory, no random init) and its state dict names are put
back into the saved form the way `save_pretrained` does; `convert` checks its plan against this, so a
transformers release that changes the model cannot slip a missing or misshapen tensor past it.

Importing transformers' modeling costs seconds and half a gigabyte, and the answer depends only on the
transformers version and the config. So the facts are kept in a small cache keyed by both, and when
they are not there yet they are worked out on a thread while the weights are being written.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from beit_tools.core.arch import FLAVORS, Arch
from beit_tools.core.dtypes import DType
from beit_tools.errors import BeitToolsError


def beit_config(arch: Arch, id2label: dict[int, str] | None = None, dtype: DType | None = None) -> Any:
    """A transformers BeitConfig for `arch`, with labels, architectures and dtype set."""
    import transformers

    fields = arch.config_fields()
    if id2label is not None:
        fields["id2label"] = {i: n for i, n in id2label.items()}
        fields["label2id"] = {n: i for i, n in id2label.items()}
    config = getattr(transformers, FLAVORS[arch.flavor].config_class)(**fields)
    config.architectures = [arch.hf_class]
    if dtype is not None:
        config.dtype = dtype.name
    return config


def target_schema(config: Any) -> dict[str, tuple[int, ...]]:
    """Hub-canonical key -> shape that `save_pretrained` writes for this config."""
    import torch
    import transformers

    cls = getattr(transformers, config.architectures[0])
    with torch.device("meta"):
        model = cls(config)
    state = model.state_dict()
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # transformers 4.x keeps the saved names in its modules
        pass
    else:
        state = revert_weight_conversion(model, state)
    return {k: tuple(v.shape) for k, v in state.items()}


def schema_problems(produced: dict[str, tuple[int, ...]], schema: dict[str, tuple[int, ...]]) -> list[str]:
    """Disagreements between the tensors a plan writes and what transformers will load."""
    missing = sorted(set(schema) - set(produced))
    unexpected = sorted(set(produced) - set(schema))
    mismatched = sorted(k for k in set(schema) & set(produced) if schema[k] != produced[k])
    out = []
    if missing:
        out.append(f"transformers expects {len(missing)} tensor(s) the plan does not write: {', '.join(missing[:4])}")
    if unexpected:
        out.append(
            f"the plan writes {len(unexpected)} tensor(s) transformers does not know: {', '.join(unexpected[:4])}"
        )
    for k in mismatched[:3]:
        out.append(f"{k}: the plan writes {list(produced[k])}, transformers expects {list(schema[k])}")
    return out


def check_schema(produced: dict[str, tuple[int, ...]], schema: dict[str, tuple[int, ...]]) -> None:
    problems = schema_problems(produced, schema)
    if problems:
        raise BeitToolsError(
            "the converted model would not load cleanly: " + "; ".join(problems),
            "this is a beit-tools defect or an unsupported transformers version; please report it",
        )


@dataclass(frozen=True)
class Facts:
    config_json: str  # config.json exactly as save_pretrained writes it
    schema: dict[str, tuple[int, ...]]


def facts_of(arch: Arch, id2label: dict[int, str] | None, dtype: DType) -> Facts:
    """Work the facts out with transformers (imports it, and builds the model on the meta device)."""
    config = beit_config(arch, id2label, dtype)
    return Facts(config.to_json_string(use_diff=True), target_schema(config))


class FactsJob:
    """The facts for one conversion: from the cache at once, or computed on a thread meanwhile."""

    def __init__(self, arch: Arch, id2label: dict[int, str] | None, dtype: DType, cache: Path) -> None:
        self._inputs = (arch, id2label, dtype)
        key = json.dumps(
            {
                "transformers": version("transformers"),
                "architecture": arch.hf_class,
                "fields": arch.config_fields(),
                "id2label": id2label,
                "dtype": dtype.name,
            },
            sort_keys=True,
            default=list,
        )
        self.path = cache / "transformers" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"
        self._facts: Facts | None = self._read()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if self._facts is None:
            self._thread = threading.Thread(target=self._work, name="transformers-facts", daemon=True)
            self._thread.start()

    @property
    def cached(self) -> bool:
        return self._thread is None

    def _read(self) -> Facts | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return Facts(data["config_json"], {k: tuple(v) for k, v in data["schema"].items()})
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _work(self) -> None:
        try:
            self._facts = facts = facts_of(*self._inputs)
        except BaseException as e:  # handed to result()
            self._error = e
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + f".{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps({"config_json": facts.config_json, "schema": facts.schema}), encoding="utf-8")
            tmp.replace(self.path)
        except OSError:
            pass  # an unwritable cache only costs the work next time

    def result(self) -> Facts:
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._facts is not None
        return self._facts
