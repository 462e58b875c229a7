"""PCA of an encoder's patch tokens rendered as RGB: a picture of what the latent space separates in a video.

`vjepa eval pca VIDEO --checkpoint CKPT --out FILE.png [--frames N] [--frame-step S] [--crop-size S]` decodes
N frames of the video, resizes the short side to the crop size and centre-crops (the evaluation transform),
runs the frozen encoder, fits a PCA (top 3 components) over all tokens of the clip, maps each component to
[0, 1] with robust bounds (the 1st and 99th percentiles over the clip, then clipped) and shows the three as RGB.
The PNG has the input frames in the top row (the first frame of each tubelet) and the PCA images below, upsampled
(nearest) to the frame size, one column per tubelet time step, columns and rows separated by `gap` white pixels.

Source: the V-JEPA 2 latent-space PCA pictures (V-JEPA 2 paper, Assran et al. 2025: tokens of
2-frame tubelets, PCA to 3 components shown as colour); the same recipe as the DINOv2 feature pictures. As
there, the PCA is fitted over every token of the whole clip, so colours are comparable across time steps.
Departures: none in the method; the percentile bounds (rather than min/max) are our choice, so a few extreme
tokens do not wash out the picture. Component signs are fixed (largest-magnitude loading positive) so the same
input gives the same colours. Written with Pillow; matplotlib is not needed.

Shapes: T frames, H, W frame size, S crop size, T' = T / tubelet, H' = W' = S / patch, N = T' H' W' tokens,
D width, k components.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vjepa.data.transforms import eval_resize_crop, normalize_clip

Grid = tuple[int, int, int]


def pca_fit(tokens: torch.Tensor, k: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """tokens [N, D] -> (mean [D], components [k, D] orthonormal rows, explained variance [k]) via the SVD of the
    centred tokens in float64. Sign: each component's largest-magnitude loading is positive."""
    if tokens.ndim != 2 or tokens.shape[0] < 2:
        raise ValueError(f"pca_fit: expected tokens [N, D] with N >= 2, got {list(tokens.shape)}")
    if not 1 <= k <= min(tokens.shape):
        raise ValueError(f"pca_fit: k={k} components from tokens of shape {list(tokens.shape)}")
    x = tokens.double()
    mean = x.mean(dim=0)  # [D]
    _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)  # [R], [R, D]
    comps = vh[:k]  # [k, D]
    pivot = comps.abs().argmax(dim=1)  # [k]
    comps = comps * comps.gather(1, pivot[:, None]).sign()  # [k, D]
    var = s[:k] ** 2 / (x.shape[0] - 1)  # [k]
    return mean, comps, var


def robust_unit(values: torch.Tensor, q: float = 0.01) -> torch.Tensor:
    """values [N, k] -> [0, 1] per column: (v - q-quantile) / (1-q-quantile - q-quantile), clipped; constant
    columns give 0.5."""
    lo = torch.quantile(values, q, dim=0)  # [k]
    hi = torch.quantile(values, 1.0 - q, dim=0)  # [k]
    span = hi - lo
    out = (values - lo) / torch.where(span > 0, span, torch.ones_like(span))  # [N, k]
    out = torch.where(span > 0, out, torch.full_like(out, 0.5))
    return out.clamp(0.0, 1.0)


def pca_rgb(tokens: torch.Tensor, grid: Grid, q: float = 0.01) -> torch.Tensor:
    """tokens [N, D] in (t, h, w) order -> float RGB in [0, 1] of shape [T', H', W', 3]."""
    t, h, w = grid
    if tokens.shape[0] != t * h * w:
        raise ValueError(f"pca: {tokens.shape[0]} tokens do not fill the grid {tuple(grid)} ({t * h * w} tokens)")
    mean, comps, _ = pca_fit(tokens, 3)
    proj = (tokens.double() - mean) @ comps.T  # [N, 3]
    return robust_unit(proj, q).float().reshape(t, h, w, 3)  # [T', H', W', 3]


def pca_image(frames: torch.Tensor, tokens: torch.Tensor, grid: Grid, *, gap: int = 2, q: float = 0.01) -> torch.Tensor:
    """frames uint8 [T, H, W, 3] (what the encoder saw), tokens [N, D] (time-major), grid (T', H', W') ->
    uint8 image [2 H + gap, T' W + (T' - 1) gap, 3]: frames on top, PCA colours below, one column per T' step."""
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"pca_image: expected uint8 frames [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    n_frames, height, width, _ = frames.shape
    steps = grid[0]
    if n_frames % steps:
        raise ValueError(f"pca_image: {n_frames} frames are not a whole number of tubelets for {steps} time steps")
    tubelet = n_frames // steps
    rgb = pca_rgb(tokens, grid, q)  # [T', H', W', 3]
    up = F.interpolate(rgb.permute(0, 3, 1, 2), size=(height, width), mode="nearest")  # [T', 3, H, W]
    pca_u8 = (up * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1)  # [T', H, W, 3]
    img = torch.full((2 * height + gap, steps * width + (steps - 1) * gap, 3), 255, dtype=torch.uint8)
    for i in range(steps):
        x0 = i * (width + gap)
        img[:height, x0 : x0 + width] = frames[i * tubelet]
        img[height + gap :, x0 : x0 + width] = pca_u8[i]
    return img


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """uint8 [H, W, 3] -> PNG file (Pillow)."""
    try:
        from PIL import Image
    except ImportError as err:
        raise ImportError("writing PNG files needs Pillow: pip install Pillow") from err
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.contiguous().numpy()).save(p)
    return p


