"""The training step's optional regularisers and its rank metric, against the loss functions applied by hand.

Shapes: B batch, N tokens, D width.
"""

import copy
import math

import torch
from conftest import loop_vicreg, tiny_cfg

from vjepa.data.loader import build_mask_generator
from vjepa.losses import effective_rank
from vjepa.models.build import build_models
from vjepa.objectives.registry import Planned
from vjepa.objectives.vicreg import VICReg, VICRegOptions
from vjepa.train.step import Objective, compute_targets, forward_loss, grid_of


def test_effective_rank_hand_values():
    # Two orthogonal directions of equal variance in 3-D: rank 2, whatever the rotation and offset.
    x = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]])
    assert math.isclose(effective_rank(x).item(), 2.0, rel_tol=1e-5)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0)))
    assert math.isclose(effective_rank(x @ q + 5.0).item(), 2.0, rel_tol=1e-4)
    # Variances 3:1 along two directions: exp(-(3/4 ln 3/4 + 1/4 ln 1/4)).
    y = torch.tensor([[math.sqrt(3), 0], [-math.sqrt(3), 0], [0, 1], [0, -1]])
    want = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert math.isclose(effective_rank(y).item(), want, rel_tol=1e-5)
    assert math.isclose(effective_rank(torch.ones(5, 4)).item(), 1.0, rel_tol=1e-5)  # no variance at all


def test_effective_rank_of_non_finite_input_is_nan_not_an_error():
    # linalg.eigh fails to converge on NaN or inf entries, or on a covariance that overflows; the log-step metric
    # must return NaN instead, so that the loop's non-finite check can speak.
    for bad in (float("nan"), float("inf"), 1e30):
        x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
        x[3, 2] = bad
        assert math.isnan(effective_rank(x).item()), bad
    assert math.isclose(effective_rank(torch.eye(4)).item(), 3.0, rel_tol=1e-4)  # finite input unchanged


def test_forward_loss_adds_the_encoder_vicreg_terms_per_family():
    torch.manual_seed(0)
    cfg = tiny_cfg("unused")
    encoder, predictor = build_models(cfg)
    target = copy.deepcopy(encoder)
    for p in list(encoder.parameters()) + list(predictor.parameters()):  # a non-trivial target/context gap
        p.data.add_(0.01 * torch.randn_like(p))
    video = torch.randn(4, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))
    masks = build_mask_generator(cfg)(0, 4)
    grid = grid_of(video, 2, 16)
    plain, fam_plain, _, _ = forward_loss(encoder, target, predictor, video, masks, grid)
    vicreg = [Planned("vicreg", 1.0, 1.0, 1.0, VICReg(VICRegOptions(var=0.5, cov=0.1)))]
    reg, fam_reg, (_, _, rank), metrics = forward_loss(
        encoder, target, predictor, video, masks, grid, Objective(), want_rank=True, aux=vicreg
    )
    assert set(metrics) == {"vicreg", "vicreg.var", "vicreg.cov"}
    assert [f.item() for f in fam_plain] == [f.item() for f in fam_reg]  # the JEPA terms are unchanged
    with torch.no_grad():
        contexts = encoder(video, [m.ctx_idx for m in masks], [m.ctx_valid for m in masks])
    extra = 0.0
    for z in contexts:
        var_term, cov_term = loop_vicreg(z.reshape(-1, z.shape[-1]))
        extra += 0.5 * var_term + 0.1 * cov_term
    assert math.isclose(reg.item(), plain.item() + extra / len(masks), rel_tol=1e-4)
    h = compute_targets(target, video)
    assert math.isclose(rank.item(), effective_rank(h.reshape(-1, h.shape[-1])).item(), rel_tol=1e-5)
    assert 1.0 <= rank.item() <= h.shape[-1]


def test_padded_rows_of_two_groups_count_nowhere():
    """A batch holding rows of two mask groups with different kept counts (padded, valid masks) gives the mean of
    the losses of its two halves computed without padding: encoder, predictor and losses ignore padded slots."""
    torch.manual_seed(0)
    cfg = tiny_cfg("unused", "mask.group_size=4", "train.seed=1")
    encoder, predictor = build_models(cfg)
    target = copy.deepcopy(encoder)
    for p in list(encoder.parameters()) + list(predictor.parameters()):
        p.data.add_(0.01 * torch.randn_like(p))
    video = torch.randn(4, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1))
    grid = grid_of(video, 2, 16)
    gen = build_mask_generator(cfg)
    objective = Objective(var_reg_weight=0.5)
    padded = 0
    for step in range(3):
        masks = gen.for_rows(step, 2, 6, 8)  # rows 2, 3 of group 0 and rows 0, 1 of group 1
        padded += sum(m.ctx_valid is not None or m.tgt_valid is not None for m in masks)
        halves = [m.rows(2, 4) for m in gen(step, 4, 0)], [m.rows(0, 2) for m in gen(step, 4, 1)]
        loss, fams, _, _ = forward_loss(encoder, target, predictor, video, masks, grid, objective)
        parts = [
            forward_loss(encoder, target, predictor, v, h, grid, objective) for v, h in zip(video.split(2), halves)
        ]
        for f, fam in enumerate(fams):
            assert math.isclose(fam.item(), (parts[0][1][f].item() + parts[1][1][f].item()) / 2, rel_tol=1e-5)
        assert math.isclose(loss.item(), (parts[0][0].item() + parts[1][0].item()) / 2, rel_tol=1e-5)
    assert padded > 0  # the padded path was exercised
