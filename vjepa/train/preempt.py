"""Stopping a run cleanly on a preemption/timeout signal, and checkpointing on a wall-clock interval.

SLURM sends SIGTERM to every process of a job step when it preempts the job, and, with `--signal`, SIGUSR1 or
SIGUSR2 some time before the time limit (submitit asks for USR2). None of these may kill the run mid-step or
mid-checkpoint. While `StopSignals` is active the three signals only record themselves; the training loop polls
the record once per step, and all ranks agree (`agree`, one all_reduce(MAX) of two flags) on stopping after the
same step, write a checkpoint at that step and leave with `PREEMPTED_EXIT_CODE`, which the SLURM launcher turns
into a requeue (launch/slurm.py). A repeated signal during the save is recorded and otherwise ignored; once a stop
was requested the signals stay ignored until the process exits, so a late signal cannot turn a clean "preempted"
exit into a kill.

DataLoader workers are forked from the training process, and SLURM signals them too. PyTorch's worker handler
for SIGTERM exits unless the parent sent it, and the parent then fails with "DataLoader worker exited
unexpectedly" before it can checkpoint. `StopSignals.blocked()` is held while the loader starts its workers, so
they inherit a signal mask that blocks the stop signals: the workers ignore them and are shut down by the loader
as usual (or exit with their parent). Blocked signals that reach the training process in that window are
delivered when the mask is lifted, so none is lost.

`train.checkpoint_every_minutes` is decided by rank 0's clock alone and agreed by the same all_reduce, so every
rank checkpoints at the same step whatever the clocks of the other hosts say.

Not in the official code, which has no signal handling (submitit's default handler requeues the job at once,
dropping the steps since the last periodic checkpoint).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

import torch
import torch.distributed as dist

# Exit status of a run that stopped on a signal after writing its checkpoint: "temporary failure, try again"
# (EX_TEMPFAIL of sysexits.h). `launch/slurm.py` requeues the job on it; a plain script can loop on it.
PREEMPTED_EXIT_CODE = 75

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class StopSignals:
    """Context manager: while active, SIGTERM/SIGUSR1/SIGUSR2 are recorded instead of acted on.

    Handlers can only be installed from the main thread; elsewhere the object is inert (nothing is recorded).
    On exit the previous handlers come back, unless a stop was requested (see the module docstring).
    """

    def __init__(self) -> None:
        self.received: list[int] = []  # signal numbers in arrival order
        self._previous: dict[int, signal.Handlers | object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.received:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous = {}

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)  # only a flag: the loop acts on it between steps

    @property
    def requested(self) -> bool:
        return bool(self.received)

    @property
    def name(self) -> str:
        """Name of the first signal received ("" if none)."""
        return signal.Signals(self.received[0]).name if self.received else ""

    @staticmethod
    @contextlib.contextmanager
    def blocked() -> Iterator[None]:
        """Block the stop signals in this thread (and in processes it forks) for the duration."""
        old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


class CheckpointClock:
    """True once `minutes` of wall time passed since the start or the last `reset()`; never when minutes is 0."""

    def __init__(self, minutes: float) -> None:
        self.seconds = 60.0 * minutes
        self.last = time.monotonic()

    def due(self) -> bool:
        return self.seconds > 0 and time.monotonic() - self.last >= self.seconds

    def reset(self) -> None:
        self.last = time.monotonic()


def agree(stop: bool, checkpoint_due: bool, device: torch.device) -> tuple[bool, bool]:
    """(stop, checkpoint_due) as agreed by all ranks: true on every rank if true on any. Collective when the
    world has more than one process; a host sync of two numbers (the loop already syncs the device per step)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return stop, checkpoint_due
    flags = torch.tensor([float(stop), float(checkpoint_due)], device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    stop_all, due_all = flags.tolist()
    return stop_all > 0, due_all > 0
