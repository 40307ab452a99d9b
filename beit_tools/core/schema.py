"""What transformers itself expects: the hub-canonical keys and shapes of the target model.

The model is built on the meta device (no memory, no random init) and its state dict names are put
back into the saved form the way `save_pretrained` does. `convert` checks its plan against this
before writing, so a transformers release that changes the model cannot slip a missing or misshapen
tensor past it.
"""

from __future__ import annotations

from typing import Any

import torch

from beit_tools.core.arch import Arch
from beit_tools.errors import BeitToolsError


def beit_config(arch: Arch, id2label: dict[int, str] | None = None, dtype: torch.dtype | None = None) -> Any:
    """A transformers BeitConfig for `arch`, with labels, architectures and dtype set."""
    from transformers import BeitConfig

    fields = arch.config_fields()
    if id2label is not None:
        fields["id2label"] = {i: n for i, n in id2label.items()}
        fields["label2id"] = {n: i for i, n in id2label.items()}
    config = BeitConfig(**fields)
    config.architectures = [arch.family.hf_class]
    if dtype is not None:
        config.dtype = dtype
    return config


def target_schema(config: Any) -> dict[str, tuple[int, ...]]:
    """Hub-canonical key -> shape that `save_pretrained` writes for this config."""
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


def check_schema(produced: dict[str, tuple[int, ...]], config: Any) -> None:
    problems = schema_problems(produced, target_schema(config))
    if problems:
        raise BeitToolsError(
            "the converted model would not load cleanly: " + "; ".join(problems),
            "this is a beit-tools defect or an unsupported transformers version; please report it",
        )
