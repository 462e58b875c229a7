"""Checks of a loaded `Config`: numeric bounds, head counts, mask placement, target and objectives.

`vjepa.config.load_config` runs `validate` on every config; each failure is a `ConfigError` naming the key. The
allowed values of enumerated fields are their `Literal` types in vjepa/config.py, enforced by the merge itself.
"""

from __future__ import annotations

from vjepa.config import Config, ConfigError, MaskSpec, ModelConfig

# Bounds of numeric fields: key -> (lowest, highest, whether the lowest itself is allowed). None: unbounded.
# Checked for every config, so a zero interval or a negative count fails at load time, naming the key, instead of
# as a ZeroDivisionError (or a silently empty model) after the model is built.
_AT_LEAST_1 = (1, None, True)
_NON_NEGATIVE = (0, None, True)
_POSITIVE = (0, None, False)
_FRACTION = (0, 1, True)
BOUNDS: dict[str, tuple[float | None, float | None, bool]] = {
    "model.embed_dim": _AT_LEAST_1,
    "model.depth": _AT_LEAST_1,
    "model.num_heads": _AT_LEAST_1,
    "model.mlp_ratio": _POSITIVE,
    "model.patch_size": _AT_LEAST_1,
    "model.tubelet_size": _AT_LEAST_1,
    "model.pred_embed_dim": _AT_LEAST_1,
    "model.pred_depth": _AT_LEAST_1,
    "model.pred_num_heads": _AT_LEAST_1,
    "model.pred_mlp_ratio": _POSITIVE,
    "data.frames_per_clip": _AT_LEAST_1,
    "data.frame_step": _NON_NEGATIVE,
    "data.fps": _NON_NEGATIVE,
    "data.duration": _NON_NEGATIVE,
    "data.crop_size": _AT_LEAST_1,
    "data.batch_size": _AT_LEAST_1,
    "data.num_workers": _NON_NEGATIVE,
    "data.timeout": _NON_NEGATIVE,
    "data.shard_shuffle": _AT_LEAST_1,
    "data.hflip": _FRACTION,
    "data.max_bad_fraction": _FRACTION,
    "data.synthetic_videos": _AT_LEAST_1,
    "data.synthetic_size": _NON_NEGATIVE,
    "mask.group_size": _AT_LEAST_1,
    "optim.total_steps": _AT_LEAST_1,
    "optim.horizon_scale": _POSITIVE,
    "optim.warmup_steps": _NON_NEGATIVE,
    "optim.cooldown_steps": _NON_NEGATIVE,
    "optim.start_lr": _NON_NEGATIVE,
    "optim.lr": _POSITIVE,
    "optim.final_lr": _NON_NEGATIVE,
    "optim.weight_decay": _NON_NEGATIVE,
    "optim.final_weight_decay": _NON_NEGATIVE,
    "optim.ema_momentum": _FRACTION,
    "optim.final_ema_momentum": _FRACTION,
    "optim.eps": _POSITIVE,
    "optim.clip_grad": _NON_NEGATIVE,
    "optim.loss_exp": _POSITIVE,
    "optim.var_reg_weight": _NON_NEGATIVE,
    "optim.enc_var_weight": _NON_NEGATIVE,
    "optim.enc_cov_weight": _NON_NEGATIVE,
    "optim.dense_weight": _NON_NEGATIVE,
    "optim.dense_warmup_start": _NON_NEGATIVE,
    "optim.dense_warmup_end": _NON_NEGATIVE,
    "optim.loss_guard_k": _NON_NEGATIVE,
    "optim.loss_guard_window": _AT_LEAST_1,
    "optim.loss_guard_min_step": _NON_NEGATIVE,
    "optim.loss_guard_max_skips": _NON_NEGATIVE,
    "train.seed": _NON_NEGATIVE,
    "train.log_every": _AT_LEAST_1,
    "train.checkpoint_every": _AT_LEAST_1,
    "train.checkpoint_every_minutes": _NON_NEGATIVE,
    "train.keep_last": _AT_LEAST_1,
    "train.stop_after": _NON_NEGATIVE,
    "train.threads": _NON_NEGATIVE,
    "train.collapse_threshold": _NON_NEGATIVE,
}


