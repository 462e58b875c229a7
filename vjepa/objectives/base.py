"""The auxiliary-objective protocol: what a training step shows an objective, and what the objective returns.

A training step (vjepa/train/step.py) computes the plain V-JEPA loss, then, when the config lists objectives with a
weight above 0, builds one `StepState` and calls every objective on it:

    loss = jepa_scale * L_jepa + sum_i weight_i * objective_i(state).loss

An objective is an `nn.Module` (subclass `AuxObjective`); one with a trainable head owns its parameters, and the
trainer puts them into `models["objectives"]`, so the optimiser (own lr / weight-decay multipliers), FSDP2, the
checkpoints, resume and export treat them like the predictor's. It reads what it needs from the state, lazily:
nothing the state can give (scattered context tokens, per-frame features, the online encoder on the full clip) is
computed unless an objective asks for it, and with no objective no state is built at all.

Conventions every objective keeps (the catalogue's tests check them):
  - fp32 whatever the compute dtype (`state` hands out fp32 tensors);
  - padded slots and invisible tokens never enter a mean;
  - a mean over tokens is taken per sample first, then over samples, so that the value averaged over processes
    equals the value of one process holding the whole global batch (equal per-process batches); statistics over
    the whole batch (covariances, characteristic functions) are reduced over processes with
    `vjepa.distributed.all_reduce_sum_with_grad`;
  - no gradient into the target encoder (`state.h` is detached).

Shapes: B batch, N tokens (T' H' W'), Kc context tokens, Kt target tokens, D target width, grid = (T', H', W').
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from vjepa.masks.ops import gather_tokens


@dataclass(frozen=True)
class Dims:
    """What an objective may need to size its head: the target width and the token grid of the run."""

    dim: int  # width of targets and context tokens (4 D with V-JEPA 2.1 deep supervision)
    grid: tuple[int, int, int]  # (T', H', W') of the run's clips
    tubelet: int = 2
    patch: int = 16
    num_families: int = 2
    levels: int = 1  # encoder levels concatenated in the width (V-JEPA 2.1 deep supervision: 4)
    total_steps: int = 1


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor  # fp32 scalar, unweighted
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # named scalars for the log (detached on use)


@dataclass
class FamilyState:
    """One mask family of the step. `z`, `pred` and `ctx_pred` carry gradients; `target` does not."""

    ctx_idx: torch.Tensor  # [B, Kc] long
    tgt_idx: torch.Tensor  # [B, Kt] long
    ctx_valid: torch.Tensor | None  # [B, Kc] bool (None: all valid)
    tgt_valid: torch.Tensor | None  # [B, Kt] bool
    z: torch.Tensor  # [B, Kc, D] context-encoder output
    pred: torch.Tensor  # [B, Kt, D] predictor output at tgt_idx
    target: torch.Tensor  # [B, Kt, D] h at tgt_idx, fp32, no grad
    ctx_pred: torch.Tensor | None = None  # [B, Kc, D] the predictor's context head (V-JEPA 2.1 dense loss on), grad


def _valid(valid: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor:
    return torch.ones(idx.shape, dtype=torch.bool, device=idx.device) if valid is None else valid


class StepState:
    """The tensors of one training step, with lazily computed views (each computed once, on first use)."""

    def __init__(
        self,
        *,
        video: torch.Tensor,
        grid: tuple[int, int, int],
        h: torch.Tensor,
        families: list[FamilyState],
        step: int = 0,
        total_steps: int = 1,
        tubelet: int = 2,
        patch: int = 16,
        online_full: Callable[[], torch.Tensor] | None = None,
    ) -> None:
        self.video = video  # [B, C, T, H, W] the normalised clip
        self.grid = grid
        self.h = h.detach().float()  # [B, N, D]
        self.families = families
        self.step, self.total_steps = step, total_steps
        self.tubelet, self.patch = tubelet, patch
        self._online_full = online_full
        self._cache: dict[Any, torch.Tensor | tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def batch(self) -> int:
        return self.h.shape[0]

    @property
    def dim(self) -> int:
        return self.h.shape[-1]

    def _cached(self, key: Any, fn: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def h_grid(self) -> torch.Tensor:
        """h as [B, T', H', W', D]."""
        return self.h.reshape(self.batch, *self.grid, self.dim)

    def scattered(self, family: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(Z [B, T', H', W', D] fp32 with gradient, zero where not visible; V [B, T', H', W'] bool): the family's
        context tokens put back at their positions, and which positions are visible (padded slots are not)."""

        def build() -> tuple[torch.Tensor, torch.Tensor]:
            fam = self.families[family]
            b, n, d = self.batch, self.h.shape[1], self.dim
            valid = _valid(fam.ctx_valid, fam.ctx_idx)  # [B, Kc]
            w = valid.unsqueeze(-1).to(torch.float32)  # [B, Kc, 1]
            z = fam.z.float() * w  # [B, Kc, D]
            zz = z.new_zeros(b, n, d).scatter_add(1, fam.ctx_idx.unsqueeze(-1).expand(-1, -1, d), z)  # [B, N, D]
            count = w.new_zeros(b, n).scatter_add(1, fam.ctx_idx, w.squeeze(-1))  # [B, N]
            return zz.reshape(b, *self.grid, d), (count > 0).reshape(b, *self.grid)

        return self._cached(("scattered", family), build)

    def pairs(self, family: int) -> torch.Tensor:
        """P [B, T'-1, H', W'] bool: positions visible at two consecutive times."""
        _, v = self.scattered(family)
        return v[:, :-1] & v[:, 1:]

    def frame_features(self) -> torch.Tensor:
        """f [B, T', D]: the spatial mean of the targets h at each time step (no gradient)."""
        return self._cached("f", lambda: self.h_grid().mean(dim=(2, 3)))

    def online_full(self) -> torch.Tensor:
        """The online (context) encoder on the full clip, WITH gradient: [B, N, D] fp32 (one extra forward)."""
        if self._online_full is None:
            raise RuntimeError("this step state has no online encoder to run on the full clip")
        return self._cached("online_full", lambda: self._online_full().float())

    def gather(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """x [B, N, ...] at idx [B, K] -> [B, K, ...]."""
        return gather_tokens(x, idx)


class AuxObjective(nn.Module):
    """Base of every auxiliary objective. Subclasses set the class attributes and implement `forward`.

    `Options` is a frozen dataclass of typed options (the config's `objectives.<i>.options`, checked strictly: an
    unknown option or a value of the wrong type is an error naming the key); the constructor receives it and the
    run's `Dims`."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = dataclass(frozen=True)(type("NoOptions", (), {}))
    default_weight: ClassVar[float] = 1.0
    source: ClassVar[str] = ""  # where the formula comes from (paper / code)
    summary: ClassVar[str] = ""  # one line for `vjepa objectives`

    def __init__(self, options: Any = None, dims: Dims | None = None) -> None:
        super().__init__()
        self.options = options if options is not None else self.Options()
        self.dims = dims

    def jepa_scale(self, weight: float) -> float:
        """Factor on the plain JEPA loss when this objective is on (1: added; SIGReg's convex mix: 1 - weight)."""
        return 1.0

    def forward(self, state: StepState) -> ObjectiveOutput:  # pragma: no cover - abstract
        raise NotImplementedError


def option_fields(cls: type[AuxObjective]) -> list[tuple[str, str, Any]]:
    """(name, type, default) of an objective's options, for listings."""
    out = []
    for f in dataclasses.fields(cls.Options):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out.append((f.name, getattr(f.type, "__name__", str(f.type)), default))
    return out


def masked_mean(x: torch.Tensor, mask: torch.Tensor, sample_dims: int = 1) -> torch.Tensor:
    """Mean of x over the positions where mask is True, per sample, then over all samples.

    x [B, ...] (float), mask broadcastable to x (bool); the first `sample_dims` dims index samples. A sample with no
    position counts 0 (so the value does not depend on how the batch is split over processes)."""
    m = mask.to(x.dtype).expand_as(x)
    dims = tuple(range(sample_dims, x.ndim))
    num = (x * m).sum(dim=dims)  # [B]
    den = m.sum(dim=dims)  # [B]
    per_sample = num / den.clamp_min(1.0)
    return per_sample.mean()
