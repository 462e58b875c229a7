"""`train(cfg)`: V-JEPA pretraining from top to bottom (paper Sec. 3).

setup (process group; rank 0 locks the run folder, applies `train.existing_run` and picks the checkpoint to
start from, vjepa/train/rundir.py) -> build (encoder, predictor, EMA target encoder, FSDP2, AdamW) -> resume
(latest complete checkpoint of the run, else `train.init_from`; then, the architecture having matched, the
resolved config is recorded and the log cut back to the resume step) -> loop over global steps: batch, step,
EMA, log, checkpoint. Everything is keyed on the global step: schedules, masks and the data stream are pure
functions of it, so a run stopped at step k and resumed continues exactly. Run-folder and checkpoint-write
errors reach every rank and end the run with one line and exit code 2 (`main`).

A non-finite loss stops the run with a message before anything is saved, so the last good checkpoint stays
intact. The optional loss guard (`optim.loss_guard_k` > 0, vjepa/train/loss_guard.py) skips the update of a spiking
step (its state travels in each checkpoint's meta.json) and stops the run the same way after too many skips.
SIGTERM/SIGUSR1/SIGUSR2 (preemption, time limit) end the run after the current step with a checkpoint at
that step and exit code 75, and `train.checkpoint_every_minutes` adds wall-clock checkpoints (vjepa/train/preempt.py).
Host syncs happen on log and checkpoint steps only, plus, with several processes, the per-step agreement of all
ranks on those two decisions (two flags in one all_reduce).

Data counts (vjepa/train/counters.py): clips padded from short videos, short and unreadable videos skipped, summed
over ranks as running totals into every log.jsonl record and each checkpoint; the run ends with a one-line summary.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from vjepa.config import Config, dump_config
from vjepa.data.loader import build_loader, video_decoder
from vjepa.distributed import DistInfo, all_reduce_mean, apply_fsdp, init_distributed, wants_fsdp
from vjepa.flops import StepShape, peak_flops
from vjepa.models.build import CheckpointMismatchError, NotABackboneError, build_models, load_state
from vjepa.objectives import Dims, Planned, plan_objectives
from vjepa.train.checkpoint import (
    CheckpointStateError,
    CheckpointWriteError,
    ResumePoint,
    find_resume_point,
    load_checkpoint,
    save_checkpoint,
)
from vjepa.train.counters import DataCounts, summary_line
from vjepa.train.ema import ema_pairs, local_shard
from vjepa.train.loss_guard import GuardOptions, LossGuard, LossSpikeError
from vjepa.train.metrics import LoggerError, RunLogger, format_duration, gpu_text, kept_tokens, throughput
from vjepa.train.optim import build_optimizer
from vjepa.train.preempt import PREEMPTED_EXIT_CODE, CheckpointClock, StopSignals, agree
from vjepa.train.rundir import RunFolderError, RunLock, check_existing_run, git_revision, record_start
from vjepa.train.schedules import hyper
from vjepa.train.step import Objective, grid_of, train_step


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite."""


