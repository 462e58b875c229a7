"""LiFT: train Linearized Feature Trajectories on frozen per-frame features and probe encoder (+) LiFT.

`vjepa eval lift --train FEATS --val FEATS --out DIR` trains LiFT on the train split's frame features (each view
a sample), then fits a ridge probe (evals/ridge.py) on the train split for the encoder's average-pooled embedding,
the LiFT descriptor and their concatenation, and reports val accuracy (LiFT paper, Table 5).

Paper: Bagad & Zisserman, "Chirality in Action: Time-Aware Video Representation Learning by Latent
Straightening", Sec. 2 and Appendix B. Model: frame features x_t [D] -> Linear D->d ->
+ sinusoidal position of the frame index t -> with two learnable tokens e_s, e_d through a 4-layer, 8-head pre-LN
transformer -> the two token outputs, each Linear d->d + LayerNorm, are z_s (static) and z_d (dynamic).
Decoder: z_t = z_s + (t / (T - 1)) z_d for t = 0..T-1, then an MLP d -> 2d -> 2d -> D, each hidden layer
Linear, GELU, LayerNorm (paper order). Loss = mean squared error over (samples, frames, channels)
+ 0.1 * mean |cos(z_s, z_d)|. Descriptor [z_s; z_d] (2d = 768 at d = 384).

Frame positions: the paper adds a sinusoidal encoding of the frame index to the projected frame tokens (Sec. 2,
App. B); we do the same (`sincos_1d` of the repository, index t = 0..T-1, any T); the two learnable tokens get no
position. Departures from the paper: z_t uses t / (T - 1) (t from 0), so the line runs from z_s at the first
frame to z_s + z_d at the last (the paper writes t / T); the loss is a mean, not a sum over frames, and uses
|cos| (the paper writes cos; with the absolute value the regulariser pushes towards orthogonality rather than
towards opposite directions); features are standardised per channel with the training mean/std (stored in the
model, `normalize=True`) and the reconstruction is scored in that space; the learning rate follows a cosine decay
over the steps (a pure function of the step) instead of the paper's plateau scheduler; the transformer has no
final LayerNorm (the Linear + LayerNorm heads follow); transformer blocks are the repository's pre-LN ViT block.
Initialisation: PyTorch's defaults for Linear/LayerNorm, tokens trunc-normal(0.02). The ViT init of
vjepa.models.init (trunc-normal 0.02 everywhere) left the straight-line test stuck at the trivial loss (~1.0, the
variance of the standardised features) for 15 of 20 epochs, where the default init reached 0.13.
The paper trains LiFT on DINOv2 frame features of Kinetics-400; here it runs on any encoder's frame features
(V-JEPA: per tubelet step, the mean over space).

Shapes: N videos, V views, T (= T') frame steps, D feature width, d = width, B batch.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from vjepa.evals.probe_io import as_features, check_pair
from vjepa.evals.report import write_report
from vjepa.evals.ridge import ALPHAS, fit_ridge_cv

from vjepa.models.layers import Block
from vjepa.models.pos_embed import sincos_1d
from vjepa.seeding import derive_seed, make_generator

LIFT_FORMAT = "vjepa.lift"


class LiFT(nn.Module):
    """`forward(x [B, T, D]) -> (recon [B, T, D], z_s [B, d], z_d [B, d])`; `encode(x) -> (z_s, z_d)`."""

    def __init__(
        self, *, in_dim: int, width: int = 384, depth: int = 4, num_heads: int = 8, mlp_ratio: float = 4.0
    ) -> None:
        super().__init__()
        if width % 2:
            raise ValueError(f"LiFT: width must be even (sinusoidal positions), got {width}")
        self.in_dim, self.width, self.depth, self.num_heads, self.mlp_ratio = in_dim, width, depth, num_heads, mlp_ratio
        self.register_buffer("feat_mean", torch.zeros(in_dim))  # [D] standardisation, identity by default
        self.register_buffer("feat_std", torch.ones(in_dim))  # [D]
        self.proj_in = nn.Linear(in_dim, width)
        self.static_token = nn.Parameter(torch.zeros(1, 1, width))
        self.dynamic_token = nn.Parameter(torch.zeros(1, 1, width))
        self.blocks = nn.ModuleList(Block(dim=width, num_heads=num_heads, mlp_ratio=mlp_ratio) for _ in range(depth))
        self.head_s = nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width))
        self.head_d = nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width))
        self.decoder = nn.Sequential(
            nn.Linear(width, 2 * width),
            nn.GELU(),
            nn.LayerNorm(2 * width),
            nn.Linear(2 * width, 2 * width),
            nn.GELU(),
            nn.LayerNorm(2 * width),
            nn.Linear(2 * width, in_dim),
        )

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw features [..., D] -> the standardised space LiFT reconstructs."""
        return (x - self.feat_mean) / self.feat_std

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised frame features x [B, T, D] -> z_s, z_d [B, d]."""
        b, t, _ = x.shape
        pos = sincos_1d(self.width, torch.arange(t)).to(x)  # [T, d]
        e = self.proj_in(x) + pos  # [B, T, d]
        cls = torch.cat([self.static_token, self.dynamic_token], dim=1).expand(b, -1, -1)  # [B, 2, d]
        h = torch.cat([cls, e], dim=1)  # [B, 2 + T, d]
        for block in self.blocks:
            h = block(h)
        return self.head_s(h[:, 0]), self.head_d(h[:, 1])  # [B, d] each

    def decode(self, z_s: torch.Tensor, z_d: torch.Tensor, num_frames: int) -> torch.Tensor:
        """z_s, z_d [B, d] -> reconstructed standardised features [B, T, D] from z_t = z_s + t / (T - 1) z_d."""
        tau = torch.arange(num_frames, dtype=z_s.dtype, device=z_s.device) / max(num_frames - 1, 1)  # [T]
        z_t = z_s[:, None, :] + tau[None, :, None] * z_d[:, None, :]  # [B, T, d]
        return self.decoder(z_t)  # [B, T, D]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z_s, z_d = self.encode(x)
        return self.decode(z_s, z_d, x.shape[1]), z_s, z_d

    def config(self) -> dict:
        return {
            "in_dim": self.in_dim,
            "width": self.width,
            "depth": self.depth,
            "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio,
        }


def lift_loss(
    x: torch.Tensor, recon: torch.Tensor, z_s: torch.Tensor, z_d: torch.Tensor, orth_weight: float = 0.1
) -> dict[str, torch.Tensor]:
    """{"loss", "rec", "orth"}: rec = mean (x - recon)^2 over [B, T, D]; orth = mean_B |cos(z_s, z_d)|."""
    rec = F.mse_loss(recon, x)
    orth = F.cosine_similarity(z_s, z_d, dim=-1, eps=1e-8).abs().mean()
    return {"loss": rec + orth_weight * orth, "rec": rec, "orth": orth}


@dataclass(frozen=True)
class LiftSettings:
    """Training settings of LiFT (the arguments of `train_lift` besides the features and the seed)."""

    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    width: int = 384
    depth: int = 4
    num_heads: int = 8
    orth_weight: float = 0.1
    normalize: bool = True


def _check_frames(frame_feats: torch.Tensor, name: str) -> None:
    if frame_feats.ndim != 3 or frame_feats.shape[1] < 2:
        raise ValueError(f"{name}: expected frame features [N, T, D] with T >= 2, got {list(frame_feats.shape)}")


def train_lift(
    frame_feats: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    width: int = 384,
    depth: int = 4,
    num_heads: int = 8,
    weight_decay: float = 0.0,
    orth_weight: float = 0.1,
    normalize: bool = True,
    log_every: int = 0,
) -> tuple[LiFT, list[dict]]:
    """Train LiFT on frame_feats [N, T, D]; return (model in eval mode, history: one dict per epoch with the mean
    loss, rec, orth and the last lr). Adam(W) with a cosine decay of lr to 0 over all steps; the init and the
    batch order come from `seed` only (global RNG state is restored afterwards). log_every > 0 prints every
    log_every epochs."""
    _check_frames(frame_feats, "train_lift")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"train_lift: epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    x_all = frame_feats.float()
    n, _, d_in = x_all.shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed("lift-init", seed))
        model = LiFT(in_dim=d_in, width=width, depth=depth, num_heads=num_heads)
        nn.init.trunc_normal_(model.static_token, std=0.02, a=-2.0, b=2.0)
        nn.init.trunc_normal_(model.dynamic_token, std=0.02, a=-2.0, b=2.0)
    if normalize:
        flat = x_all.reshape(-1, d_in)  # [N * T, D]
        model.feat_mean.copy_(flat.mean(dim=0))
        model.feat_std.copy_(flat.std(dim=0, correction=0).clamp_min(1e-6))
    x_all = model.normalize(x_all)  # [N, T, D]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = make_generator("lift-order", seed)
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch
    history: list[dict] = []
    model.train()
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        sums = torch.zeros(3)
        for i in range(steps_per_epoch):
            cur_lr = lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
            for group in opt.param_groups:
                group["lr"] = cur_lr
            xb = x_all[order[i * batch_size : (i + 1) * batch_size]]  # [B, T, D]
            losses = lift_loss(xb, *model(xb), orth_weight=orth_weight)
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            opt.step()
            sums += torch.stack([losses[k].detach() for k in ("loss", "rec", "orth")]) * xb.shape[0]
            step += 1
        mean = (sums / n).tolist()
        history.append({"epoch": epoch + 1, "loss": mean[0], "rec": mean[1], "orth": mean[2], "lr": cur_lr})
        if log_every > 0 and ((epoch + 1) % log_every == 0 or epoch + 1 == epochs):
            print(f"lift epoch {epoch + 1}/{epochs}: loss {mean[0]:.5f} rec {mean[1]:.5f} orth {mean[2]:.4f}")
    model.eval()
    return model, history


@torch.no_grad()
def lift_descriptors(model: LiFT, frame_feats: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Raw frame features [N, T, D] -> descriptors [z_s; z_d] [N, 2 * width] (float32)."""
    _check_frames(frame_feats, "lift_descriptors")
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, frame_feats.shape[0], batch_size):
        z_s, z_d = model.encode(model.normalize(frame_feats[i : i + batch_size].float()))
        out.append(torch.cat([z_s, z_d], dim=-1))  # [B, 2d]
    model.train(was_training)
    return torch.cat(out)  # [N, 2d]


