"""Procedural, class- and caption-labelled videos with ground-truth per-frame state.

Each video shows one primary object (a square or a circle) moving in a straight line in one of 8
compass directions and bouncing off the walls, optionally with a smaller distractor object. The class
is (shape, initial direction): 16 classes. A single frame shows shape, colour and position but not
where the object is heading, so the direction part of the label is only readable from motion.

Bounce rule: when the object would leave the frame, its position is reflected at the wall and the
velocity component normal to that wall flips sign; the per-frame velocity in ``state`` records the
flipped value, while the label and caption keep the *initial* direction.

Design trade-off: every video is a pure function of (config, index) — its own
``numpy.random.default_rng([seed, index])`` stream — so any shard can be regenerated anywhere without
coordination, at the cost of not drawing an exactly balanced split. Classes are balanced by
construction (label = a per-seed permutation of index mod 16); objects are drawn with one-pixel
anti-aliased edges so sub-pixel motion is visible and smooth rather than jumping pixel by pixel.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from arvid_ray.config import SynthConfig

__all__ = ["CLASSES", "SHAPES", "DIRECTIONS", "COLORS", "SynthVideo", "render_video", "write_dataset",
           "class_name", "split_of", "bounce_positions"]

log = logging.getLogger(__name__)

SHAPES = ("square", "circle")
# image coordinates: x to the right, y downwards; "up" is -y
DIRECTIONS = ("right", "up-right", "up", "up-left", "left", "down-left", "down", "down-right")
_DIR_VECTORS = {
    name: (float(np.cos(np.pi / 4 * i)), -float(np.sin(np.pi / 4 * i))) for i, name in enumerate(DIRECTIONS)
}
CLASSES: list[str] = [f"{shape} {direction}" for shape in SHAPES for direction in DIRECTIONS]
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240), "yellow": (240, 220, 40),
    "cyan": (40, 220, 230), "magenta": (220, 50, 220), "white": (245, 245, 245), "orange": (245, 140, 30),
}
_COLOR_NAMES = tuple(COLORS)
MANIFEST_NAME = "manifest.jsonl"
CLASSES_NAME = "classes.txt"


@dataclass
class SynthVideo:
    """One rendered video: frames uint8 [T, H, W, 3] plus label, caption, split and ground truth."""

    frames: np.ndarray
    label: int
    caption: str
    split: str
    state: dict[str, np.ndarray] = field(default_factory=dict)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def class_name(label: int) -> str:
    """'square up-left' etc. for a class id."""
    return CLASSES[label]


def split_of(index: int, cfg: SynthConfig) -> str:
    """Split of video ``index``: a deterministic hash-uniform draw against the val/test fractions."""
    u = np.random.default_rng([cfg.seed, index, 0x5B1]).random()
    if u < cfg.test_fraction:
        return "test"
    if u < cfg.test_fraction + cfg.val_fraction:
        return "val"
    return "train"


def _label_of(index: int, cfg: SynthConfig) -> int:
    # balanced classes: each block of 16 consecutive indices holds every class once, in a seeded order
    block, pos = divmod(index, len(CLASSES))
    perm = np.random.default_rng([cfg.seed, block, 0x1AB]).permutation(len(CLASSES))
    return int(perm[pos])


def _trajectory(rng: np.random.Generator, res: int, radius: float, direction: str, num_frames: int,
                speed_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Positions and velocities, each float32 [T, 2] as (x, y), with reflections at the walls."""
    lo, hi = radius, res - 1 - radius
    pos = rng.uniform(lo, hi, size=2)
    speed = rng.uniform(*speed_range) * res
    vel = speed * np.asarray(_DIR_VECTORS[direction])
    positions = np.zeros((num_frames, 2), np.float32)
    velocities = np.zeros((num_frames, 2), np.float32)
    for t in range(num_frames):
        positions[t], velocities[t] = pos, vel
        pos = pos + vel
        for axis in range(2):
            if pos[axis] < lo:
                pos[axis], vel[axis] = 2 * lo - pos[axis], -vel[axis]
            elif pos[axis] > hi:
                pos[axis], vel[axis] = 2 * hi - pos[axis], -vel[axis]
        pos = np.clip(pos, lo, hi)
    return positions, velocities


def bounce_positions(start: np.ndarray, velocity: np.ndarray, radius: float | np.ndarray, resolution: int,
                     num_frames: int) -> np.ndarray:
    """The bounce physics in closed form: positions (..., T, 2) of objects starting at ``start`` (..., 2)
    with per-frame ``velocity`` (..., 2), reflected at the walls [radius, resolution - 1 - radius].

    Reflection at two walls is a fold of the free straight line with period 2L (L = the free span), so this
    equals the frame-by-frame rule ``render_video`` uses (while one frame's step stays under 2L) and
    vectorises over any leading batch of candidate starts and velocities (the trajectory fit uses that).
    """
    start, velocity = np.asarray(start, np.float64), np.asarray(velocity, np.float64)
    radius = np.asarray(radius, np.float64)[..., None, None]
    lo = radius
    span = np.maximum(resolution - 1 - 2 * radius, 1e-6)  # L
    t = np.arange(num_frames, dtype=np.float64)[:, None]  # (T, 1)
    free = start[..., None, :] - lo + velocity[..., None, :] * t  # (..., T, 2): unreflected offset from lo
    folded = np.mod(free, 2 * span)
    return lo + np.where(folded <= span, folded, 2 * span - folded)