def resize_center_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> uint8 [T, S, S, 3]: short side resized to S (bilinear, antialiased), centre crop;
    the evaluation transform of vjepa.data.transforms (`eval_resize_crop`), kept in uint8 for display."""
    return eval_resize_crop(frames, size).permute(0, 2, 3, 1).contiguous()  # [T, S, S, 3]


def token_grid(encoder: torch.nn.Module, num_frames: int, size: int) -> Grid:
    """(T', H', W') of a clip of num_frames frames at size x size through the encoder's tubelets."""
    tub, patch = int(encoder.tubelet_size), int(encoder.patch_size)
    if num_frames % tub or size % patch:
        raise ValueError(f"{num_frames} frames at {size}px do not tile into {tub}x{patch}x{patch} tubelets")
    return num_frames // tub, size // patch, size // patch


def frame_indices(total: int, num_frames: int, frame_step: int | None, start: int = 0) -> list[int]:
    """num_frames indices into a video of `total` frames: evenly spread over the whole video when frame_step is
    None, else start, start + step, ...; errors say how many frames the video has."""
    if num_frames < 1 or total < 1:
        raise ValueError(f"cannot take {num_frames} frames from a video of {total} frames")
    if frame_step is None:
        return torch.linspace(0, total - 1, num_frames).round().long().tolist()
    last = start + (num_frames - 1) * frame_step
    if start < 0 or frame_step < 1 or last >= total:
        raise ValueError(f"frames {start}..{last} (step {frame_step}) do not fit in a video of {total} frames")
    return list(range(start, last + 1, frame_step))


def run_pca(
    video: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    *,
    num_frames: int | None = None,
    frame_step: int | None = None,
    start: int = 0,
    crop_size: int | None = None,
    device: str = "cpu",
) -> dict:
    """Decode, encode (vjepa.pretrained.load_pretrained + vjepa.embed.Embedder), render and write the PNG; return
    {"png", "grid", "frame_indices", "explained_variance_ratio", "timings"}."""
    from vjepa.data.decoders import open_video
    from vjepa.embed import Embedder
    from vjepa.pretrained import load_pretrained

    t0 = time.perf_counter()
    encoder = load_pretrained(checkpoint, device=device)
    num_frames = int(num_frames or encoder.frames_per_clip)
    size = int(crop_size or encoder.crop_size)
    with open_video(video) as reader:
        idx = frame_indices(reader.num_frames, num_frames, frame_step, start)
        frames = reader.get_frames(idx)  # [T, H, W, 3]
    clip = resize_center_crop(frames, size)  # [T, S, S, 3]
    grid = token_grid(encoder, num_frames, size)
    tokens = Embedder(encoder, device=device).clip_tokens(normalize_clip(clip)[None])[0].float().cpu()  # [N, D]
    image = pca_image(clip, tokens, grid)
    png = save_png(image, out)
    _, _, var = pca_fit(tokens, 3)
    total_var = float(((tokens.double() - tokens.double().mean(0)) ** 2).sum() / (tokens.shape[0] - 1))
    return {
        "png": str(png),
        "image_size": list(image.shape[:2]),
        "grid": list(grid),
        "frame_indices": idx,
        "explained_variance_ratio": (var / total_var).tolist(),
        "timings": {"total_s": time.perf_counter() - t0},
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="a video file")
    parser.add_argument("--checkpoint", required=True, help="encoder: export file, run or checkpoint folder, HF folder")
    parser.add_argument("--out", required=True, help="output PNG file")
    parser.add_argument(
        "--frames", type=int, default=None, help="number of frames (default: the encoder's clip length)"
    )
    parser.add_argument(
        "--frame-step",
        type=int,
        default=None,
        help="take consecutive frames at this step (default: spread over the video)",
    )
    parser.add_argument("--start", type=int, default=0, help="first frame with --frame-step")
    parser.add_argument("--crop-size", type=int, default=None, help="default: the encoder's crop size")
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> int:
    info = run_pca(
        args.video,
        args.checkpoint,
        args.out,
        num_frames=args.frames,
        frame_step=args.frame_step,
        start=args.start,
        crop_size=args.crop_size,
        device=args.device,
    )
    ratio = ", ".join(f"{r:.3f}" for r in info["explained_variance_ratio"])
    print(
        f"wrote {info['png']} ({info['image_size'][1]}x{info['image_size'][0]}, grid {info['grid']}, "
        f"explained variance {ratio})"
    )
    return 0
