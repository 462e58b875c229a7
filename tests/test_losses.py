"""vjepa/losses.py against hand-computed values and a loop written from the official V-JEPA 1 `reg_fn`.

Shapes: B batch, K target tokens, D width.
"""

import math

import torch
from conftest import loop_vicreg

from vjepa.losses import jepa_loss, prediction_std, token_vicreg, variance_hinge


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


def test_token_vicreg_hand_values_and_loop():
    # Hand values: two uncorrelated channels with variances 2/3 and 8/3 (tokens of one clip are samples too).
    z = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]], [[0.0, 2.0], [0.0, -2.0]]])  # [2, 2, 2]
    var_term, cov_term = token_vicreg(z, eps=0.0)
    assert math.isclose(var_term.item(), (1 - math.sqrt(2 / 3)) / 2, rel_tol=1e-6)
    assert cov_term.item() == 0.0
    # Perfectly correlated channels: cov = var = 2/3, cov_term = 2 * (2/3)^2 / 2.
    z = torch.tensor([[[1.0, 1.0], [-1.0, -1.0]], [[0.0, 0.0], [0.0, 0.0]]])
    assert math.isclose(token_vicreg(z)[1].item(), (2 / 3) ** 2, rel_tol=1e-6)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 5, 4, generator=g) @ torch.randn(4, 4, generator=g) * 0.5 + 2.0  # correlated, offset
    got = token_vicreg(z)
    want = loop_vicreg(z.reshape(-1, 4))
    assert math.isclose(got[0].item(), want[0], rel_tol=1e-5) and math.isclose(got[1].item(), want[1], rel_tol=1e-5)


def test_token_vicreg_skips_padded_slots_and_has_gradients():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 6, 3, generator=g, requires_grad=True)
    valid = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    z_pad = z.detach().clone()
    z_pad[0, 4:] = 1e3  # padded slots hold garbage: it must not count
    got = token_vicreg(z_pad, valid)
    want = token_vicreg(torch.cat([z.detach()[0, :4], z.detach()[1]])[None])
    assert torch.allclose(torch.stack(got), torch.stack(want))
    var_term, cov_term = token_vicreg(z, valid)
    (var_term + cov_term).backward()
    assert z.grad is not None and z.grad[0, :4].abs().sum() > 0 and z.grad[0, 4:].abs().sum() == 0
    # Fewer than two tokens: no statistics, a zero that still backpropagates.
    one = torch.randn(1, 1, 3, requires_grad=True)
    var_term, cov_term = token_vicreg(one)
    assert var_term.item() == 0.0 and cov_term.item() == 0.0


def test_jepa_loss_with_padding_weighs_every_sample_equally():
    # Rows of two mask groups: sample 0 keeps 1 target token (second slot padded), sample 1 keeps 2. Each sample's
    # mean counts once, as when each group's rows are averaged on their own and the groups averaged.
    pred = torch.tensor([[[2.0], [9.0]], [[1.0], [5.0]]])  # [2, 2, 1]
    target = torch.zeros(2, 2, 1)
    valid = torch.tensor([[True, False], [True, True]])
    assert jepa_loss(pred, target, valid=valid).item() == (2.0 + (1.0 + 5.0) / 2) / 2  # tokens alike: 8 / 3
    halves = jepa_loss(pred[:1, :1], target[:1, :1]), jepa_loss(pred[1:], target[1:])
    assert jepa_loss(pred, target, valid=valid).item() == (halves[0].item() + halves[1].item()) / 2


def test_token_vicreg_without_a_process_group_is_local():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(2, 5, 3, generator=g)
    a, b = token_vicreg(z), token_vicreg(z, across_processes=False)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