def objective_dims(cfg: Config) -> Dims:
    """What the auxiliary objectives of a run may size their heads by (width L x D with L deep-supervision levels)."""
    m, d = cfg.model, cfg.data
    grid = (d.frames_per_clip // m.tubelet_size, d.crop_size // m.patch_size, d.crop_size // m.patch_size)
    return Dims(
        dim=m.resolved()["embed_dim"] * m.levels,
        grid=grid,
        tubelet=m.tubelet_size,
        patch=m.patch_size,
        num_families=len(cfg.mask.families),
        levels=m.levels,
        total_steps=cfg.optim.total_steps,
    )


def build_training(
    cfg: Config, info: DistInfo, dtype: torch.dtype, fsdp: bool | None = None, warm: WarmStart | None = None
) -> tuple[nn.ModuleDict, torch.optim.Optimizer, list[Planned]]:
    """Encoder, predictor and target encoder (an EMA copy of the encoder, no grad, eval mode) on the device,
    wrapped with FSDP2 per block and root when `fsdp` (None: as train.fsdp decides, vjepa.distributed.wants_fsdp),
    the auxiliary objectives with a weight above 0 (`models["objectives"]`, present only when there are some; heads
    sharded as roots of their own, in fp32), plus AdamW over encoder, predictor and heads. Activation checkpointing
    and compile apply either way. `warm`: weights to start from (train.init_from naming an export file or a
    Hugging Face folder), put into encoder, target encoder and, where they fit, predictor before wrapping."""
    torch.manual_seed(cfg.train.seed)
    encoder, predictor = build_models(cfg)
    if warm is not None:
        warm.load(encoder.backbone, predictor)
    target_encoder = copy.deepcopy(encoder).requires_grad_(False)
    aux = plan_objectives(cfg, objective_dims(cfg))  # built after the models: their init draws stay the same
    encoder, predictor, target_encoder = (x.to(info.device) for x in (encoder, predictor, target_encoder))
    for planned in aux:
        planned.module.to(info.device)
    if fsdp is None:
        fsdp = wants_fsdp(cfg.train.fsdp, info.world_size, dtype)
    m, mesh = cfg.model, info.mesh
    kw = dict(compile_blocks=m.compile, compile_backend=m.compile_backend, shard=fsdp)
    for module in (encoder, predictor):
        apply_fsdp(module, module.blocks, mesh, dtype, activation_checkpointing=m.activation_checkpointing, **kw)
    apply_fsdp(target_encoder, target_encoder.blocks, mesh, dtype, no_backward=True, **kw)
    if fsdp:
        for planned in aux:
            if any(True for _ in planned.module.parameters()):
                apply_fsdp(planned.module, nn.ModuleList(), info.mesh, torch.float32)
    target_encoder.eval()
    models = nn.ModuleDict({"encoder": encoder, "predictor": predictor, "target_encoder": target_encoder})
    trained: dict[str, nn.Module] = {"encoder": encoder, "predictor": predictor}
    scales = {}
    if aux:
        models["objectives"] = nn.ModuleDict({p.key: p.module for p in aux})
        for p in aux:
            trained[f"objectives.{p.key}"] = p.module
            scales[f"objectives.{p.key}"] = (p.lr_scale, p.wd_scale)
    return models, build_optimizer(cfg.optim, trained, scales), aux


@dataclasses.dataclass
class WarmStart:
    """A new run's starting weights from `train.init_from` naming an export file or a Hugging Face VJEPA2 folder
    (not a checkpoint folder, which restores the whole training state): encoder always, checked by name and
    shape; the predictor when the source has one of this run's shape, else it starts fresh (said in `notes`)."""

    source: str
    encoder: dict[str, torch.Tensor]
    predictor: dict[str, torch.Tensor] | None
    notes: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> WarmStart:
        from vjepa.pretrained import warm_start_weights

        try:
            encoder, predictor, source = warm_start_weights(path)
            return cls(source=source, encoder=encoder, predictor=predictor)
        except (FileNotFoundError, NotABackboneError, CheckpointMismatchError) as err:
            raise type(err)(f"train.init_from={path}: {err}") from None
        except ValueError as err:  # a source of the right kind that cannot serve (a broken config.json, ...)
            raise NotABackboneError(f"train.init_from={path}: {err}") from None

    def load(self, encoder: nn.Module, predictor: nn.Module) -> None:
        load_state(encoder, self.encoder, f"train.init_from={self.source}: its encoder", assign=False)
        what = "encoder"
        if self.predictor is None:
            self.notes.append("the predictor starts fresh (the source has none)")
        else:
            try:
                load_state(predictor, self.predictor, "its predictor", assign=False)
                what = "encoder and predictor"
            except CheckpointMismatchError as err:  # its first two lines: what and the first kind of difference
                self.notes.append("the predictor starts fresh: " + " ".join(str(err).splitlines()[:2]))
        self.notes.insert(0, f"warm start from {self.source}: {what} weights; optimizer, schedules and step from 0")


def params_finite(module: nn.Module) -> torch.Tensor:
    """True when every local shard of the module's parameters is finite (one fused reduction, no sync)."""
    shards = [local_shard(p) for p in module.parameters()]
    norms = torch._foreach_norm([s.detach() for s in shards if s.numel() > 0])
    return torch.isfinite(torch.stack(norms).sum())


def compute_dtype(cfg: Config, device: torch.device) -> torch.dtype:
    if cfg.train.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[cfg.train.dtype]


_RUN_ERRORS = {cls.__name__: cls for cls in (RunFolderError, CheckpointStateError, LoggerError)}


def _broadcast(info: DistInfo, value: dict) -> dict:
    """Rank 0's `value` on every rank."""
    if info.world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _raise_agreed(info: DistInfo, error: tuple[str, str] | None) -> None:
    """Raise rank 0's run-folder error (class name, message) on every rank, so all of them exit cleanly."""
    error = _broadcast(info, {"error": error})["error"]
    if error is not None:
        raise _RUN_ERRORS[error[0]](error[1])


def _open_run_folder(cfg: Config, info: DistInfo, lock: RunLock) -> tuple[Path | None, list[str]]:
    """Collective. Rank 0 checks that the train.loggers backends are installed, locks the run folder (before writing
    anything there), applies train.existing_run and finds the checkpoint to start from; every rank gets that
    checkpoint and the notes, or the same error."""
    t = cfg.train
    run_dir = Path(t.run_dir)
    plan: dict = {"ckpt": None, "notes": []}
    error = None
    if info.is_main:
        try:
            RunLogger.check_installed(t.loggers)
            lock.acquire()
            note = check_existing_run(run_dir, t.resume, t.existing_run)
            point = find_resume_point(run_dir) if t.resume else ResumePoint(None)
            plan["notes"] = [n for n in (note, point.note) if n]
            ckpt = point.path
            if ckpt is not None and t.init_from:
                plan["notes"].append(
                    f"train.resume=true and {run_dir} has checkpoints: resuming from {ckpt.name}; "
                    f"train.init_from={t.init_from} is ignored"
                )
            elif ckpt is None and t.init_from:
                ckpt = Path(t.init_from)
            plan["ckpt"] = None if ckpt is None else str(ckpt)
        except (RunFolderError, CheckpointStateError, LoggerError) as err:
            error = (type(err).__name__, str(err))
    _raise_agreed(info, error)
    plan = _broadcast(info, plan)
    return (None if plan["ckpt"] is None else Path(plan["ckpt"])), plan["notes"]


def train(cfg: Config, stop: StopSignals | None = None) -> dict:
    """Pretrain per `cfg`; returns a summary (final step, losses logged on rank 0, whether it was preempted).

    Rank 0 holds the run folder's lock (vjepa/train/rundir.py) from before its first write until this returns or
    raises. `stop` (entered by the caller, see `main`) makes SIGTERM/SIGUSR1/SIGUSR2 end the run after the current
    step with a checkpoint at that step (vjepa/train/preempt.py); without it the signals keep their usual effect."""
    # ---- setup
    # FSDP2 warns that a Linear output is a view; nothing here modifies module outputs in place.
    warnings.filterwarnings("ignore", message=".*returned a view tensor.*")
    info = init_distributed(cfg.train.device)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    lock = RunLock(Path(cfg.train.run_dir))
    with contextlib.ExitStack() as closing:  # on the way out: the logger (W&B's finish), then the lock
        closing.callback(lock.release)
        ckpt, notes = _open_run_folder(cfg, info, lock)
        return _train(cfg, info, ckpt, notes, stop, closing)


def _train(cfg: Config, info: DistInfo, ckpt: Path | None, notes: list[str], stop: StopSignals | None, closing) -> dict:
    """Build, resume from `ckpt`, write the run's start records (only once the checkpoint loaded), loop. The logger
    is closed by `closing` (also on an error: a W&B run then ends as failed)."""
    run_dir = Path(cfg.train.run_dir)
    device, dtype = info.device, compute_dtype(cfg, info.device)
    for note in notes if info.is_main else ():
        print(note, flush=True)

    # ---- build
    warm = None
    if ckpt is not None and not (ckpt / "meta.json").is_file():  # init_from: an export file or a Hugging Face folder
        warm, ckpt = WarmStart.read(ckpt), None
    models, optimizer, aux = build_training(cfg, info, dtype, warm=warm)
    encoder, predictor, target_encoder = models["encoder"], models["predictor"], models["target_encoder"]

    # ---- resume
    start_step = 0
    guard = LossGuard(GuardOptions.from_config(cfg.optim)) if cfg.optim.loss_guard_k > 0 else None
    if ckpt is not None:
        meta = load_checkpoint(ckpt, models, optimizer)  # checks the architecture first
        start_step = meta["step"]
        if guard is not None:
            guard.load_state_dict(meta.get("loss_guard"))
    # only now is the run known to be compatible: record this start, open the log (cut back to start_step)
    logger, error = RunLogger(run_dir, False), None
    if info.is_main:
        try:
            record = record_start(run_dir, dump_config(cfg), git_revision())
            logger = closing.enter_context(RunLogger(run_dir, True, cfg, start_step))
        except (RunFolderError, LoggerError) as err:
            error = (type(err).__name__, str(err))
    _raise_agreed(info, error)
    if ckpt is not None:
        logger.print(f"resumed from {ckpt} at step {start_step}")
    for note in warm.notes if warm is not None else ():
        logger.print(note)
    if info.is_main:
        logger.print(f"start {record.number} of this run: config in {record.config}")
    ema_targets, ema_sources = ema_pairs(encoder, target_encoder)
    data_counts = DataCounts.for_run(ckpt, run_dir)

    # ---- loop
    o, t = cfg.optim, cfg.train
    end_step = t.stop_after or o.total_steps
    loader = build_loader(cfg, rank=info.rank, world_size=info.world_size, start_step=start_step, end_step=end_step)
    global_batch = cfg.data.batch_size * info.world_size
    n_params = sum(p.numel() for p in encoder.parameters()) + sum(p.numel() for p in predictor.parameters())
    logger.print(
        f"training steps {start_step} -> {end_step} of {o.total_steps}; world size {info.world_size}; "
        f"global batch {global_batch}; {n_params / 1e6:.2f}M trainable parameters; {device} {dtype}; "
        + ("FSDP2" if wants_fsdp(cfg.train.fsdp, info.world_size, dtype) else "no FSDP (one fp32 process)")
    )
    decoder = video_decoder(cfg)
    if decoder is not None:
        logger.print(f"video decoder: {decoder}" + (" (data.decoder=auto)" if cfg.data.decoder == "auto" else ""))
    objective = Objective.from_config(o, cfg.model.levels)
    shape = StepShape.from_config(cfg)
    buckets = cfg.model.compile_buckets if cfg.model.compile else 0.0
    peak = t.peak_tflops * 1e12 if t.peak_tflops > 0 else None
    if peak is None and device.type == "cuda":
        peak = peak_flops(torch.cuda.get_device_name(device))
    history: list[dict] = []
    bad = torch.zeros((), dtype=torch.bool, device=device)
    data_time = step_time = 0.0
    window_steps, window_start = 0, time.perf_counter()
    last_good = start_step
    stop = stop or StopSignals()  # not entered: records nothing
    clock = CheckpointClock(t.checkpoint_every_minutes)
    stopped = False
    with StopSignals.blocked():  # loader workers start with the stop signals blocked (see preempt.py)
        batches = iter(loader)
    tick = time.perf_counter()
    step = start_step
    for batch in batches:
        step = batch["step"]
        data_counts.add(batch)
        video = batch["video"].to(device, non_blocking=True)
        masks = [m.to(device) for m in batch["masks"]] if device.type != "cpu" else batch["masks"]
        t_data = time.perf_counter()
        data_time += t_data - tick
        hp = hyper(o, step)
        clip = o.clip_grad if (o.clip_grad > 0 and (not o.clip_after_warmup or step >= o.warmup_steps)) else 0.0
        is_log = (step + 1) % t.log_every == 0 or step == start_step or step + 1 == end_step
        admit = None
        if guard is not None:  # one host sync per step, only with the guard on; the same decision on every rank
            admit = lambda loss, s=step: guard.admit(all_reduce_mean(loss).item(), s)  # noqa: E731
        if buckets:
            masks = [mk.bucketed(buckets) for mk in masks]  # static shapes for the compiled blocks
        out = train_step(
            encoder=encoder,
            target_encoder=target_encoder,
            predictor=predictor,
            optimizer=optimizer,
            ema_targets=ema_targets,
            ema_sources=ema_sources,
            video=video,
            masks=masks,
            grid=grid_of(video, cfg.model.tubelet_size, cfg.model.patch_size),
            hp=hp,
            clip_grad=clip,
            clip_grad_mode=o.clip_grad_mode,
            objective=objective,
            want_grad_norm=is_log,
            want_rank=is_log,
            aux=aux,
            heads=models["objectives"] if aux else None,
            step=step,
            total_steps=o.total_steps,
            guard=admit,
            pack=cfg.model.pack_families,
        )
        if out.skipped:
            _report_skip(logger, guard, step, run_dir, last_good)
        bad |= ~torch.isfinite(out.loss)
        if is_log and device.type == "cuda":  # time on log steps: the window's queued work finishes here
            torch.cuda.synchronize(device)
        tick = time.perf_counter()
        step_time += tick - t_data
        window_steps += 1
        is_ckpt = (step + 1) % t.checkpoint_every == 0 or step + 1 == end_step
        stopped, time_due = agree(stop.requested, info.is_main and clock.due(), device)  # same answer on all ranks
        stopped = stopped and step + 1 < end_step
        is_ckpt = is_ckpt or stopped or time_due
        if stopped:
            by = stop.name or "a stop signal (on another rank)"
            logger.print(f"{by} received: stopping after step {step + 1} and writing a checkpoint")
        if is_ckpt:
            bad |= ~params_finite(encoder)
        if is_log or is_ckpt:
            totals = data_counts.totals(device)  # running totals, in log.jsonl and the checkpoint
            if bool(all_reduce_mean(bad.float()) > 0):
                raise NonFiniteLoss(
                    f"non-finite loss or weights at or before step {step}; stopping. The last good checkpoint (step "
                    f"{last_good}) in {run_dir / 'checkpoints'} is intact; lower optim.lr or check the data."
                )
        if is_log:
            loss = all_reduce_mean(out.loss).item()
            elapsed = time.perf_counter() - window_start
            sec_per_step = elapsed / max(1, window_steps)
            record = {
                "step": step + 1,
                "loss": loss,
                **{f"loss_{i}": all_reduce_mean(x).item() for i, x in enumerate(out.family_losses)},
                "lr": hp.lr,
                "wd": hp.weight_decay,
                "momentum": hp.momentum,
                "ctx_tokens": [kept_tokens(m.ctx_idx, m.ctx_valid) for m in masks],
                "tgt_tokens": [kept_tokens(m.tgt_idx, m.tgt_valid) for m in masks],
                "target_spread": all_reduce_mean(out.target_spread).item(),
                "token_spread": all_reduce_mean(out.token_spread).item(),
                "target_rank": all_reduce_mean(out.target_rank).item(),
                "grad_norm": None if out.grad_norm is None else float(out.grad_norm),
                "data_time": data_time / max(1, window_steps),
                "step_time": step_time / max(1, window_steps),
                "clips_per_s": global_batch / max(sec_per_step, 1e-9),
                "eta_s": sec_per_step * (end_step - step - 1),
                **totals,
            }
            record.update(throughput(shape, record, info.world_size, peak, device))
            record["jepa_loss"] = statistics.fmean(record[f"loss_{i}"] for i in range(len(out.family_losses)))
            if out.dense is not None:
                record["dense_loss"] = all_reduce_mean(out.dense).item()
                record["dense_weight"] = objective.dense_lambda(step)
            if guard is not None:
                record["skipped_updates"] = guard.skips
            aux_values = {f"aux.{k}": all_reduce_mean(v).item() for k, v in (out.aux or {}).items()}
            record.update(aux_values)
            history.append(record)
            logger.log(record)
            collapse = t.collapse_threshold > 0 and record["target_spread"] < t.collapse_threshold
            jepa = f" (jepa {record['jepa_loss']:.4f})" if objective.regularised or aux or objective.dense else ""
            if out.dense is not None:
                jepa += f" dense {record['dense_loss']:.4f} x {record['dense_weight']:.3g}"
            jepa += "".join(f" {k.removeprefix('aux.')} {v:.4g}" for k, v in aux_values.items() if k.count(".") == 1)
            logger.print(
                f"step {step + 1}/{end_step} loss {loss:.4f}{jepa} lr {hp.lr:.2e} wd {hp.weight_decay:.3f} "
                f"m {hp.momentum:.5f} ctx/tgt {record['ctx_tokens']}/{record['tgt_tokens']} "
                f"data {record['data_time'] * 1e3:.0f}ms step {record['step_time'] * 1e3:.0f}ms "
                f"{record['clips_per_s']:.1f} clips/s {record['tokens_per_s']:.3g} tok/s{gpu_text(record)} "
                f"spread {record['target_spread']:.3f} "
                f"tok {record['token_spread']:.3f} rank {record['target_rank']:.1f} "
                f"ETA {format_duration(record['eta_s'])}"
                + ("  WARNING: target features collapsing" if collapse else "")
            )
            if record["data_time"] > 0.5 * record["step_time"] and step > start_step + 2 * t.log_every:
                logger.print("  note: data loading takes over half the step time; raise data.num_workers")
            data_time = step_time = 0.0
            window_steps, window_start = 0, time.perf_counter()
        if is_ckpt:
            path = save_checkpoint(
                run_dir,
                step + 1,
                models,
                optimizer,
                t.keep_last,
                {
                    "loss": history[-1]["loss"] if history else math.nan,
                    "data_counts": totals,
                    **({"loss_guard": guard.state_dict()} if guard is not None else {}),
                },
            )
            last_good = step + 1
            clock.reset()
            logger.print(f"saved checkpoint {path}")
        if stopped:
            logger.print(
                f"preempted at step {step + 1} of {end_step}: exiting with code {PREEMPTED_EXIT_CODE}; "
                "run the same command again (or let the SLURM launcher requeue) to resume"
            )
            break
    totals = data_counts.totals(device)
    logger.print(summary_line(totals))
    return {
        "step": step + 1 if end_step > start_step else start_step,
        "history": history,
        "run_dir": str(run_dir),
        "preempted": stopped,
        "data_counts": totals,
    }


def _report_skip(logger: RunLogger, guard: LossGuard, step: int, run_dir: Path, last_good: int) -> None:
    """Say that the loss guard skipped the update of `step`; LossSpikeError once it skipped too many."""
    o = guard.options
    logger.print(
        f"step {step + 1}: loss above the guard's bound {guard.last_bound:.4f} (mean + {o.k:g} std of the last "
        f"{len(guard.losses)} kept losses): update skipped ({guard.skips} skipped, at most {o.max_skips})"
    )
    if guard.exhausted:
        raise LossSpikeError(
            f"the loss guard skipped {guard.skips} updates, more than optim.loss_guard_max_skips={o.max_skips}; "
            f"stopping at step {step + 1}. The last good checkpoint (step {last_good}) in {run_dir / 'checkpoints'} "
            "is intact; lower optim.lr, check the data, or raise optim.loss_guard_k."
        )


def main(cfg: Config) -> int:
    """`vjepa pretrain`: 0 done, 2 bad input, 3 non-finite loss or too many loss spikes, PREEMPTED_EXIT_CODE (75)
    stopped by a signal after writing a checkpoint (run it again to resume)."""
    from vjepa.distributed import shutdown

    with StopSignals() as stop:
        try:
            result = train(cfg, stop=stop)
        except (NonFiniteLoss, LossSpikeError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 3
        except (
            FileNotFoundError,
            NotABackboneError,
            CheckpointMismatchError,
            CheckpointWriteError,
            RunFolderError,
            CheckpointStateError,
            LoggerError,
        ) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        finally:
            shutdown()
    return PREEMPTED_EXIT_CODE if result["preempted"] else 0