def _coverage(shape: str, xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, radius: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of a shape centred at (cx, cy); float32 [H, W]."""
    dx, dy = xs - cx, ys - cy
    dist = np.sqrt(dx * dx + dy * dy) if shape == "circle" else np.maximum(np.abs(dx), np.abs(dy))
    return np.clip(radius + 0.5 - dist, 0.0, 1.0).astype(np.float32)


def _paint(canvas: np.ndarray, shape: str, positions: np.ndarray, radius: float, color: np.ndarray) -> None:
    """Composite the object into canvas float32 [T, H, W, 3] in place."""
    res = canvas.shape[1]
    ys, xs = np.mgrid[0:res, 0:res].astype(np.float32)  # (H, W)
    for t, (cx, cy) in enumerate(positions):
        alpha = _coverage(shape, xs, ys, float(cx), float(cy), radius)[..., None]  # (H, W, 1)
        canvas[t] = canvas[t] * (1.0 - alpha) + color * alpha


def render_video(index: int, cfg: SynthConfig) -> SynthVideo:
    """Render video ``index`` of the dataset described by ``cfg`` (pure and deterministic, in memory).

    ``state`` holds float32 arrays: ``position``/``velocity`` [T, 2] (x, y in pixels, y down) and
    ``radius`` [1] of the primary object; with a distractor also ``distractor_position``,
    ``distractor_velocity`` [T, 2] and ``distractor_radius`` [1].
    """
    if index < 0:
        raise ValueError(f"video index must be >= 0, got {index}")
    rng = np.random.default_rng([cfg.seed, index])
    res, n = cfg.resolution, cfg.num_frames
    label = _label_of(index, cfg)
    shape, direction = CLASSES[label].split(" ")
    color_name = _COLOR_NAMES[int(rng.integers(len(_COLOR_NAMES)))]
    radius = float(rng.uniform(0.09, 0.15) * res)
    positions, velocities = _trajectory(rng, res, radius, direction, n, (0.02, 0.045))
    background = rng.uniform(0, 45, size=3).astype(np.float32)
    canvas = np.broadcast_to(background, (n, res, res, 3)).copy()  # (T, H, W, 3)
    state = {"position": positions, "velocity": velocities, "radius": np.asarray([radius], np.float32)}
    caption = f"{_article(color_name)} {color_name} {shape} moving {direction}"
    if rng.random() < cfg.second_object_prob:
        d_shape = SHAPES[int(rng.integers(len(SHAPES)))]
        d_dir = DIRECTIONS[int(rng.integers(len(DIRECTIONS)))]
        d_color = _COLOR_NAMES[int(rng.integers(len(_COLOR_NAMES)))]
        d_radius = float(rng.uniform(0.04, 0.06) * res)
        d_pos, d_vel = _trajectory(rng, res, d_radius, d_dir, n, (0.01, 0.03))
        _paint(canvas, d_shape, d_pos, d_radius, np.asarray(COLORS[d_color], np.float32))
        state.update(distractor_position=d_pos, distractor_velocity=d_vel,
                     distractor_radius=np.asarray([d_radius], np.float32))
        caption += f", with a small {d_color} {d_shape} moving {d_dir}"
    _paint(canvas, shape, positions, radius, np.asarray(COLORS[color_name], np.float32))  # primary on top
    frames = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return SynthVideo(frames=frames, label=label, caption=caption, split=split_of(index, cfg), state=state)


def _manifest_row(index: int, video: SynthVideo, rel_path: str, cfg: SynthConfig) -> dict:
    return {
        "path": rel_path, "index": index, "label": video.label, "class_name": CLASSES[video.label],
        "caption": video.caption, "split": video.split, "num_frames": int(video.frames.shape[0]),
        "fps": cfg.fps, "width": cfg.resolution, "height": cfg.resolution,
        "state": {k: np.round(v.astype(np.float64), 4).tolist() for k, v in video.state.items()},
    }


def write_dataset(cfg: SynthConfig, out_dir: str | Path, progress: bool = False) -> Path:
    """Render ``cfg.num_videos`` videos to ``out_dir/videos/*.mp4`` and write ``manifest.jsonl``.

    The manifest has one JSON object per video (``path`` relative to ``out_dir``, ``label``,
    ``class_name``, ``caption``, ``split``, ``num_frames``, ``fps``, ``width``, ``height``, ``state``)
    and is written last and atomically, so its presence means the dataset is complete. ``classes.txt``
    (one class name per line, line number = class id) is written beside it. Returns the manifest path.
    """
    from arvid_ray.video.io import write_mp4

    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / CLASSES_NAME).write_text("\n".join(CLASSES) + "\n")
    indices = range(cfg.num_videos)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="synth", unit="video")
    tmp = out / (MANIFEST_NAME + ".tmp")
    with tmp.open("w") as fh:
        for index in indices:
            video = render_video(index, cfg)
            rel = f"videos/{index:06d}.mp4"
            write_mp4(video.frames, out / rel, fps=cfg.fps)
            fh.write(json.dumps(_manifest_row(index, video, rel, cfg)) + "\n")
    manifest = out / MANIFEST_NAME
    tmp.replace(manifest)
    log.info("wrote %d synthetic videos to %s", cfg.num_videos, out)
    return manifest
