"""Real reference clips and their cached features: what every generated video is compared with.

Design trade-off: real reference clips come straight from ``render_video`` for the built-in synthetic
dataset (which also gives ground-truth trajectories) and from videos.parquet otherwise (the one plain clip
reader, ``video/reader.py``: no Ray, N is small and the stage must also run inside a Train worker). Their
features cost a second real pass per evaluation, so they are cached per (extractor sha, dataset, split,
N, frames, resolution) on the node that computed them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from arvid_ray.config import ExperimentConfig
from arvid_ray.metrics.consistency import batch_flow_consistency

__all__ = ["RealClips", "real_clips", "real_features"]


@dataclass
class RealClips:
    """Real reference clips: frames uint8 (N, T, H, W, 3), labels (N,), captions, optional positions."""

    frames: np.ndarray
    labels: np.ndarray
    captions: list[str]
    positions: np.ndarray | None  # (N, T, 2) ground-truth object centres in pixels (synthetic only)
    dataset_key: str


def _resize(frames: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if frames.shape[1] == size and frames.shape[2] == size:
        return frames
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])


def _synthetic_clips(cfg: ExperimentConfig, n: int, num_frames: int) -> RealClips:
    from arvid_ray.video.synthetic import render_video, split_of

    synth = cfg.synth
    if synth.num_frames < num_frames:
        raise ValueError(f"synth.num_frames={synth.num_frames} is shorter than the {num_frames} frames evaluated")
    order = [cfg.data.val_split, cfg.data.train_split, "test"]  # prompts and reference from val first
    indices = sorted(range(synth.num_videos), key=lambda i: order.index(s) if (s := split_of(i, synth)) in order else 3)
    frames, labels, captions, positions = [], [], [], []
    scale = cfg.data.resolution / synth.resolution
    for i in indices[:n]:
        video = render_video(i, synth)
        frames.append(_resize(video.frames[:num_frames], cfg.data.resolution))
        labels.append(video.label)
        captions.append(video.caption)
        positions.append(video.state["position"][:num_frames] * scale + (scale - 1) / 2)
    key = hashlib.sha256(json.dumps(asdict(synth), sort_keys=True, default=str).encode()).hexdigest()[:12]
    return RealClips(np.stack(frames), np.asarray(labels), captions, np.stack(positions), f"synthetic-{key}")


def _parquet_clips(cfg: ExperimentConfig, n: int, num_frames: int) -> RealClips:
    from arvid_ray.video.reader import iter_clips

    frames, labels, captions = [], [], []
    clips = iter_clips(cfg.data.source, (cfg.data.val_split, cfg.data.train_split), num_frames, cfg.data.resolution,
                       storage=cfg.storage)
    for clip in clips:
        frames.append(clip.frames)
        labels.append(clip.label)
        captions.append(clip.caption)
        if len(frames) >= n:
            break
    if len(frames) < 2:
        raise ValueError(f"{cfg.data.source} has fewer than 2 videos of >= {num_frames} frames in splits "
                         f"'{cfg.data.val_split}'/'{cfg.data.train_split}'; evaluation needs real reference clips")
    return RealClips(np.stack(frames), np.asarray(labels), captions, None, f"parquet-{cfg.data.source}")


def real_clips(cfg: ExperimentConfig, n: int, num_frames: int | None = None) -> RealClips:
    """Up to ``n`` real clips of the training length (val split first, then train) at data.resolution."""
    num_frames = num_frames or cfg.data.num_frames
    if cfg.data.source == "synthetic" or _is_builtin_synthetic(cfg):
        return _synthetic_clips(cfg, n, num_frames)
    return _parquet_clips(cfg, n, num_frames)


def _is_builtin_synthetic(cfg: ExperimentConfig) -> bool:
    """True when data.source is the built-in dataset's ingested cache (sweeps pass that path, not
    'synthetic'): its clips are rendered directly, which also gives the ground-truth trajectories."""
    from arvid_ray.data import synthetic_cache_dir

    source, cache = str(cfg.data.source).rstrip("/"), str(synthetic_cache_dir(cfg)).rstrip("/")
    return source == cache or source.startswith(cache + "/")


def _node_cache_dir(cfg: ExperimentConfig) -> Path:
    """Where this node keeps recomputable caches: experiment.workdir on one machine; with a remote storage
    root (a cluster) the node's temp dir — the workdir path is the driver's, not this node's."""
    import tempfile

    from arvid_ray import storage as st

    if st.is_remote(st.storage_root(cfg)):
        return Path(tempfile.gettempdir()) / "arvid-ray-cache"
    return cfg.experiment.workdir_path()


def real_features(cfg: ExperimentConfig, extractor, clips: RealClips) -> dict[str, Any]:
    """Real features (and real-data consistency numbers), cached under <workdir>/eval_cache."""
    n, t, h = clips.frames.shape[:3]
    splits = f"{cfg.data.val_split}+{cfg.data.train_split}"  # the order real_clips draws from
    key = f"{extractor.id}-{extractor.sha256[:16]}-{clips.dataset_key}-{splits}-n{n}-f{t}-r{h}"
    path = _node_cache_dir(cfg) / "eval_cache" / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".npz")
    if path.is_file():
        with np.load(path) as z:
            return {"features": z["features"], **{k: float(z[k]) for k in ("warp_error", "motion", "flow_accel")}}
    out = {"features": extractor(clips.frames), **batch_flow_consistency(clips.frames)}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, key=key, features=out["features"],
             **{k: out[k] for k in ("warp_error", "motion", "flow_accel")})
    return out