@torch.no_grad()
def lift_reconstruction_error(model: LiFT, frame_feats: torch.Tensor, batch_size: int = 256) -> float:
    """Mean squared reconstruction error of raw frame features [N, T, D] in the standardised space."""
    total, count = 0.0, 0
    for i in range(0, frame_feats.shape[0], batch_size):
        x = model.normalize(frame_feats[i : i + batch_size].float())  # [B, T, D]
        total += float(((model(x)[0] - x) ** 2).sum())
        count += x.numel()
    return total / count


def save_lift(model: LiFT, path: str | Path, *, extra: dict | None = None) -> None:
    """torch.save {"format": "vjepa.lift", "config", "state_dict", **extra} (never loadable as a backbone)."""
    torch.save(
        {"format": LIFT_FORMAT, "config": model.config(), "state_dict": model.state_dict(), **(extra or {})}, path
    )


def load_lift(path: str | Path) -> LiFT:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != LIFT_FORMAT:
        raise ValueError(f"{path}: not a LiFT checkpoint (format {LIFT_FORMAT!r} expected)")
    cfg = obj["config"]
    model = LiFT(
        in_dim=cfg["in_dim"],
        width=cfg["width"],
        depth=cfg["depth"],
        num_heads=cfg["num_heads"],
        mlp_ratio=cfg["mlp_ratio"],
    )
    model.load_state_dict(obj["state_dict"])
    return model.eval()


