"""Procedural videos of shapes with labelled, temporally opposite ("chiral") motions.

Each clip shows one or two two-tone shapes (circle, square, triangle, diamond, cross, star) with an outline, on
a static textured background (smooth noise, stripes or a checkerboard in two random colours). The label picks
one of twelve motions, grouped in six pairs whose members are time reversals of each other:
move left/right, move up/down, grow/shrink, rotate clockwise/anticlockwise, fade in/out, approach/separate.

Chirality by construction: the clip of the second class of a pair is the clip of the first class with the same
seed played backwards, frame for frame (every frame is a pointwise function of a time parameter tau, and the
reversed class uses tau' = 1 - tau computed exactly). So "move_left" is distributed exactly like time-reversed
"move_right": appearance says nothing about the class; only the order of frames does (an end frame alone still
hints, e.g. where the shape starts, as in real chiral pairs).
The seed alone fixes the appearance (background, shape kind, colours) and the motion magnitudes; the label picks
the motion, so render_clip(c, s) for all c share one scene.

Note: a horizontal flip turns move_left into move_right and rotate_cw into rotate_ccw; use hflip=0 when labels
matter (probes, chiral evaluation).

Not in the official code (which has no synthetic data): this is the data source of the CPU demo and the tests.
Coordinates are in image units [0, 1] with y pointing down (screen convention); clockwise is as seen on screen.

Shape legend: T frames, H = W = size pixels, C = 3 channels, S shapes in the scene (1 or 2).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vjepa.data.media import DETERMINISTIC_X264_PARAMS
from vjepa.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Transform, normalize_clip
from vjepa.seeding import derive_seed, make_generator

MOTION_CLASSES: list[str] = [
    "move_right",
    "move_left",
    "move_down",
    "move_up",
    "grow",
    "shrink",
    "rotate_cw",
    "rotate_ccw",
    "fade_in",
    "fade_out",
    "approach",
    "separate",
]
# (a, b): class b is class a played backwards.
OPPOSITE_PAIRS: list[tuple[int, int]] = [(i, i + 1) for i in range(0, len(MOTION_CLASSES), 2)]

SHAPES: list[str] = ["circle", "square", "triangle", "diamond", "cross", "star"]
BACKGROUNDS: list[str] = ["noise", "stripes", "checker"]

_MARGIN = 0.02  # keep shapes this far (image units) inside the frame


@dataclass(frozen=True)
class Scene:
    """Everything needed to draw a clip: appearance plus per-frame shape states.

    background: [H, W, 3] float in [0, 1]; per shape s (lists of length S): kind index, fill colours
    fill_a / fill_b [3] (two tones split along the shape's local vertical axis), outline colour [3];
    per-frame tensors [S, T]: cx, cy (centre), radius, theta (rotation, radians, clockwise on screen), alpha.
    """

    background: torch.Tensor
    kinds: list[int]
    fill_a: torch.Tensor  # [S, 3]
    fill_b: torch.Tensor  # [S, 3]
    outline: torch.Tensor  # [S, 3]
    cx: torch.Tensor  # [S, T]
    cy: torch.Tensor  # [S, T]
    radius: torch.Tensor  # [S, T]
    theta: torch.Tensor  # [S, T]
    alpha: torch.Tensor  # [S, T]


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _randint(g: torch.Generator, n: int) -> int:
    return int(torch.randint(n, (), generator=g))


def _background(g: torch.Generator, size: int) -> torch.Tensor:
    """Static texture [H, W, 3] in [0, 1]: a scalar pattern in [0, 1] mapped between two random colours."""
    kind = BACKGROUNDS[_randint(g, len(BACKGROUNDS))]
    c1 = torch.rand(3, generator=g)
    c2 = torch.rand(3, generator=g)
    # Muted contrast so that the outlined shapes stand out.
    mid = 0.5 * (c1 + c2)
    c1, c2 = mid + 0.35 * (c1 - mid), mid + 0.35 * (c2 - mid)
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y, x = coords[:, None], coords[None, :]  # [H, 1], [1, W]
    if kind == "noise":
        k = 3 + _randint(g, 5)
        coarse = torch.rand(1, 1, k, k, generator=g)
        fine = torch.rand(1, 1, 2 * k, 2 * k, generator=g)
        pattern = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
        pattern = pattern + 0.5 * F.interpolate(fine, size=(size, size), mode="bicubic", align_corners=False)
        pattern = (pattern[0, 0] / 1.5).clamp(0.0, 1.0)  # [H, W]
    else:
        freq = _uniform(g, 2.0, 7.0) * 2 * math.pi
        angle = _uniform(g, 0.0, math.pi)
        phase = _uniform(g, 0.0, 2 * math.pi)
        sharp = _uniform(g, 1.0, 6.0)
        a = x * math.cos(angle) + y * math.sin(angle)
        if kind == "stripes":
            wave = torch.sin(freq * a + phase)
        else:
            b = -x * math.sin(angle) + y * math.cos(angle)
            wave = torch.sin(freq * a + phase) * torch.sin(freq * b + phase)
        pattern = 0.5 + 0.5 * torch.tanh(sharp * wave)  # [H, W]
    return c1 + (c2 - c1) * pattern[..., None]  # [H, W, 3]


def _appearance(g: torch.Generator, bg_mean: float) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]:
    kind = _randint(g, len(SHAPES))
    fill_a = torch.rand(3, generator=g)
    fill_b = (fill_a + _uniform(g, 0.35, 0.65)) % 1.0  # second tone: every channel differs by >= 0.35
    outline = torch.full((3,), 0.0 if bg_mean > 0.5 else 1.0)
    return kind, fill_a, fill_b, outline


def make_scene(label: int, seed: int, num_frames: int, size: int) -> Scene:
    """Sample the scene of class `label` from `seed` (pure function of its arguments)."""
    if not 0 <= label < len(MOTION_CLASSES):
        raise ValueError(f"label must be in [0, {len(MOTION_CLASSES)}), got {label}")
    if num_frames < 1 or size < 8:
        raise ValueError(f"need num_frames >= 1 and size >= 8, got num_frames={num_frames}, size={size}")
    pair, reverse = divmod(label, 2)
    g = make_generator("synthetic-scene", seed)
    background = _background(g, size)
    bg_mean = float(background.mean())
    looks = [_appearance(g, bg_mean), _appearance(g, bg_mean)]  # the second is used only by approach/separate

    # Exact time parameter: reversed classes use (T-1-t)/(T-1), bitwise the flip of t/(T-1).
    steps = torch.arange(num_frames, dtype=torch.float32)
    if reverse:
        steps = (num_frames - 1) - steps
    tau = steps / max(num_frames - 1, 1)  # [T]

    def lerp(a: float, b: float) -> torch.Tensor:
        return a + (b - a) * tau  # [T]

    def const(v: float) -> torch.Tensor:
        return torch.full((num_frames,), v)

    r = _uniform(g, 0.10, 0.15)
    lo, hi = r + _MARGIN, 1.0 - r - _MARGIN
    cx, cy, radius = const(_uniform(g, lo, hi)), const(_uniform(g, lo, hi)), const(r)
    theta, alpha = const(_uniform(g, 0.0, 2 * math.pi)), const(1.0)
    name = MOTION_CLASSES[2 * pair]
    if name in ("move_right", "move_down"):
        dist = _uniform(g, 0.35, min(0.6, hi - lo))
        start = _uniform(g, lo, hi - dist)
        if name == "move_right":
            cx = lerp(start, start + dist)
        else:
            cy = lerp(start, start + dist)
    elif name == "grow":
        r0, r1 = _uniform(g, 0.05, 0.08), _uniform(g, 0.17, 0.24)
        radius = lerp(r0, r1)
        cx, cy = const(_uniform(g, r1 + _MARGIN, 1 - r1 - _MARGIN)), const(_uniform(g, r1 + _MARGIN, 1 - r1 - _MARGIN))
    elif name == "rotate_cw":
        theta0 = float(theta[0])
        theta = lerp(theta0, theta0 + _uniform(g, 0.5 * math.pi, math.pi))
    elif name == "fade_in":
        alpha = lerp(_uniform(g, 0.0, 0.15), _uniform(g, 0.85, 1.0))
    if name != "approach":
        kind, fill_a, fill_b, outline = looks[0]
        return Scene(
            background=background,
            kinds=[kind],
            fill_a=fill_a[None],
            fill_b=fill_b[None],
            outline=outline[None],
            cx=cx[None],
            cy=cy[None],
            radius=radius[None],
            theta=theta[None],
            alpha=alpha[None],
        )
    # Two shapes on a line through a midpoint, from far apart to almost touching.
    r1, r2 = _uniform(g, 0.07, 0.10), _uniform(g, 0.07, 0.10)
    mx, my = _uniform(g, 0.45, 0.55), _uniform(g, 0.45, 0.55)
    phi = _uniform(g, 0.0, math.pi)
    far = _uniform(g, 0.5, 0.6)
    near = r1 + r2 + _uniform(g, 0.0, 0.04)
    half = lerp(far, near) / 2  # [T]
    ux, uy = math.cos(phi), math.sin(phi)
    theta2 = _uniform(g, 0.0, 2 * math.pi)
    return Scene(
        background=background,
        kinds=[looks[0][0], looks[1][0]],
        fill_a=torch.stack([looks[0][1], looks[1][1]]),
        fill_b=torch.stack([looks[0][2], looks[1][2]]),
        outline=torch.stack([looks[0][3], looks[1][3]]),
        cx=torch.stack([mx - half * ux, mx + half * ux]),
        cy=torch.stack([my - half * uy, my + half * uy]),
        radius=torch.stack([const(r1), const(r2)]),
        theta=torch.stack([theta, const(theta2)]),
        alpha=torch.stack([alpha, alpha]),
    )


def _signed_distance(kind: str, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Approximate signed distance (shape-radius units, negative inside) of local coords [T, H, W]."""
    if kind == "circle":
        return torch.sqrt(u * u + v * v) - 1.0
    if kind == "square":
        return torch.maximum(u.abs(), v.abs()) - 0.8
    if kind == "diamond":
        return (u.abs() + v.abs() - 1.0) * (1.0 / math.sqrt(2.0))
    if kind == "triangle":  # equilateral, circumradius 1, apex up (v < 0 is up on screen)
        s = math.sqrt(3.0) / 2
        return torch.maximum(torch.maximum(-v, s * u + 0.5 * v), -s * u + 0.5 * v) - 0.5
    if kind == "cross":
        au, av = u.abs(), v.abs()
        return torch.minimum(torch.maximum(au - 1.0, av - 0.3), torch.maximum(au - 0.3, av - 1.0))
    if kind == "star":
        rho = torch.sqrt(u * u + v * v)
        return rho - (0.72 + 0.28 * torch.cos(5.0 * torch.atan2(v, u)))
    raise ValueError(f"unknown shape {kind!r}; valid: {SHAPES}")


def draw_scene(scene: Scene) -> torch.Tensor:
    """Render a scene to uint8 [T, H, W, 3], all frames at once.

    The quantised background is copied to every frame; each shape is then composited only inside the box it
    covers over the clip, channel-first in float (0..255): out = below (1 - c_out)(1 - c_in) + outline c_out
    (1 - c_in) + fill c_in, with c_out / c_in the coverage of the outlined / inner shape (times alpha) and fill
    the two-tone colour; "below" is the frame as drawn so far (quantised)."""
    size = scene.background.shape[0]
    num_frames = scene.cx.shape[1]
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    background = (scene.background * 255.0).round_().clamp_(0, 255).to(torch.uint8)  # [H, W, 3]
    out = background.expand(num_frames, size, size, 3).clone()  # [T, H, W, 3]
    for s, kind_idx in enumerate(scene.kinds):
        reach = scene.radius[s] * 1.14 + 2.5 / size  # [T] farthest shape point (square corner) plus outline
        x0, x1 = _pixel_range(scene.cx[s] - reach, scene.cx[s] + reach, size)
        y0, y1 = _pixel_range(scene.cy[s] - reach, scene.cy[s] + reach, size)
        if x0 >= x1 or y0 >= y1:
            continue
        cx, cy = scene.cx[s, :, None, None], scene.cy[s, :, None, None]  # [T, 1, 1]
        rad, th = scene.radius[s, :, None, None], scene.theta[s, :, None, None]
        dx, dy = coords[None, None, x0:x1] - cx, coords[None, y0:y1, None] - cy  # [T, 1, w], [T, h, 1]
        cos, sin = torch.cos(th) / rad, torch.sin(th) / rad
        u = cos * dx + sin * dy  # [T, h, w] local coords, shape rotated by +theta (clockwise on screen)
        v = cos * dy - sin * dx
        px = rad * size  # [T, 1, 1] pixels per local unit
        dist_px = _signed_distance(SHAPES[kind_idx], u, v) * px  # [T, h, w] pixels
        a = scene.alpha[s, :, None, None]
        c_out = (1.5 - dist_px).clamp_(0.0, 1.0).mul_(a)  # [T, h, w] fill plus a 1 px outline
        c_in = (0.5 - dist_px).clamp_(0.0, 1.0).mul_(a)
        tone = (v * px).add_(0.5).clamp_(0.0, 1.0)  # [T, h, w] 0: upper half (fill_a), 1: lower half (fill_b)
        keep = 1.0 - c_in
        w_b = c_in * tone
        weights = torch.stack([c_out * keep, c_in - w_b, w_b])  # [3, T, h, w] outline, fill_a, fill_b
        colours = torch.stack([scene.outline[s], scene.fill_a[s], scene.fill_b[s]], dim=1) * 255.0  # [rgb, 3]
        region = out[:, y0:y1, x0:x1].permute(3, 0, 1, 2).float()  # [3, T, h, w]
        region.mul_(keep.sub_(c_out * keep))  # below weight (1 - c_out)(1 - c_in)
        region.add_((colours @ weights.view(3, -1)).view_as(region))
        out[:, y0:y1, x0:x1] = region.round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 3, 0)
    return out


