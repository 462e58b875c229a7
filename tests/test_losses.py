"""vjepa/losses.py against hand-computed values and a loop written from the official V-JEPA 1 `reg_fn`.

Shapes: B batch, K target tokens, D width.
"""

import math

import torch

from vjepa.losses import jepa_loss, prediction_std, variance_hinge


def test_jepa_loss_hand_values():
    pred = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]])  # [1, 2, 2]
    target = torch.tensor([[[0.0, 0.0], [1.0, -3.0]]])
    assert jepa_loss(pred, target).item() == (1 + 2 + 1 + 3) / 4  # mean |z - h|
    assert jepa_loss(pred, target, p=2.0).item() == (1 + 4 + 1 + 9) / 4 / 2  # mean |z - h|^2 / 2
    valid = torch.tensor([[True, False]])  # the padded second slot is left out
    assert jepa_loss(pred, target, valid=valid).item() == (1 + 2) / 2


def official_reg(z: list[torch.Tensor]) -> torch.Tensor:
    """The official loop: std over patches (dim 1) per family, averaged over families, then mean(relu(1 - std))."""
    pstd = sum(torch.sqrt(zi.var(dim=1) + 0.0001) for zi in z) / len(z)
    return torch.mean(torch.relu(1.0 - pstd))


def test_variance_hinge_matches_the_official_definition():
    g = torch.Generator().manual_seed(0)
    z = [torch.randn(3, 5, 4, generator=g) * 0.7, torch.randn(3, 7, 4, generator=g) * 1.3]
    got = variance_hinge([prediction_std(zi) for zi in z])
    assert torch.allclose(got, official_reg(z))
    # Hand value: two tokens a and -a per channel have std sqrt(2) * a.
    pred = torch.tensor([[[0.25, 1.0], [-0.25, -1.0]]])  # [1, 2, 2]
    std = prediction_std(pred, eps=0.0)
    assert torch.allclose(std, torch.tensor([[math.sqrt(2) * 0.25, math.sqrt(2) * 1.0]]))
    hinge = variance_hinge([prediction_std(pred, eps=0.0)]).item()
    assert math.isclose(hinge, (1 - math.sqrt(2) * 0.25) / 2, rel_tol=1e-6)
    # All tokens of a clip equal (the partial collapse the hinge counters): the maximal penalty, about 1.
    same = torch.ones(2, 6, 3)
    assert math.isclose(variance_hinge([prediction_std(same)]).item(), 1 - math.sqrt(1e-4), rel_tol=1e-6)


def test_prediction_std_skips_padded_slots():
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(2, 6, 3, generator=g)
    valid = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    got = prediction_std(pred, valid)
    assert torch.allclose(got[0], prediction_std(pred[:1, :4])[0], atol=1e-6)
    assert torch.allclose(got[1], prediction_std(pred[1:])[0], atol=1e-6)