# ---------------------------------------------------------------------------------------------------------------
# evaluation: encoder (+) LiFT probes (LiFT paper, Table 5)


def frame_features(feats: dict, name: str) -> torch.Tensor:
    """The [N, V, T', D] float32 frame features of a feature dict with output "frames", or derived from output
    "tokens" ([N, V, K, D], K = T' * H' * W' time-major) as the mean over space per time step."""
    output = feats.get("output")
    if output == "frames":
        return feats["features"].float()
    if output == "tokens":
        t, h, w = feats["grid"]
        return feats["features"].float().unflatten(2, (t, h * w)).mean(3)  # [N, V, T', D]
    raise ValueError(
        f"{name}: needs per-frame features (extract with --output frames or tokens; [N, V, T', D]), got {output!r}"
    )


def video_lift_descriptors(model: LiFT, frames: torch.Tensor) -> torch.Tensor:
    """frames [N, V, T', D] -> per-video descriptor [N, 2d]: the mean over views of the view descriptors."""
    n, v, t, d = frames.shape
    desc = lift_descriptors(model, frames.reshape(n * v, t, d))  # [N * V, 2d]
    return desc.reshape(n, v, -1).mean(dim=1)  # [N, 2d]


def run_lift(
    train_feats: dict | str | Path,
    val_feats: dict | str | Path,
    out_dir: str | Path | None,
    *,
    settings: LiftSettings | None = None,
    seed: int = 0,
    alphas: tuple[float, ...] = ALPHAS,
    log_every: int = 0,
) -> dict:
    """Train LiFT on the train frames (each view a sample), probe "encoder", "lift", "encoder+lift" embeddings
    (ridge, alpha by leave-one-out on train), report val accuracy; write result.json, report.md, lift.pt."""
    settings = LiftSettings() if settings is None else settings
    train, train_src = as_features(train_feats, "train")
    val, val_src = as_features(val_feats, "val")
    check_pair(train, val, train_src, val_src)
    tr, va = frame_features(train, train_src), frame_features(val, val_src)  # [N, V, T', D]
    t0 = time.perf_counter()
    model, history = train_lift(tr.flatten(0, 1), seed=seed, log_every=log_every, **asdict(settings))
    t_train = time.perf_counter() - t0
    embeddings = {
        "encoder": (tr.mean(dim=(1, 2)), va.mean(dim=(1, 2))),  # [N, D] average pooling
        "lift": (video_lift_descriptors(model, tr), video_lift_descriptors(model, va)),  # [N, 2d]
    }
    embeddings["encoder+lift"] = tuple(torch.cat([embeddings["encoder"][i], embeddings["lift"][i]], 1) for i in (0, 1))
    y_tr, y_va = train["labels"], val["labels"]
    rows, accuracy, alpha = [], {}, {}
    for name, (e_tr, e_va) in embeddings.items():
        clf, _ = fit_ridge_cv(e_tr, y_tr, alphas=alphas)
        accuracy[name] = clf.accuracy(e_va, y_va)
        alpha[name] = clf.alpha
        rows.append({"embedding": name, "dim": e_tr.shape[1], "val accuracy": accuracy[name], "alpha": clf.alpha})
    result = {
        "eval": "lift",
        "accuracy": accuracy,
        "delta_encoder_plus_lift": accuracy["encoder+lift"] - accuracy["encoder"],
        "alpha": alpha,
        "reconstruction_mse": {
            "train": lift_reconstruction_error(model, tr.flatten(0, 1)),
            "val": lift_reconstruction_error(model, va.flatten(0, 1)),
        },
        "final_loss": history[-1],
        "num_train": int(tr.shape[0]),
        "num_val": int(va.shape[0]),
        "seed": seed,
        "timings": {"train_lift_s": t_train, "total_s": time.perf_counter() - t0},
        "config": {"settings": asdict(settings), "alphas": list(alphas), "train": train_src, "val": val_src},
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_lift(model, out / "lift.pt", extra={"seed": seed, "train": train_src})
        curve = [{k: h[k] for k in ("epoch", "loss", "rec", "orth")} for h in history[:: max(1, len(history) // 10)]]
        write_report(
            out, "LiFT: encoder (+) LiFT linear probes", result, tables={"Val accuracy": rows, "Training": curve}
        )
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", required=True, help="train features (output 'frames') from `vjepa eval extract`")
    parser.add_argument("--val", required=True, help="val features (output 'frames')")
    parser.add_argument("--out", required=True, help="output folder (result.json, report.md, lift.pt)")
    parser.add_argument("--epochs", type=int, default=LiftSettings.epochs)
    parser.add_argument("--batch-size", type=int, default=LiftSettings.batch_size)
    parser.add_argument("--lr", type=float, default=LiftSettings.lr)
    parser.add_argument("--width", type=int, default=LiftSettings.width, help="latent width d (descriptor 2d)")
    parser.add_argument("--seed", type=int, default=0)


def settings_from_args(args: argparse.Namespace) -> LiftSettings:
    return LiftSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, width=args.width)


def run(args: argparse.Namespace) -> int:
    result = run_lift(args.train, args.val, args.out, settings=settings_from_args(args), seed=args.seed, log_every=10)
    acc = result["accuracy"]
    print(" ".join(f"{k} {v:.4f}" for k, v in acc.items()) + f"  -> {args.out}/report.md")
    return 0
