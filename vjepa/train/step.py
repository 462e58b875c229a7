"""One V-JEPA training step (paper Sec. 3, Appendix B): targets, per-family prediction, loss, update, EMA.

    h = LN(target_encoder(clip))                    full clip, no grad, layer norm without affine
    for each mask family f:
        z_f = encoder(clip, ctx_idx_f)              context tokens only
        p_f = predictor(z_f, ctx_idx_f, tgt_idx_f)  predictions at the target positions
        loss_f = mean |p_f - h[tgt_idx_f]|^p / p
    loss = mean_f loss_f  (+ optional variance hinge on p_f)
    loss += lambda(step) * mean_f dense_f           V-JEPA 2.1 dense (context) loss, when optim.dense_weight > 0:
                                                    the predictor's context head at ctx_idx_f against h there
                                                    (vjepa/train/dense.py)
    loss = jepa_scale * loss + sum_i w_i aux_i(state)   auxiliary objectives (vjepa/objectives), when configured
    AdamW step (clip after warmup: one global norm, or encoder and predictor each as V-JEPA 1), then EMA:
    target <- m target + (1 - m) encoder
    (a loss guard, when given, can veto the AdamW step of a spiking loss; the EMA update still runs:
    vjepa/train/loss_guard.py)

With V-JEPA 2.1 deep supervision (model.levels = 4) the encoders emit 4 concatenated levels and h is layer normed
per D-wide chunk (`compute_targets`); every width below is then 4 D.

Pixel targets (`optim.target=pixels`, vjepa/pixels.py): h is the clip's normalised pixels per token instead (the
target encoder is not run; it is still EMA-updated, so export and evaluation read it as usual) and loss_f is the
pixel loss (L2 or L1 per token); `target_spread`, `token_spread` and the rank then describe those pixel targets.

The families are computed together (`pack`, model.pack_families, the default): the encoder embeds the clip once
and runs its blocks on all families' kept tokens as one packed sequence per clip, and the predictor does the same
with all families' context and mask tokens; attention stays within each family (vjepa/models/layers.py), so the
numbers are those of one call per family, to float rounding.

No host synchronisation here: metrics are returned as tensors and read on log steps only. With no auxiliary
objective no step state is built: the step is the plain one, operation for operation.

Shapes: B batch, N tokens, Kc context tokens, Kt target tokens, D target width (L levels x encoder width).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from vjepa.losses import effective_rank, jepa_loss, prediction_std, variance_hinge
from vjepa.masks.ops import gather_tokens
from vjepa.objectives.base import FamilyState, StepState
from vjepa.objectives.registry import Planned
from vjepa.pixels import pixel_loss, pixel_targets
from vjepa.train.dense import chunk_layer_norm, context_distance, dense_lambda, dense_loss, distance_weights
from vjepa.train.ema import ema_update
from vjepa.train.optim import set_hyper
from vjepa.train.schedules import Hyper


@dataclass(frozen=True)
class Objective:
    """The plain loss: the L1 (p = loss_exp) feature loss plus the optional V-JEPA 1 variance hinge. Everything
    else (VICReg, the catalogue) is an auxiliary objective (vjepa/objectives), passed to the step as `aux`."""

    loss_exp: float = 1.0
    var_reg_weight: float = 0.0  # V-JEPA 1 variance hinge on the predictions
    target: str = "features"  # features | pixels (vjepa/pixels.py)
    pixel_loss: str = "l2"  # pixel targets: l2 | l1
    levels: int = 1  # V-JEPA 2.1 deep supervision: encoder levels concatenated in the target width
    dense_weight: float = 0.0  # V-JEPA 2.1 dense (context) loss weight lambda; 0: off
    dense_warmup_start: int = 0
    dense_warmup_end: int = 0
    dense_distance_weighting: bool = False

    @classmethod
    def from_config(cls, o, levels: int = 1) -> Objective:
        """From an OptimConfig (and the model's levels)."""
        return cls(
            o.loss_exp,
            o.var_reg_weight,
            o.target,
            o.pixel_loss,
            levels,
            o.dense_weight,
            o.dense_warmup_start,
            o.dense_warmup_end,
            o.dense_distance_weighting,
        )

    @property
    def regularised(self) -> bool:
        return self.var_reg_weight > 0

    @property
    def dense(self) -> bool:
        return self.dense_weight > 0

    def dense_lambda(self, step: int) -> float:
        """The dense loss weight at `step`."""
        return dense_lambda(self.dense_weight, self.dense_warmup_start, self.dense_warmup_end, step)


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar, this rank's loss
    family_losses: list[torch.Tensor]
    target_spread: torch.Tensor  # std over the batch of pooled target features, averaged over channels
    grad_norm: torch.Tensor | None
    token_spread: torch.Tensor | None = None  # std over the tokens of each clip of the targets, averaged
    target_rank: torch.Tensor | None = None  # effective rank of the target tokens of the batch (when asked for)
    aux: dict[str, torch.Tensor] | None = None  # auxiliary objectives: unweighted losses and metrics (detached)
    dense: torch.Tensor | None = None  # V-JEPA 2.1 dense loss, unweighted, mean over families (detached)
    skipped: bool = False  # the loss guard vetoed this step's update


@torch.no_grad()
def compute_targets(target_encoder: nn.Module, video: torch.Tensor, levels: int = 1) -> torch.Tensor:
    h = target_encoder(video)  # [B, N, D] (D = L x encoder width)
    return chunk_layer_norm(h, levels)  # [B, N, D] fp32, normed per encoder-width chunk


def predict_families(
    predictor: nn.Module,
    contexts: list[torch.Tensor],
    masks: list,
    grid: tuple[int, int, int],
    with_context: bool,
    pack: bool,
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Per family (predictions at the targets [B, Kt, D], at the context tokens [B, Kc, D] or None without the
    dense loss); `pack`: all families in one packed predictor call (vjepa/models/layers.py)."""
    if pack and len(masks) > 1:
        families = [
            dict(ctx=z, ctx_idx=m.ctx_idx, tgt_idx=m.tgt_idx, family=f, ctx_valid=m.ctx_valid, tgt_valid=m.tgt_valid)
            for f, (m, z) in enumerate(zip(masks, contexts))
        ]
        outs = predictor(None, None, None, grid, return_context=with_context, families=families)
        return [out if with_context else (out, None) for out in outs]
    result = []
    for f, (m, z) in enumerate(zip(masks, contexts)):
        kw = dict(family=f, ctx_valid=m.ctx_valid, tgt_valid=m.tgt_valid)
        if with_context:
            result.append(predictor(z, m.ctx_idx, m.tgt_idx, grid, return_context=True, **kw))
        else:
            result.append((predictor(z, m.ctx_idx, m.tgt_idx, grid, **kw), None))
    return result


def dense_term(
    ctx_pred: torch.Tensor, h: torch.Tensor, m, grid: tuple[int, int, int], objective: Objective
) -> torch.Tensor:
    """One family's dense loss: the context predictions [B, Kc, D] against h at the context tokens."""
    weights = None
    if objective.dense_distance_weighting:
        weights = distance_weights(context_distance(m.ctx_idx, m.tgt_idx, grid, m.tgt_valid))  # [B, Kc]
    return dense_loss(ctx_pred, gather_tokens(h, m.ctx_idx), objective.loss_exp, m.ctx_valid, weights)


def step_targets(
    target_encoder: nn.Module, video: torch.Tensor, grid: tuple[int, int, int], objective: Objective
) -> torch.Tensor:
    """h [B, N, D] for feature targets; the normalised pixel targets [B, N, C t p p] (no target encoder forward)."""
    if objective.target == "pixels":
        return pixel_targets(video, video.shape[2] // grid[0], video.shape[3] // grid[1])  # [B, N, C t p p]
    return compute_targets(target_encoder, video, objective.levels)  # [B, N, D] (D = levels x encoder width)


def token_loss(
    pred: torch.Tensor, target: torch.Tensor, objective: Objective, valid: torch.Tensor | None
) -> torch.Tensor:
    """One family's prediction loss: the feature loss |p - h|^p / p, or the pixel loss (L2 / L1)."""
    if objective.target == "pixels":
        return pixel_loss(pred.float(), target, objective.pixel_loss, valid)
    return jepa_loss(pred.float(), target, objective.loss_exp, valid)


def grid_of(video: torch.Tensor, tubelet: int, patch: int) -> tuple[int, int, int]:
    _, _, t, h, w = video.shape
    return (t // tubelet, h // patch, w // patch)


def forward_loss(
    encoder: nn.Module,
    target_encoder: nn.Module,
    predictor: nn.Module,
    video: torch.Tensor,  # [B, C, T, H, W]
    masks: list,  # list[FamilyMasks]
    grid: tuple[int, int, int],
    objective: Objective = Objective(),
    want_rank: bool = False,
    aux: Sequence[Planned] = (),
    step: int = 0,
    total_steps: int = 1,
    pack: bool = True,
) -> tuple[
    torch.Tensor, list[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor | None], dict[str, torch.Tensor]
]:
    """(loss, per-family JEPA losses, (target spread, token spread, rank), auxiliary losses and metrics, plus
    `dense`, the unweighted dense loss, when it is on). `pack`: the mask families go through the context encoder
    and the predictor as one packed sequence per clip (model.pack_families); False: one call per family."""
    h = step_targets(target_encoder, video, grid, objective)  # [B, N, D]
    spread = h.mean(dim=1).std(dim=0).mean()
    token_spread = h.std(dim=1).mean()  # near 0 when all tokens of a clip carry the same feature
    rank = effective_rank(h.reshape(-1, h.shape[-1])) if want_rank else None
    contexts = encoder(video, [m.ctx_idx for m in masks], [m.ctx_valid for m in masks], packed=pack)  # [B, Kc, D]
    predictions = predict_families(predictor, contexts, masks, grid, objective.dense, pack)
    family_losses, total, stds, states, dense_terms = [], 0.0, [], [], []
    for m, z, (pred, ctx_pred) in zip(masks, contexts, predictions):
        if ctx_pred is not None:
            dense_terms.append(dense_term(ctx_pred, h, m, grid, objective))
        target = gather_tokens(h, m.tgt_idx)  # [B, Kt, D]
        loss_f = token_loss(pred, target, objective, m.tgt_valid)
        if objective.var_reg_weight > 0:
            stds.append(prediction_std(pred, m.tgt_valid))  # [B, D]
        family_losses.append(loss_f.detach())
        total = total + loss_f
        if aux:
            states.append(FamilyState(m.ctx_idx, m.tgt_idx, m.ctx_valid, m.tgt_valid, z, pred, target, ctx_pred))
    loss = total / len(masks)
    if stds:
        loss = loss + objective.var_reg_weight * variance_hinge(stds)
    dense = torch.stack(dense_terms).mean() if dense_terms else None
    if dense is not None:
        loss = loss + objective.dense_lambda(step) * dense
    metrics: dict[str, torch.Tensor] = {}
    if aux:
        state = StepState(
            video=video,
            grid=grid,
            h=h,
            families=states,
            step=step,
            total_steps=total_steps,
            tubelet=video.shape[2] // grid[0],
            patch=video.shape[3] // grid[1],
            online_full=lambda: encoder(video),
        )
        loss, metrics = add_objectives(loss, aux, state)
    if dense is not None:
        metrics["dense"] = dense.detach()
    return loss, family_losses, (spread, token_spread, rank), metrics


def add_objectives(
    loss: torch.Tensor, aux: Sequence[Planned], state: StepState
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """jepa_scale * loss + sum_i weight_i * objective_i(state); metrics: each objective's unweighted loss under its
    key and its named metrics as `key.metric` (detached)."""
    scale, extra, metrics = 1.0, 0.0, {}
    for planned in aux:
        out = planned.module(state)
        scale *= planned.module.jepa_scale(planned.weight)
        extra = extra + planned.weight * out.loss.float()
        metrics[planned.key] = out.loss.detach()
        metrics.update({f"{planned.key}.{k}": v.detach() for k, v in out.metrics.items()})
    return (loss if scale == 1.0 else loss * scale) + extra, metrics


def _plain(norm: torch.Tensor) -> torch.Tensor:
    """A norm from clip_grad_norm_ as a plain tensor (FSDP2 returns a DTensor)."""
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def clip_gradients(
    encoder: nn.Module,
    predictor: nn.Module,
    optimizer: torch.optim.Optimizer,
    clip_grad: float,
    mode: str,
    want_norm: bool,
    heads: nn.Module | None = None,
) -> torch.Tensor | None:
    """Clip in place; returns the total gradient norm over everything trained before clipping (None when neither
    clipping nor want_norm). mode "global": one norm over encoder and predictor, clipped to clip_grad. mode
    "separate" (official V-JEPA 1): the encoder and the predictor are each clipped to clip_grad on their own norm.
    In both modes the auxiliary objectives' heads (if any) are clipped to clip_grad on a norm of their own, so a
    head (an online probe, say) never changes the encoder's update; the total returned is the root of the sum of
    the squares of the parts' norms."""
    head_params = [p for p in heads.parameters()] if heads is not None else []
    if clip_grad > 0 and mode == "separate":
        parts = [list(encoder.parameters()), list(predictor.parameters())] + ([head_params] if head_params else [])
        norms = [_plain(torch.nn.utils.clip_grad_norm_(ps, clip_grad)) for ps in parts]
        return torch.linalg.vector_norm(torch.stack(norms))
    skip = {id(p) for p in head_params}
    params = [p for g in optimizer.param_groups for p in g["params"] if id(p) not in skip]
    parts = [params] + ([head_params] if head_params else [])
    if clip_grad > 0:
        norms = [_plain(torch.nn.utils.clip_grad_norm_(ps, clip_grad)) for ps in parts]
    elif want_norm:
        norms = [_plain(torch.nn.utils.get_total_norm([p.grad for p in ps if p.grad is not None])) for ps in parts]
    else:
        return None
    return norms[0] if len(norms) == 1 else torch.linalg.vector_norm(torch.stack(norms))


def train_step(
    *,
    encoder: nn.Module,
    target_encoder: nn.Module,
    predictor: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema_targets: list[torch.Tensor],
    ema_sources: list[torch.Tensor],
    video: torch.Tensor,
    masks: list,
    grid: tuple[int, int, int],
    hp: Hyper,
    clip_grad: float = 0.0,
    clip_grad_mode: str = "global",
    objective: Objective = Objective(),
    want_grad_norm: bool = False,
    want_rank: bool = False,
    aux: Sequence[Planned] = (),
    heads: nn.Module | None = None,
    step: int = 0,
    total_steps: int = 1,
    guard: Callable[[torch.Tensor], bool] | None = None,
    pack: bool = True,
) -> StepOutput:
    """One update. `aux`: the run's auxiliary objectives (vjepa.objectives.plan_objectives), `heads` the module
    holding their parameters (models["objectives"]), `step` / `total_steps` what schedules inside them read.
    `guard(loss)` (the loss guard, called after the backward pass) returns False to skip the optimiser step: the
    gradients are dropped and only the EMA update runs."""
    set_hyper(optimizer, hp.lr, hp.weight_decay)
    optimizer.zero_grad(set_to_none=True)
    loss, family_losses, (spread, token_spread, rank), metrics = forward_loss(
        encoder, target_encoder, predictor, video, masks, grid, objective, want_rank, aux, step, total_steps, pack
    )
    loss.backward()
    apply = guard is None or guard(loss.detach())
    grad_norm = None
    if apply:
        grad_norm = clip_gradients(encoder, predictor, optimizer, clip_grad, clip_grad_mode, want_grad_norm, heads)
        optimizer.step()
    else:
        optimizer.zero_grad(set_to_none=True)
    ema_update(ema_targets, ema_sources, hp.momentum)
    dense = metrics.pop("dense", None)
    return StepOutput(
        loss.detach(), family_losses, spread, grad_norm, token_spread, rank, metrics or None, dense, not apply
    )
