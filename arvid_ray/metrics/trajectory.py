"""Ground-truth drift on the built-in synthetic data: bounce-physics trajectory error and identity retention.

A generated video of the synthetic dataset should show one primary object moving in a straight line and
bouncing off the walls, keeping its colour and shape. So the generated video itself says what its
future must be: track the primary object, fit the bounce physics (start position and per-frame velocity,
``video.synthetic.bounce_positions``) to the first segment (the training length), continue it over the
whole rollout, and score every later segment against that continuation. Identity retention is the
fraction of frames in a segment where the tracked object keeps frame 0's colour (within half the smallest
distance between two palette colours) and shape (fill of its bounding box: square ≈ 1, circle ≈ π/4).

Design trade-off: the fit uses only the generated video (no prompt and no dataset index needed, so it
works for unprompted class-conditioned rollouts), at the price that segment 1's error is a fit residual
rather than a prediction error: it measures jitter, while segments ≥ 2 measure how far the rollout departs
from the motion it established itself. Frames where the tracker finds nothing count as the frame diagonal
(the worst case), so a vanishing object cannot score well. Exact on the flat synthetic backgrounds; not
meant for natural video.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from arvid_ray.metrics.consistency import _foreground
from arvid_ray.video.synthetic import bounce_positions

__all__ = ["ObjectTrack", "track_object", "fit_bounce", "ground_truth_drift"]

COLOUR_TOLERANCE = 40.0
"""RGB distance under which a colour counts as frame 0's (the closest two palette colours are 81 apart)."""
FILL_TOLERANCE = 0.11
"""Bounding-box fill difference under which the shape counts as frame 0's (square 1.0 vs circle 0.785)."""
SPEED_RANGE = (0.015, 0.06)
"""Per-frame speeds the fit may choose, as fractions of the frame size: the data draws 0.02-0.045, so a
frozen or crawling object is not bounce physics (it would otherwise fit v = 0 perfectly)."""


@dataclass(frozen=True)
class ObjectTrack:
    """The tracked primary object per frame; NaN (or 0 area) where none is visible."""

    centre: np.ndarray  # (T, 2) x, y in pixels
    area: np.ndarray  # (T,) pixels
    colour: np.ndarray  # (T, 3) median RGB of the object's pixels
    fill: np.ndarray  # (T,) area / bounding-box area


def track_object(frames: np.ndarray) -> ObjectTrack:
    """Track the largest foreground component of frame 0 through ``frames`` (T, H, W, 3) uint8: in each
    later frame the component nearest to the previous centre."""
    import cv2

    frames = np.asarray(frames)
    t_len = len(frames)
    centre, area = np.full((t_len, 2), np.nan), np.zeros(t_len)
    colour, fill = np.full((t_len, 3), np.nan), np.full(t_len, np.nan)
    prev = None
    for t, frame in enumerate(frames):
        mask = _foreground(frame).astype(np.uint8)
        n, labels, stats, cents = cv2.connectedComponentsWithStats(mask, connectivity=8)
        keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= 3]  # drop background, noisy pixels
        if not keep:
            continue
        if prev is None:
            idx = max(keep, key=lambda i: stats[i, cv2.CC_STAT_AREA])
        else:
            idx = min(keep, key=lambda i: float(np.linalg.norm(cents[i] - prev)))
        w, h = stats[idx, cv2.CC_STAT_WIDTH], stats[idx, cv2.CC_STAT_HEIGHT]
        centre[t] = prev = cents[idx]
        area[t] = stats[idx, cv2.CC_STAT_AREA]
        colour[t] = np.median(frame[labels == idx].astype(np.float64), axis=0)
        fill[t] = area[t] / float(w * h)
    return ObjectTrack(centre, area, colour, fill)