def _pixel_range(lo: torch.Tensor, hi: torch.Tensor, size: int) -> tuple[int, int]:
    """Pixel index range [a, b) whose centres can lie in [min(lo), max(hi)] (image units)."""
    a = max(0, math.floor(float(lo.min()) * size))
    b = min(size, math.ceil(float(hi.max()) * size) + 1)
    return a, b


def render_clip(label: int, seed: int, num_frames: int, size: int) -> torch.Tensor:
    """Clip of class `label` (index into MOTION_CLASSES): uint8 [T, H, W, 3]; deterministic in (label, seed)."""
    return draw_scene(make_scene(label, seed, num_frames, size))


class SyntheticVideoDataset:
    """Map-style dataset of rendered clips; video i has label i % 12 and content seed derived from (seed, i).

    Keys are (index, draw). The content depends on (seed, index) only; the temporal window (when frames_per_clip
    is set) and the transform draw from a torch.Generator seeded from (seed, index, draw).
    Returns {"video": float [C, T, H, W], "label": int, "index": int}.
    """

    def __init__(
        self,
        *,
        num_videos: int,
        num_frames: int,
        size: int,
        seed: int = 0,
        transform: Transform | None = None,
        frames_per_clip: int | None = None,
        frame_step: int = 1,
    ) -> None:
        """num_frames frames are rendered per video; with frames_per_clip set, a window of frames_per_clip frames
        at frame_step is taken from a random start (like VideoDataset); transform=None gives the whole clip as
        ImageNet-normalised float."""
        if num_videos < 1:
            raise ValueError(f"num_videos must be >= 1, got {num_videos}")
        span = 1 if frames_per_clip is None else (frames_per_clip - 1) * frame_step + 1
        if frames_per_clip is not None and (frames_per_clip < 1 or frame_step < 1 or span > num_frames):
            raise ValueError(
                f"frames_per_clip={frames_per_clip} at frame_step={frame_step} needs {span} frames, "
                f"but num_frames={num_frames}"
            )
        self.num_videos = num_videos
        self.num_frames = num_frames
        self.size = size
        self.seed = seed
        self.transform = transform
        self.frames_per_clip = frames_per_clip
        self.frame_step = frame_step
        self.num_classes = len(MOTION_CLASSES)

    def __len__(self) -> int:
        return self.num_videos

    def label_of(self, index: int) -> int:
        return index % self.num_classes

    def content_seed(self, index: int) -> int:
        return derive_seed("synthetic-video", self.seed, index)

    def clip(self, index: int) -> torch.Tensor:
        """The full rendered video `index`: uint8 [T, H, W, 3]."""
        if not 0 <= index < self.num_videos:
            raise IndexError(f"index {index} out of range for {self.num_videos} videos")
        return render_clip(self.label_of(index), self.content_seed(index), self.num_frames, self.size)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, draw = key
        frames = self.clip(index)  # [T, H, W, 3]
        gen = make_generator("sample", self.seed, index, draw)
        if self.frames_per_clip is not None:
            span = (self.frames_per_clip - 1) * self.frame_step + 1
            start = int(torch.randint(self.num_frames - span + 1, (), generator=gen))
            frames = frames[start : start + span : self.frame_step]  # [T', H, W, 3]
        if self.transform is None:
            video = normalize_clip(frames, IMAGENET_MEAN, IMAGENET_STD)  # [C, T, H, W]
        else:
            video = self.transform(frames, gen)
        return {"video": video, "label": self.label_of(index), "index": index}