def _check_bound(key: str, value: float | None, bound: tuple[float | None, float | None, bool]) -> None:
    lo, hi, lo_ok = bound
    if value is None:
        return
    if (lo is not None and (value < lo or (value == lo and not lo_ok))) or (hi is not None and value > hi):
        if hi is None:
            want = f">= {lo}" if lo_ok else f"> {lo}"
        else:
            want = f"in [{lo}, {hi}]"
        raise ConfigError(f"{key}={value} must be {want}")


def check_bounds(cfg: Config) -> None:
    """Every field named in BOUNDS lies in its range (None, for optional fields, always passes)."""
    for key, bound in BOUNDS.items():
        section, name = key.split(".")
        _check_bound(key, getattr(getattr(cfg, section), name), bound)
    for i, beta in enumerate(cfg.optim.betas):
        if not 0 <= beta < 1:
            raise ConfigError(f"optim.betas.{i}={beta} must be in [0, 1)")
    for i, src in enumerate(cfg.data.sources):
        _check_bound(f"data.sources.{i}.frames_per_clip", src.frames_per_clip, _NON_NEGATIVE)


def _check_heads(m: ModelConfig) -> None:
    """Encoder and predictor widths split evenly over their attention heads."""
    arch = m.resolved()
    _check_bound("model.embed_dim", arch["embed_dim"], _AT_LEAST_1)
    _check_bound("model.depth", arch["depth"], _AT_LEAST_1)
    _check_bound("model.num_heads", arch["num_heads"], _AT_LEAST_1)
    if arch["embed_dim"] % arch["num_heads"]:
        raise ConfigError(
            f"model.num_heads={arch['num_heads']} must divide the encoder width model.embed_dim={arch['embed_dim']}"
        )
    pred_heads = m.predictor_arch()["num_heads"]
    if m.pred_embed_dim % pred_heads:
        key = "model.pred_num_heads" if m.pred_num_heads else "model.pred_num_heads (default of the preset)"
        raise ConfigError(f"{key}={pred_heads} must divide the predictor width model.pred_embed_dim={m.pred_embed_dim}")


