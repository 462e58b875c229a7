"""Typed run configuration: one frozen dataclass per concern, strict YAML + command-line merge.

A run is described by `Config` (model, data, mask, optim, train). YAML files list only what differs from
the defaults below (the V-JEPA 1 ViT-L recipe of the paper, Table 9); `key.sub=value` overrides from the
command line are applied last. Unknown keys and values of the wrong type are errors that name the key and
list the valid ones, so a typo never silently falls back to a default.

    cfg = load_config("configs/debug/tiny_cpu.yaml", ["optim.lr=1e-3", "train.run_dir=runs/x"])

Derived values (encoder width from the preset, schedule horizon) are computed by small properties, once.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

# The video decoders data.decoder names (vjepa.data.decoders.BACKENDS, plus auto).
VideoDecoder = Literal["auto", "torchcodec", "decord", "pyav"]
# The logging backends train.loggers names (vjepa/train/metrics.py; "jsonl", log.jsonl, is required).
LoggerName = Literal["jsonl", "tensorboard", "wandb"]


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


@dataclass(frozen=True, kw_only=True)
class MaskSpec:
    """One mask family (paper Sec. 3.2 and Appendix B). Block extents are fractions of the token grid."""

    kind: Literal["multiblock", "tube", "causal"] = "multiblock"
    num_blocks: int = 8
    spatial_scale: tuple[float, float] = (0.15, 0.15)
    temporal_scale: tuple[float, float] = (1.0, 1.0)
    aspect_ratio: tuple[float, float] = (0.75, 1.5)
    max_temporal_keep: float = 1.0
    tube_ratio: float = 0.9  # kind "tube": fraction of spatial positions masked, repeated over time
    causal_frames: int = 0  # kind "causal": context restricted to the first p token time steps
    # block corners: uniform | motion (FLD motion-guided masking, vjepa/masks/motion.py; multiblock and causal):
    # p(corner) = (1 - motion_mix) * (mean motion in the block)^motion_power / sum + motion_mix / #corners
    placement: Literal["uniform", "motion"] = "uniform"
    motion_power: float = 2.0
    motion_mix: float = 0.1


SHORT_RANGE = MaskSpec(num_blocks=8, spatial_scale=(0.15, 0.15))
LONG_RANGE = MaskSpec(num_blocks=2, spatial_scale=(0.7, 0.7))


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Encoder and predictor. `preset` fills width/depth/heads/mlp_ratio unless they are given explicitly."""

    preset: str = "large"  # tiny | small | base | large | huge | giant_v1 | giant_v2 | giant (= giant_v2)
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float | None = None
    patch_size: int = 16
    tubelet_size: int = 2
    pos_embed: Literal["sincos", "rope"] = "sincos"  # sincos (V-JEPA 1) | rope (V-JEPA 2)
    uniform_power: bool = True
    qkv_bias: bool = True
    attn_impl: Literal["sdpa", "reference", "flash"] = "sdpa"
    init_rescale: bool = True  # keep the 1/sqrt(2*layer) rescale of attn.proj and mlp.fc2
    pred_embed_dim: int = 384
    pred_depth: int = 12
    pred_num_heads: int | None = None  # None: the encoder's heads (V-JEPA 1), 12 for giant_v2; V-JEPA 2 uses 12
    pred_mlp_ratio: float | None = None  # None: 4 for the giants (as the official code), else the encoder's
    levels: int = 1  # 1, or 4: V-JEPA 2.1 deep supervision (4 encoder levels concatenated; width 4 D)
    activation_checkpointing: bool = False
    compile: bool = False  # torch.compile each block, static shapes: masks padded to buckets (compile_buckets)
    compile_buckets: float = 1.125  # bucket widths grow by this factor (multiples of 8): at most 12.5% padding
    compile_backend: str = "inductor"  # any torch.compile backend ("aot_eager" to debug)
    pack_families: bool = True  # the mask families through encoder and predictor as one packed sequence per clip

    def resolved(self) -> dict[str, Any]:
        """Encoder width/depth/heads/mlp_ratio after applying the preset."""
        from vjepa.models.presets import ENCODER_PRESETS, describe_presets

        if self.preset not in ENCODER_PRESETS:
            raise ConfigError(f"model.preset: unknown preset {self.preset!r}; valid: {describe_presets()}")
        base = dict(ENCODER_PRESETS[self.preset])
        for key in ("embed_dim", "depth", "num_heads", "mlp_ratio"):
            if getattr(self, key) is not None:
                base[key] = getattr(self, key)
        return base

    def predictor_arch(self) -> dict[str, Any]:
        """Predictor heads and MLP ratio: explicit pred_num_heads / pred_mlp_ratio, else the preset's default, else
        the encoder's."""
        from vjepa.models.presets import PREDICTOR_DEFAULTS, canonical_preset

        arch = self.resolved()
        defaults = PREDICTOR_DEFAULTS.get(canonical_preset(self.preset), {})
        heads = self.pred_num_heads or defaults.get("num_heads", arch["num_heads"])
        ratio = self.pred_mlp_ratio or defaults.get("mlp_ratio", arch["mlp_ratio"])
        return {"num_heads": heads, "mlp_ratio": ratio}