def write_mp4(path: str | os.PathLike, frames: torch.Tensor, *, fps: int = 8, faststart: bool = False) -> None:
    """Encode uint8 [T, H, W, 3] RGB frames as H.264 (libx264, yuv420p, crf 18, one thread, bitexact) in mp4.

    H and W must be even (yuv420p). faststart puts the index first.
    Determinism: the same frames give the same bytes with one PyAV build (its bundled FFmpeg and x264), whatever
    was encoded before in the process. x264's macroblock tree is off for that (DETERMINISTIC_X264_PARAMS): with
    it on, a 32 px clip encoded 30 times in one process, other sizes in between, gave 12 different files (one
    x264 thread). Not promised: the same bytes with another PyAV/x264 version, or across CPUs we have not tested
    (x264 picks SIMD code by CPU); there the decoded frames still match the rendered ones to lossy-codec accuracy."""
    import av  # imported here: only writing needs PyAV

    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames [T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ValueError(f"H.264 yuv420p needs even height and width, got {height}x{width}")
    options = {"fflags": "+bitexact"}
    if faststart:
        options["movflags"] = "+faststart"
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast", "threads": "1", "x264-params": DETERMINISTIC_X264_PARAMS}
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        for frame in frames.numpy():
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))


def write_synthetic(
    out_dir: str | os.PathLike,
    *,
    num_videos: int,
    num_frames: int,
    size: int,
    seed: int = 0,
    fps: int = 8,
) -> Path:
    """Write the videos of SyntheticVideoDataset(num_videos, num_frames, size, seed) as mp4 files (write_mp4), plus
    train.csv (`<absolute path> <label>` per line, no header) and classes.txt (one class name per line).

    Deterministic: the same arguments give the same train.csv (up to out_dir) and classes.txt, the same rendered
    frames, and the same mp4 bytes under write_mp4's conditions (one PyAV build). Returns the path of train.csv.
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = SyntheticVideoDataset(num_videos=num_videos, num_frames=num_frames, size=size, seed=seed)
    lines = []
    for i in range(num_videos):
        label = data.label_of(i)
        path = out / f"video_{i:05d}_{MOTION_CLASSES[label]}.mp4"
        write_mp4(path, data.clip(i), fps=fps)
        lines.append(f"{path} {label}\n")
    (out / "classes.txt").write_text("".join(f"{name}\n" for name in MOTION_CLASSES))
    csv_path = out / "train.csv"
    csv_path.write_text("".join(lines))
    return csv_path
