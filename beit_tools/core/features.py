"""Which hidden states a segmentation model feeds its FPN, and how to make stock transformers feed the original's.

unilm's UperNet takes the outputs of blocks `out_indices` (hidden_states[i + 1], index 0 being the
embeddings). transformers' BeitForSemanticSegmentation takes hidden_states[j + offset] for j in its
config's `out_indices`; the offset is measured by running the installed transformers on a tiny model
(`probe_offset`), never assumed from its version. The faithful layout picks j = i + 1 - offset, and
when the last j lies beyond the last layer it appends pass-through layers (all-zero weights: computed,
never read). The transformers layout keeps the original numbers, as the Hub's ADE20K models do.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from beit_tools.core.arch import BEIT, FLAVORS, Arch, Family
from beit_tools.errors import BeitToolsError

FAITHFUL, TRANSFORMERS = "faithful", "transformers"
KINDS = (FAITHFUL, TRANSFORMERS)


@dataclass(frozen=True)
class FeatureLayout:
    kind: str  # faithful | transformers
    original: tuple[int, ...]  # blocks whose outputs the original feeds its FPN
    out_indices: tuple[int, ...]  # what config.json says
    added_layers: int  # pass-through layers appended so the last index exists
    offset: int  # the installed transformers feeds hidden_states[j + offset] for j in out_indices
    layers: int  # layers of the written model (the source's plus the added ones)

    @property
    def fed_states(self) -> list[int]:
        """hidden_states indices transformers feeds its FPN with this layout (Python indexing: -1 is the last)."""
        return [(j + self.offset) % (self.layers + 1) for j in self.out_indices]

    @property
    def faithful(self) -> bool:
        return self.fed_states == [i + 1 for i in self.original]

    def fed_blocks(self) -> list[str]:
        return [state_name(s) for s in self.fed_states]

    def describe(self) -> str:
        added = f" plus {self.added_layers} pass-through layer(s)" if self.added_layers else ""
        fed = ", ".join(self.fed_blocks())
        if self.faithful:
            return (
                f"faithful: out_indices {list(self.out_indices)}{added}, so transformers feeds its FPN the outputs "
                f"of blocks {', '.join(map(str, self.original))}, as the original"
            )
        return (
            f"transformers: out_indices {list(self.out_indices)} as the Hub's models; transformers then feeds its FPN "
            f"{fed}, where the original uses blocks {', '.join(map(str, self.original))}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"faithful": self.faithful, "fed": self.fed_blocks()}


def state_name(index: int) -> str:
    return "embeddings" if index == 0 else f"block {index - 1}"


def plan_layout(arch: Arch, kind: str, offset: int) -> FeatureLayout:
    """The out_indices (and added layers) of `kind` for a segmentation architecture."""
    if kind not in KINDS:
        raise BeitToolsError(f"unknown feature layout {kind!r}", f"use one of {', '.join(KINDS)}")
    original = tuple(arch.out_indices)
    if kind == TRANSFORMERS:
        return FeatureLayout(kind, original, original, 0, offset, arch.num_hidden_layers)
    wanted = tuple(i + 1 - offset for i in original)
    if min(wanted) < 1:
        raise BeitToolsError(
            f"this transformers reads hidden_states[j{offset:+d}], so block {min(original)} cannot be reached",
            "use --feature-indices transformers",
        )
    added = max(0, max(wanted) - arch.num_hidden_layers)
    return FeatureLayout(kind, original, wanted, added, offset, arch.num_hidden_layers + added)


def target_arch(arch: Arch, layout: FeatureLayout | None) -> Arch:
    """The architecture config.json describes: q/v biases always, and the layout's indices and added layers."""
    changes: dict[str, Any] = {"qkv_bias": True}
    if layout is not None:
        changes |= {
            "num_hidden_layers": arch.num_hidden_layers + layout.added_layers,
            "out_indices": layout.out_indices,
        }
    return replace(arch, **changes)


# --- measuring the installed transformers -------------------------------------------------------

FPN_LEVELS = ("fpn1", "fpn2", "fpn3", "fpn4")  # the FPN as separate modules (data2vec-vision, transformers 4.x)


def run_fpn(model: Any, maps: Any) -> tuple[Any, ...]:
    """The model's FPN on four feature maps, whichever way the model holds it."""
    if hasattr(model, "fpn"):
        return model.fpn(tuple(maps))
    return tuple(getattr(model, name)(m) for name, m in zip(FPN_LEVELS, maps, strict=True))


def capture_fpn_inputs(model: Any, captured: list[Any]) -> list[Any]:
    """Hooks that record the feature maps the model's forward feeds its FPN; returns them for removal."""
    if hasattr(model, "fpn"):
        return [model.fpn.register_forward_pre_hook(lambda module, args: captured.extend(args[0]))]
    return [getattr(model, n).register_forward_pre_hook(lambda m, args: captured.append(args[0])) for n in FPN_LEVELS]


def probe_offset(model_class: Any = None, flavor: str = BEIT) -> int:
    """Run a tiny random segmentation model of `flavor` and see which hidden states reach its FPN."""
    import torch
    import transformers

    cls = model_class or getattr(transformers, FLAVORS[flavor].classes[Family.SEGMENTATION])
    out_indices = [1, 2, 3, 4]
    config = getattr(transformers, FLAVORS[flavor].config_class)(
        hidden_size=16,
        num_hidden_layers=6,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=32,
        patch_size=16,
        out_indices=out_indices,
        use_auxiliary_head=False,
        layer_scale_init_value=0.5,
        pool_scales=[1, 2],
    )
    torch.manual_seed(0)
    model = cls(config).eval()
    captured: list[torch.Tensor] = []
    capture_fpn_inputs(model, captured)
    with torch.no_grad():
        states = model(pixel_values=torch.randn(1, 3, 32, 32), output_hidden_states=True).hidden_states
    maps = [s[:, 1:].transpose(1, 2).reshape(1, 16, 2, 2) for s in states]
    found = []
    for j, feature in zip(out_indices, captured, strict=True):
        hits = [k for k, m in enumerate(maps) if m.shape == feature.shape and torch.equal(m, feature)]
        if len(hits) != 1:
            break
        found.append(hits[0] - j)
    if len(found) != len(out_indices) or len(set(found)) != 1:
        raise BeitToolsError(
            f"transformers {transformers.__version__} feeds its segmentation FPN in a way beit-tools does not know",
            "convert with --feature-indices transformers, and please report it",
        )
    return found[0]


def reading_offset(flavor: str = BEIT) -> int:
    """`probe_offset` for the installed transformers, cached on disk by its version (inspect stays light)."""
    from importlib.metadata import version

    from beit_tools.core.download import cache_root

    path = cache_root() / "probes" / f"{flavor}-fpn-reading-transformers-{version('transformers')}.json"
    try:
        return int(json.loads(path.read_text())["offset"])
    except (OSError, ValueError, KeyError):
        pass
    offset = probe_offset(flavor=flavor)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"offset": offset}))
    except OSError:
        pass  # a read-only cache only costs the probe next time
    return offset


def layout_for(arch: Arch, kind: str) -> FeatureLayout | None:
    """The feature layout of a segmentation architecture (None for the other families)."""
    if arch.family is not Family.SEGMENTATION:
        return None
    return plan_layout(arch, kind, reading_offset(arch.flavor))