def _radius(track: ObjectTrack) -> float:
    """Radius of the object from its frame-0 area: a square of side 2r + 1, or a disc of radius r + 0.5."""
    area = max(float(track.area[0]), 1.0)
    r = (np.sqrt(area) - 1.0) / 2.0 if track.fill[0] > 0.89 else np.sqrt(area / np.pi) - 0.5
    return max(0.5, float(r))


def fit_bounce(centres: np.ndarray, radius: float, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares (start, velocity) of the bounce physics to tracked centres (F, 2) (NaN = missing):
    a grid over velocities and small start offsets around the first centre, then a finer grid; speeds are
    kept inside ``SPEED_RANGE``."""
    seen = np.isfinite(centres).all(-1)
    p0 = centres[0]
    vmin, vmax = (f * resolution for f in SPEED_RANGE)
    step = vmax / 20
    axis = np.linspace(-vmax, vmax, 41)
    best_p, best_v = p0, np.zeros(2)
    for offsets, vels in (([0.0], axis), (np.linspace(-1.0, 1.0, 5), np.linspace(-step, step, 11))):
        vx, vy, ox, oy = np.meshgrid(vels, vels, offsets, offsets, indexing="ij")
        v = np.stack([vx.ravel(), vy.ravel()], -1) + (best_v if vels is not axis else 0.0)  # (C, 2)
        p = best_p + np.stack([ox.ravel(), oy.ravel()], -1)  # (C, 2)
        pred = bounce_positions(p, v, radius, resolution, len(centres))  # (C, F, 2)
        err = np.where(seen[None], np.sum((pred - np.nan_to_num(centres)[None]) ** 2, -1), 0.0).sum(-1)
        speed = np.linalg.norm(v, axis=-1)
        err = np.where((speed >= vmin) & (speed <= vmax), err, np.inf)
        i = int(np.argmin(err))
        best_p, best_v = p[i], v[i]
    return best_p, best_v


def _segment_scores(track: ObjectTrack, physics: np.ndarray, starts: list[int], seg_len: int,
                    worst: float) -> tuple[list[float], list[float]]:
    dist = np.linalg.norm(track.centre - physics, axis=1)
    dist = np.where(np.isnan(dist), worst, dist)
    same = ((np.linalg.norm(track.colour - track.colour[0], axis=1) < COLOUR_TOLERANCE)
            & (np.abs(track.fill - track.fill[0]) < FILL_TOLERANCE))  # NaN (no object) compares False
    errs = [float(dist[s:s + seg_len].mean()) for s in starts]
    ident = [float(same[s:s + seg_len].mean()) for s in starts]
    return errs, ident


def ground_truth_drift(videos: np.ndarray, starts: list[int], seg_len: int) -> dict[str, list[float]]:
    """Per segment (first frames ``starts``, ``seg_len`` frames each) of rollouts (N, T, H, W, 3): mean
    trajectory error in pixels against the bounce physics fitted to segment 1, and identity retention.

    Returns {"traj_error": [seg1, seg2, ...], "identity": [...]}, each averaged over the N videos.
    """
    if not starts or starts[0] != 0:
        raise ValueError(f"segment starts must begin at frame 0, got {starts}")
    videos = np.asarray(videos)
    res = videos.shape[2]
    worst = float(np.hypot(*videos.shape[2:4]))
    all_err, all_id = [], []
    for video in videos:
        track = track_object(video)
        if not np.isfinite(track.centre[0]).all():  # nothing to track in frame 0: worst everywhere
            all_err.append([worst] * len(starts))
            all_id.append([0.0] * len(starts))
            continue
        radius = _radius(track)
        p, v = fit_bounce(track.centre[:seg_len], radius, res)
        physics = bounce_positions(p, v, radius, res, len(video))  # (T, 2)
        errs, ident = _segment_scores(track, physics, starts, seg_len, worst)
        all_err.append(errs)
        all_id.append(ident)
    return {"traj_error": np.mean(all_err, 0).tolist(), "identity": np.mean(all_id, 0).tolist()}
