"""The reference forward pass (verify's independent original) agrees with timm's BEiT within 1e-5."""

from __future__ import annotations

import pytest
import torch

from beit_tools.core.arch import Family
from beit_tools.core.reference import reference_forward
from beit_tools.synthetic import make_state_dict, tiny_abs_pos_arch, tiny_arch
from tests.reference_timm import timm_block_outputs, timm_model, timm_outputs

ATOL = 1e-5

ARCHS = {
    "classification-mean": tiny_arch(Family.CLASSIFICATION),
    "classification-cls": tiny_arch(Family.CLASSIFICATION, use_mean_pooling=False, image_size=48),
    "classification-abs-pos": tiny_abs_pos_arch(Family.CLASSIFICATION),
    "mim-shared": tiny_arch(Family.MIM),
    "mim-abs-pos": tiny_abs_pos_arch(Family.MIM),
}


def pixels(arch, seed=3):
    return torch.randn(2, 3, arch.image_size, arch.image_size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_reference_logits_and_states_match_timm(name: str) -> None:
    arch = ARCHS[name]
    sd = make_state_dict(arch)
    x = pixels(arch)
    ours = reference_forward(sd, arch, x)
    expected = timm_outputs(arch, sd, x)
    assert expected.abs().max() > 0.1
    assert (ours.logits - expected).abs().max().item() <= ATOL
    with torch.no_grad():
        states = timm_block_outputs(timm_model(arch, sd), x)
    for i, state in enumerate(states):
        assert (ours.hidden_states[i + 1] - state).abs().max().item() <= ATOL, f"block {i}"


def test_reference_segmentation_backbone_matches_timm() -> None:
    arch = tiny_arch(Family.SEGMENTATION)
    sd = make_state_dict(arch)
    x = pixels(arch)
    ours = reference_forward(sd, arch, x)
    with torch.no_grad():
        states = timm_block_outputs(timm_model(arch, sd), x)
    for i, state in enumerate(states):
        assert (ours.hidden_states[i + 1] - state).abs().max().item() <= ATOL, f"block {i}"
    assert ours.logits.shape == (2, arch.num_labels, 4 * arch.window, 4 * arch.window)
