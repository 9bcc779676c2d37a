"""Temporal consistency: optical-flow warping error paired with motion magnitude, and trajectory error.

Design trade-off: the warping error is a classical, extractor-free signal (OpenCV DIS flow on CPU),
so it needs no trained network and cannot be gamed by matching feature statistics — but a frozen
video warps perfectly. It is therefore always reported together with the mean flow magnitude, and
pixels that fail a forward-backward flow check (occlusions, objects leaving the frame) are masked
out instead of being blamed on the generator. The trajectory error uses a deliberately simple
tracker (foreground against the dominant background colour, nearest connected component) that is
exact on the synthetic dataset's flat backgrounds; it is not meant for natural video.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "FlowConsistency",
    "flow_consistency",
    "batch_flow_consistency",
    "track_centroids",
    "trajectory_error",
]


@dataclass(frozen=True)
class FlowConsistency:
    """Per-video temporal consistency numbers."""

    warp_error: float
    """Mean absolute intensity difference (0..1) between frame t and frame t+1 warped back, non-occluded."""
    motion: float
    """Mean optical-flow magnitude in pixels per frame (0 for a frozen video)."""
    accel: float
    """Mean change of the flow along pixel paths (pixels/frame²): 0 for constant motion, high for jitter."""
    valid_frac: float
    """Fraction of pixels that passed the forward-backward occlusion check."""
    per_pair: np.ndarray
    """Warping error of each adjacent frame pair, shape (T-1,)."""


def _gray(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def _warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Sample ``image`` at x + flow(x); image (H, W[, C]), flow (H, W, 2) in (dx, dy)."""
    import cv2

    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x, map_y = grid_x + flow[..., 0], grid_y + flow[..., 1]
    return cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _dis():
    import cv2

    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flow.setUseSpatialPropagation(True)
    return flow


def _pair(dis, a: np.ndarray, b: np.ndarray, ga: np.ndarray, gb: np.ndarray):
    """Warp error, motion, valid fraction, forward flow (H, W, 2) and valid mask (H, W) of one pair."""
    fwd = dis.calc(ga, gb, None)  # (H, W, 2): a(x) ≈ b(x + fwd(x))
    bwd = dis.calc(gb, ga, None)
    bwd_at_fwd = _warp(bwd, fwd)  # backward flow sampled where each pixel of a lands in b
    # forward-backward check (Sundaram et al. 2010): the round trip must return close to the start
    round_trip = np.sum((fwd + bwd_at_fwd) ** 2, axis=-1)
    bound = 0.01 * (np.sum(fwd**2, -1) + np.sum(bwd_at_fwd**2, -1)) + 0.5
    h, w = fwd.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w), np.arange(h))
    inside = ((grid_x + fwd[..., 0] >= 0) & (grid_x + fwd[..., 0] <= w - 1)
              & (grid_y + fwd[..., 1] >= 0) & (grid_y + fwd[..., 1] <= h - 1))
    valid = (round_trip <= bound) & inside
    warped = _warp(b, fwd).astype(np.float32)  # (H, W, 3) frame t+1 brought back to frame t
    err_map = np.abs(warped - a.astype(np.float32)).mean(-1) / 255.0  # (H, W)
    err = float(err_map[valid].mean()) if valid.any() else float(err_map.mean())
    motion = float(np.sqrt(np.sum(fwd**2, -1)).mean())
    return err, motion, float(valid.mean()), fwd, valid


def _flow_accel(flows: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
    """Change of the flow along each pixel's path, |f_{t+1}(x + f_t(x)) - f_t(x)|, per pair t (T-2,)."""
    out = []
    for t in range(len(flows) - 1):
        nxt = _warp(flows[t + 1], flows[t])  # (H, W, 2): next flow where each pixel of frame t lands
        acc = np.sqrt(np.sum((nxt - flows[t]) ** 2, -1))  # (H, W)
        out.append(float(acc[masks[t]].mean()) if masks[t].any() else float(acc.mean()))
    return np.asarray(out)


def flow_consistency(frames: np.ndarray) -> FlowConsistency:
    """Warping error and motion of one video ``(T, H, W, 3)`` uint8 (T >= 2)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 2:
        raise ValueError(f"flow_consistency needs a uint8 video (T>=2, H, W, 3); got shape {frames.shape}")
    frames = frames.astype(np.uint8, copy=False)
    dis = _dis()
    grays = [_gray(f) for f in frames]
    results = [_pair(dis, frames[t], frames[t + 1], grays[t], grays[t + 1]) for t in range(len(frames) - 1)]
    errs, motions, valid = (np.array(col) for col in list(zip(*results))[:3])
    accel = _flow_accel([r[3] for r in results], [r[4] for r in results])
    return FlowConsistency(float(errs.mean()), float(motions.mean()), float(accel.mean()) if len(accel) else 0.0,
                           float(valid.mean()), errs)


def batch_flow_consistency(videos: np.ndarray) -> dict[str, float]:
    """Mean warping error, motion, flow acceleration and valid fraction over videos ``(N, T, H, W, 3)``."""
    scores = [flow_consistency(v) for v in videos]
    return {
        "warp_error": float(np.mean([s.warp_error for s in scores])),
        "motion": float(np.mean([s.motion for s in scores])),
        "flow_accel": float(np.mean([s.accel for s in scores])),
        "valid_frac": float(np.mean([s.valid_frac for s in scores])),
    }


def _foreground(frame: np.ndarray, threshold: float = 40.0) -> np.ndarray:
    """Pixels far from the dominant border colour (the synthetic background is flat)."""
    border = np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]]).astype(np.float32)  # (4H, 3)
    background = np.median(border, axis=0)
    return np.abs(frame.astype(np.float32) - background).sum(-1) > threshold


def track_centroids(frames: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Centroid (x, y) in pixels of the tracked object per frame, shape (T, 2); NaN where none is visible.

    The object is the connected foreground component nearest to the previous position (to ``start``,
    or the largest component, in the first frame).
    """
    import cv2

    prev = None if start is None else np.asarray(start, np.float64)
    out = np.full((len(frames), 2), np.nan)
    for t, frame in enumerate(np.asarray(frames)):
        mask = _foreground(frame).astype(np.uint8)
        n, _, stats, cents = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if n <= 1:
            continue
        areas, cents = stats[1:, cv2.CC_STAT_AREA], cents[1:]  # drop label 0 (background)
        keep = areas >= 3  # ignore isolated noisy pixels
        if not keep.any():
            continue
        areas, cents = areas[keep], cents[keep]
        idx = int(np.argmax(areas)) if prev is None else int(np.argmin(np.linalg.norm(cents - prev, axis=1)))
        out[t] = prev = cents[idx]
    return out


def trajectory_error(frames: np.ndarray, positions: np.ndarray) -> float:
    """Mean distance (pixels) between tracked centroids and ground-truth positions ``(T, 2)`` (x, y).

    Frames where the tracker finds nothing count as the distance to the frame centre's far corner
    (the worst case), so a video in which the object vanishes cannot score well.
    """
    positions = np.asarray(positions, np.float64)
    if len(positions) != len(frames):
        raise ValueError(f"positions has {len(positions)} entries for {len(frames)} frames")
    tracked = track_centroids(frames, start=positions[0])
    dist = np.linalg.norm(tracked - positions, axis=1)
    worst = float(np.hypot(*np.asarray(frames).shape[1:3]))
    return float(np.where(np.isnan(dist), worst, dist).mean())