@dataclass(frozen=True, kw_only=True)
class SourceSpec:
    """One data source of a weighted mix (`data.sources`); see vjepa/data/loader.py for the mixing rules."""

    # csv (a list file) | folder (videos below a folder) | shards (tar shards) | synthetic
    kind: Literal["csv", "folder", "shards", "synthetic"] = "csv"
    path: str = ""  # list file | folder | shard list (.txt), glob or brace pattern; unused for synthetic
    weight: float = 1.0  # share of the clips drawn from this source (normalised over the sources)
    frames_per_clip: int = 0  # 0: data.frames_per_clip; differing values switch mixing from per sample to per step


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where clips come from and how they are cut and augmented (vjepa/data/loader.py)."""

    # csv (the lists in csv_paths, concatenated) | synthetic; ignored when sources is set
    source: Literal["csv", "synthetic"] = "csv"
    csv_paths: tuple[str, ...] = ()
    sources: tuple[SourceSpec, ...] = ()  # a weighted mix of lists, folders, shards and synthetic videos
    frames_per_clip: int = 16
    frame_step: int = 4  # exactly one of frame_step, fps, duration is > 0
    fps: float = 0.0  # target frame rate: step = ceil(video fps) // fps (official V-JEPA 2; V-JEPA 2 uses 4)
    duration: float = 0.0  # seconds a clip covers: step = round(duration * video fps / frames_per_clip)
    repeat: int = 1  # samples per decoded video (repeated sampling amortises decoding); divides batch_size
    # clips (k clips of one decode) | masks (one clip k times, each with its own masks)
    repeat_mode: Literal["clips", "masks"] = "clips"
    decode_threads: int = 1  # decoder threads per loader process; 0: the process's CPUs / data.num_workers
    decoder: VideoDecoder = "auto"  # auto: the first that works (vjepa/data/decoders.py), named at start
    crop_size: int = 224
    batch_size: int = 24  # per process
    num_workers: int = 8
    timeout: float = 600.0  # seconds without a batch from a loader worker before the run stops (0: wait forever)
    shard_shuffle: int = 32  # shard sources: shuffle buffer size in samples per loader worker
    random_resize_scale: tuple[float, float] = (0.3, 1.0)
    random_resize_aspect: tuple[float, float] = (0.75, 1.35)
    hflip: float = 0.5
    max_bad_fraction: float = 0.05
    # a video shorter than a clip's span: pad (repeat the last frame, official) | skip
    short_videos: Literal["pad", "skip"] = "pad"
    synthetic_videos: int = 4096  # source "synthetic": number of distinct procedural videos
    synthetic_size: int = 0  # rendered frame size before the crop; 0 = crop_size * 8 // 7
    pin_memory: bool = True


@dataclass(frozen=True, kw_only=True)
class MaskConfig:
    families: tuple[MaskSpec, ...] = (SHORT_RANGE, LONG_RANGE)
    # random (unbiased) | official (cut the highest indices) | pad
    policy: Literal["random", "official", "pad"] = "random"
    group_size: int = 24  # clips whose masks are cut to one length (official: one GPU's batch, 24 in V-JEPA 1)


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """Optimiser, schedules and loss. Schedules are pure functions of the global step (vjepa/train/schedules.py)."""

    # cosine (V-JEPA 1) | wsd (V-JEPA 2: warmup, constant, linear cooldown)
    schedule: Literal["cosine", "wsd"] = "cosine"
    total_steps: int = 90_000
    horizon_scale: float = 1.25  # cosine: schedules span total_steps * horizon_scale (training stops at 80%)
    warmup_steps: int = 12_000
    cooldown_steps: int = 0  # wsd: linear decay to final_lr over the last cooldown_steps
    # wsd: the cooldown line runs lr -> final_lr over cooldown_steps * cooldown_horizon_scale steps and training
    # stops after cooldown_steps of it; 1.0 ends at final_lr. The official V-JEPA 2 cooldown uses 1.25 (ipe_scale),
    # so it ends at lr - (lr - final_lr) / 1.25, about 1.06e-4 for lr 5.25e-4.
    cooldown_horizon_scale: float = 1.0
    start_lr: float = 2e-4
    lr: float = 6.25e-4
    final_lr: float = 1e-6
    weight_decay: float = 0.04
    final_weight_decay: float = 0.4
    ema_momentum: float = 0.998
    final_ema_momentum: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip_grad: float = 10.0  # 0 disables
    # global (one norm over all) | separate (encoder, predictor each; V-JEPA 1)
    clip_grad_mode: Literal["global", "separate"] = "global"
    clip_after_warmup: bool = True
    loss_exp: float = 1.0
    var_reg_weight: float = 0.0  # V-JEPA 1 variance hinge on predictions
    enc_var_weight: float = 0.0  # VICReg variance term on context-encoder tokens (not in the official code)
    enc_cov_weight: float = 0.0  # VICReg covariance term on context-encoder tokens (not in the official code)
    fused: bool = True  # fused AdamW kernel where available
    # what the predictor predicts: features (the target encoder's, V-JEPA) | pixels (each target tubelet's pixels,
    # normalised per patch as VideoMAE; no target encoder forward; vjepa/pixels.py)
    target: Literal["features", "pixels"] = "features"
    pixel_loss: Literal["l2", "l1"] = "l2"  # target pixels: l2 (mean squared error, VideoMAE) | l1
    # V-JEPA 2.1 dense (context) loss: the predictor also predicts the context tokens (a head of its own); L1 against
    # the targets there, times dense_weight (0: off, no head built). Linear warmup of the weight: 0 before
    # dense_warmup_start, then up to dense_weight at dense_warmup_end (both 0: constant; official 15000 / 30000).
    dense_weight: float = 0.0
    dense_warmup_start: int = 0
    dense_warmup_end: int = 0
    dense_distance_weighting: bool = False  # each context token's error times 1/sqrt(grid distance to the targets)
    # Loss guard (V-JEPA 2.1 code, off in every official config): skip the update when the loss exceeds the mean +
    # k std of the last loss_guard_window kept losses (from loss_guard_min_step, once more than half the window is
    # tracked); stop after more than loss_guard_max_skips skips. k = 0: off. min_step 15300: the official
    # `epoch > 50` with 300 iterations per epoch.
    loss_guard_k: float = 0.0
    loss_guard_window: int = 300
    loss_guard_min_step: int = 15_300
    loss_guard_max_skips: int = 10


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    run_dir: str = "runs/vjepa"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on cuda, fp32 on cpu
    fsdp: Literal["auto", "always"] = "auto"  # auto (FSDP2 unless one fp32 process: vjepa/distributed.py) | always
    peak_tflops: float = 0.0  # the device's peak for MFU; 0: from the GPU's name (vjepa/flops.py), none on CPU
    log_every: int = 10
    checkpoint_every: int = 1000
    checkpoint_every_minutes: float = 0.0  # also checkpoint when this much wall time passed since the last (0: off)
    keep_last: int = 2  # complete checkpoints kept (>= 1); the newest is never removed
    # train.resume=false in a folder holding a run: refuse | archive (moved aside)
    existing_run: Literal["refuse", "archive"] = "refuse"
    resume: bool = True  # continue from the latest checkpoint in run_dir if there is one
    # a checkpoint folder to continue from (whole training state: the V-JEPA 2 cooldown from the main phase), or
    # an export file / Hugging Face VJEPA2 folder to warm-start from (weights only, fresh optimizer, step 0)
    init_from: str = ""
    stop_after: int = 0  # stop at this step (schedules still span optim.total_steps); 0 = total_steps
    threads: int = 0  # torch intra-op threads per process; 0 = leave as is
    # log.jsonl (required: it is the run's record that resume, reports and sweeps read) | tensorboard (run_dir/tb) |
    # wandb (Weights & Biases, run_dir/wandb; WANDB_MODE=offline without internet); the extras: vjepa-lab[logging]
    loggers: tuple[LoggerName, ...] = ("jsonl",)
    wandb_project: str = "vjepa"  # W&B project of train.loggers=[..., wandb] (entity: WANDB_ENTITY or the default)
    collapse_threshold: float = 0.0  # warn when the target feature spread falls below this (0: off)
    objective_modules: tuple[str, ...] = ("vjepa.evals.objectives",)  # modules whose import registers objectives


@dataclass(frozen=True, kw_only=True)
class ObjectiveSpec:
    """One auxiliary objective added to the V-JEPA loss (vjepa/objectives; the list: `vjepa objectives`)."""

    name: str = ""  # catalogue name (train.objective_modules) or an import path package.module:Class
    weight: float | None = None  # None: the objective's default weight; 0: off (not built)
    options: dict[str, Any] = field(default_factory=dict)  # the objective's typed options, checked by name
    lr_scale: float = 1.0  # learning-rate multiplier of the objective's own head (if it has one)
    wd_scale: float = 1.0  # weight-decay multiplier of that head


@dataclass(frozen=True, kw_only=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    objectives: tuple[ObjectiveSpec, ...] = ()


# ---------------------------------------------------------------------------------------------------------------
# strict merge


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML value to `tp`, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if origin is Literal:  # the allowed values are the type: checked here, for every key, at load time
        valid = typing.get_args(tp)
        if isinstance(value, bool) or value not in valid:
            raise ConfigError(f"{key}: {value!r} is not one of {list(valid)}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return _merge(tp(), value, key)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): v for k, v in value.items()}
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}.{i}") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}: {value!r}")
        return tuple(_coerce(v, a, f"{key}.{i}") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(number):  # no config number means anything as nan or inf
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def _legacy_tensorboard(updates: Mapping[str, Any], key: str) -> dict[str, Any]:
    """train.tensorboard (a bool, before train.loggers; every run folder of those versions has it in its
    config.yaml, so they stay readable): true adds tensorboard to the loggers, false nothing; a FutureWarning."""
    import warnings

    updates = dict(updates)
    on = _coerce(updates.pop("tensorboard"), bool, key)
    warnings.warn(
        f"{key} is replaced by train.loggers (e.g. train.loggers=[jsonl,tensorboard]); read as "
        + ("tensorboard added to train.loggers" if on else "no tensorboard"),
        FutureWarning,
        stacklevel=4,
    )
    if on:
        loggers = list(updates.get("loggers", ["jsonl"]))
        updates["loggers"] = loggers + ([] if "tensorboard" in loggers else ["tensorboard"])
    return updates


def _merge(base: Any, updates: Mapping[str, Any], prefix: str = "") -> Any:
    """Return a copy of dataclass `base` with `updates` applied; unknown keys are errors."""
    types_ = _field_types(type(base))
    changes = {}
    if prefix == "train" and "tensorboard" in updates:
        updates = _legacy_tensorboard(updates, "train.tensorboard")
    for name, value in updates.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in types_:
            raise ConfigError(f"unknown key {key!r}; valid keys here: {sorted(types_)}")
        current = getattr(base, name)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            changes[name] = _merge(current, value, key)
        else:
            changes[name] = _coerce(value, types_[name], key)
    return dataclasses.replace(base, **changes)


def _set_path(tree: dict[str, Any], cfg: Any, dotted: str, value: Any) -> None:
    """Write `value` at `dotted` into the nested update dict, validating names against `cfg` as it goes."""
    parts = dotted.split(".")
    node, obj, walked = tree, cfg, []
    for part in parts[:-1]:
        walked.append(part)
        if not dataclasses.is_dataclass(obj) or part not in _field_types(type(obj)):
            valid = sorted(_field_types(type(obj))) if dataclasses.is_dataclass(obj) else []
            raise ConfigError(f"unknown key {'.'.join(walked)!r}; valid keys here: {valid}")
        obj = getattr(obj, part)
        if isinstance(obj, (tuple, dict)) and parts[len(walked)].isdigit():
            raise ConfigError(f"{dotted}: indexing into a list is not supported; set the whole list")
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def parse_overrides(cfg: Any, overrides: Sequence[str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        dotted, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(
                f"{dotted.strip()}: cannot read the value {raw!r} ({problem}); quote it or fix it"
            ) from None
        _set_path(tree, cfg, dotted.strip(), value)
    return tree


def _deep_update(dst: dict[str, Any], src: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), Mapping):
            _deep_update(dst[k], v)
        else:
            dst[k] = v
    return dst


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if loaded is not None and not isinstance(loaded, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return dict(loaded or {})


def load_typed(cls: type, path: str | Path | Sequence[str | Path] | None = None, overrides: Sequence[str] = ()) -> Any:
    """Defaults of dataclass `cls` <- YAML file(s) <- `a.b=c` overrides, strictly checked (no cross-field checks).

    Several files apply in order, each over the ones before (mappings merge key by key; a list, such as
    `objectives` or `mask.families`, is replaced as a whole)."""
    paths = [] if path is None else [path] if isinstance(path, (str, Path)) else list(path)
    updates: dict[str, Any] = {}
    for p in map(Path, paths):
        loaded = _read_yaml(p)
        try:
            _merge(cls(), loaded)  # report file errors before override errors, naming the file
        except ConfigError as err:
            raise ConfigError(f"{p}: {err}") from None
        _deep_update(updates, loaded)
    _deep_update(updates, parse_overrides(cls(), overrides))
    return _merge(cls(), updates)


def load_config(path: str | Path | Sequence[str | Path] | None = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults <- YAML file(s) <- `a.b=c` overrides, strictly checked, then validated."""
    from vjepa.config_checks import validate  # the checks read these dataclasses

    cfg = load_typed(Config, path, overrides)
    validate(cfg)
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) for YAML/JSON output."""

    def convert(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: convert(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [convert(x) for x in v]
        return v

    return convert(cfg)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
