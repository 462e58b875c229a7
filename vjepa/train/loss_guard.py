"""Loss guard: skip the update on a loss spike, stop the run when spikes keep coming (V-JEPA 2.1 code).

Official code: github.com/facebookresearch/vjepa2 `app/vjepa_2_1/train.py` (`loss_reg_std_mult`,
`loss_reg_num_tracking_steps`, `loss_reg_min_epoch`, `MAX_REPEAT_COUNTS`), off in every official config (the
multiplier is unset). Rule, per step s with loss l:

    skip when  l > mean(W) + k * std(W)  and  s >= min_step  and  len(W) > window // 2
    W: the last `window` losses of updates that were applied (population std, as numpy's default)

A skipped step applies no update (the optimiser is not stepped, its gradients are dropped); the EMA target update
still runs, as in the official loop. More than `max_skips` skips in all (not in a row) stops the run with
LossSpikeError. The official minimum is an epoch, `epoch > 50` with 0-based epochs of 300 iterations, i.e. from
step 51 * 300 = 15300; ours is a step (`optim.loss_guard_min_step`, default 15300).

Departures: the official loop compares each process's own loss, so processes can disagree and the data-parallel
replicas drift apart (the gradients are still all-reduced, but only some ranks step); ours decides on the loss
averaged over all processes, the same on every rank. The official window and skip count live in memory only and
restart empty on resume; ours are saved in each checkpoint's meta.json (`loss_guard`) and restored, so a resumed
run decides exactly as an uninterrupted one. A non-finite loss is neither tracked nor compared (the trainer's
non-finite check stops the run).

Shapes: none (host floats).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass


class LossSpikeError(RuntimeError):
    """The loss guard skipped more updates than optim.loss_guard_max_skips allows."""


@dataclass(frozen=True)
class GuardOptions:
    k: float  # 0: off
    window: int = 300
    min_step: int = 15_300
    max_skips: int = 10

    @classmethod
    def from_config(cls, o) -> GuardOptions:
        """From an OptimConfig."""
        return cls(o.loss_guard_k, o.loss_guard_window, o.loss_guard_min_step, o.loss_guard_max_skips)


class LossGuard:
    """`admit(loss, step)` -> whether to apply this step's update; `exhausted` once skips exceed max_skips."""

    def __init__(self, options: GuardOptions) -> None:
        self.options = options
        self.losses: deque[float] = deque(maxlen=options.window)
        self.skips = 0
        self.last_bound = math.nan  # mean + k std at the last comparison (for messages)

    def admit(self, loss: float, step: int) -> bool:
        o = self.options
        if not math.isfinite(loss):
            return True
        if step >= o.min_step and len(self.losses) > o.window // 2:
            self.last_bound = statistics.fmean(self.losses) + o.k * statistics.pstdev(self.losses)
            if loss > self.last_bound:
                self.skips += 1
                return False
        self.losses.append(loss)
        return True

    @property
    def exhausted(self) -> bool:
        return self.skips > self.options.max_skips

    def state_dict(self) -> dict:
        return {"losses": list(self.losses), "skips": self.skips}

    def load_state_dict(self, state: dict | None) -> None:
        """Restore from `state_dict()` output; None (a checkpoint without guard state) starts empty."""
        self.losses.clear()
        self.skips = 0
        if state:
            self.losses.extend(float(x) for x in state["losses"])
            self.skips = int(state["skips"])