def validate(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    m, d, o, t = cfg.model, cfg.data, cfg.optim, cfg.train
    check_bounds(cfg)
    _check_heads(m)
    if m.levels not in (1, 4):
        raise ConfigError(f"model.levels={m.levels} must be 1 or 4 (4: V-JEPA 2.1 deep supervision)")
    if m.resolved()["depth"] < m.levels:
        raise ConfigError(f"model.levels={m.levels} needs at least {m.levels} encoder blocks (model.depth)")
    if (o.dense_warmup_start or o.dense_warmup_end) and not o.dense_warmup_start < o.dense_warmup_end:
        raise ConfigError(
            f"optim.dense_warmup_start={o.dense_warmup_start} must be below optim.dense_warmup_end="
            f"{o.dense_warmup_end} (both 0: a constant dense weight)"
        )
    for i, spec in enumerate(cfg.mask.families):
        _check_placement(f"mask.families.{i}", spec)
    if not cfg.mask.families:
        raise ConfigError("mask.families: at least one mask family is required")
    if d.frames_per_clip % m.tubelet_size:
        raise ConfigError(f"data.frames_per_clip={d.frames_per_clip} must be a multiple of model.tubelet_size")
    if d.crop_size % m.patch_size:
        raise ConfigError(f"data.crop_size={d.crop_size} must be a multiple of model.patch_size={m.patch_size}")
    if d.sources and d.csv_paths:
        raise ConfigError("data.csv_paths and data.sources are both set: list the CSV files as sources instead")
    if not d.sources and d.source == "csv" and not d.csv_paths:
        raise ConfigError("data.csv_paths: give at least one CSV list for data.source=csv (or use synthetic)")
    for i, src in enumerate(d.sources):
        if src.kind != "synthetic" and not src.path:
            raise ConfigError(f"data.sources.{i}.path: a {src.kind} source needs a path")
        if not src.weight > 0:
            raise ConfigError(f"data.sources.{i}.weight must be > 0, got {src.weight}")
        fpc = src.frames_per_clip or d.frames_per_clip
        if src.frames_per_clip < 0 or fpc % m.tubelet_size:
            raise ConfigError(f"data.sources.{i}.frames_per_clip={fpc} must be a multiple of model.tubelet_size")
    given = [k for k in ("frame_step", "fps", "duration") if getattr(d, k) > 0]
    if len(given) != 1:
        raise ConfigError(
            f"data: give exactly one of frame_step, fps, duration (> 0, the others 0), got {given or 'none'}"
            " (e.g. data.frame_step=0 data.fps=8)"
        )
    if d.repeat < 1 or d.batch_size % d.repeat:
        raise ConfigError(f"data.repeat={d.repeat} must be >= 1 and divide data.batch_size={d.batch_size}")
    if o.total_steps <= 0 or o.warmup_steps < 0 or o.warmup_steps > o.total_steps:
        raise ConfigError("optim.warmup_steps must lie in [0, optim.total_steps] and total_steps > 0")
    if o.schedule == "wsd" and o.warmup_steps + o.cooldown_steps > o.total_steps:
        raise ConfigError("optim.warmup_steps + optim.cooldown_steps exceed optim.total_steps")
    if t.stop_after < 0 or t.stop_after > o.total_steps:
        raise ConfigError("train.stop_after must lie in [0, optim.total_steps]")
    if d.batch_size <= 0:
        raise ConfigError("data.batch_size must be positive")
    _check_target(cfg)
    _check_objectives(cfg)
    _check_loggers(t.loggers)
    if not o.cooldown_horizon_scale >= 1.0:
        raise ConfigError(
            f"optim.cooldown_horizon_scale must be >= 1 (1: end at final_lr), got {o.cooldown_horizon_scale}"
        )


def _check_loggers(loggers: tuple[str, ...]) -> None:
    """jsonl is required rather than silently always on, so the list reads as exactly what a run writes."""
    if "jsonl" not in loggers:
        raise ConfigError(
            f"train.loggers={list(loggers)} must include jsonl: log.jsonl is the run's record that resume, reports "
            "and sweeps read (list the other backends next to it, e.g. train.loggers=[jsonl,wandb])"
        )
    if len(set(loggers)) < len(loggers):
        raise ConfigError(f"train.loggers={list(loggers)} names a backend twice")


def _check_placement(key: str, spec: MaskSpec) -> None:
    if spec.placement != "motion":
        return
    if spec.kind == "tube":
        raise ConfigError(f"{key}.placement=motion needs kind multiblock or causal (tube masks place no blocks)")
    _check_bound(f"{key}.motion_power", spec.motion_power, _NON_NEGATIVE)
    _check_bound(f"{key}.motion_mix", spec.motion_mix, _FRACTION)


# Objectives that read neither the targets nor the predictions (VICReg: the context tokens only), so they work with
# optim.target=pixels as they do with features.
PIXEL_TARGET_OBJECTIVES = ("vicreg",)


def _check_target(cfg: Config) -> None:
    o = cfg.optim
    if o.target != "pixels":
        return
    for i, spec in enumerate(cfg.objectives):
        if spec.name not in PIXEL_TARGET_OBJECTIVES and spec.weight != 0:
            raise ConfigError(
                f"objectives.{i}.name={spec.name!r} cannot be combined with optim.target=pixels: objectives work on "
                f"feature targets and predictions (only {list(PIXEL_TARGET_OBJECTIVES)} can)"
            )
    if o.loss_exp != 1.0:
        raise ConfigError("optim.loss_exp applies to feature targets; with optim.target=pixels set optim.pixel_loss")
    if o.dense_weight > 0 or cfg.model.levels != 1:
        raise ConfigError(
            "optim.target=pixels cannot be combined with the V-JEPA 2.1 dense loss (optim.dense_weight) or deep "
            "supervision (model.levels): both predict features"
        )


def _check_objectives(cfg: Config) -> None:
    if not cfg.objectives and cfg.optim.enc_var_weight == 0 and cfg.optim.enc_cov_weight == 0:
        return  # nothing to import
    from vjepa.objectives.registry import ObjectiveLookupError, check_objectives

    try:
        check_objectives(cfg)
    except ObjectiveLookupError as err:
        raise ConfigError(str(err)) from None
