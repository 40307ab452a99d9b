"""`make compat`: do the folders convert writes load and compute right in transformers 4.x too?

`prepare DIR` (project venv): convert a synthetic checkpoint of each family into DIR and store the
reference forward pass on the source tensors. `check DIR` (a venv with transformers 4.x): load each
folder with from_pretrained, require zero missing/unexpected/mismatched keys, and compare the hidden
states of the original's blocks and the logits with the stored reference, within 1e-4 for every
family (segmentation folders use the faithful feature layout, which 4.x reads as 5.x does).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

FAMILIES = {
    "image-classification": "BeitForImageClassification",
    "masked-image-modeling": "BeitForMaskedImageModeling",
    "semantic-segmentation": "BeitForSemanticSegmentation",
}
ATOL = 1e-4


def prepare(root: Path) -> None:
    from beit_tools.core.arch import Family
    from beit_tools.core.convert import ConvertOptions, convert
    from beit_tools.core.reference import reference_forward
    from beit_tools.synthetic import default_spec, make_state_dict, tiny_arch, write_synthetic

    shutil.rmtree(root, ignore_errors=True)
    for family in Family:
        arch = tiny_arch(family)
        source = write_synthetic(root / f"{family.value}.pth", default_spec(arch))
        convert(ConvertOptions(source, root / family.value))
        pixels = torch.randn(1, 3, arch.image_size, arch.image_size, generator=torch.Generator().manual_seed(0))
        ref = reference_forward(make_state_dict(arch), arch, pixels)
        torch.save({"pixels": pixels, "logits": ref.logits, "hidden": ref.hidden_states}, root / f"{family.value}.ref")


def check(root: Path) -> int:
    import transformers

    failures = 0
    for family, cls_name in FAMILIES.items():
        model, info = getattr(transformers, cls_name).from_pretrained(root / family, output_loading_info=True)
        ref = torch.load(root / f"{family}.ref")
        with torch.no_grad():
            out = model.eval()(pixel_values=ref["pixels"], output_hidden_states=True)
        problems = {k: v for k, v in info.items() if v}
        original = out.hidden_states[: len(ref["hidden"])]  # added pass-through layers are never read
        hidden = max((a - b).abs().max().item() for a, b in zip(original, ref["hidden"], strict=True))
        logits = (out.logits - ref["logits"]).abs().max().item()
        ok = not problems and hidden <= ATOL and logits <= ATOL
        failures += not ok
        print(
            f"transformers {transformers.__version__} {family}: {'ok' if ok else 'FAIL'} "
            f"(load problems {problems or 'none'}, hidden max |Δ| {hidden:.1e}, logits max |Δ| {logits:.1e})"
        )
    return failures


if __name__ == "__main__":
    mode, folder = sys.argv[1], Path(sys.argv[2])
    if mode == "prepare":
        prepare(folder)
    else:
        sys.exit(check(folder))
