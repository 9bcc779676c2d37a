"""In-memory clip sets for tokenizer training: rendered synthetic videos or a decoded videos.parquet.

Design trade-off: a tokenizer for 64x64 clips trains on a few hundred videos that fit in memory
(512 x 33 x 64 x 64 x 3 bytes = 207 MB at most, usually far less), so this module loads them once into
one uint8 array and the training loop samples random clips and temporal crops from it — no Ray, no
data loader processes, which keeps ``arvid-ray train-tokenizer`` a single process on CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from arvid_ray.config import StorageConfig, SynthConfig

__all__ = ["synthetic_clips", "parquet_clips", "sample_batch"]

log = logging.getLogger(__name__)


def synthetic_clips(synth: SynthConfig, splits: tuple[str, ...], limit: int | None = None) -> np.ndarray:
    """Render the built-in synthetic videos of ``splits`` → uint8 [N, T, H, W, 3] (deterministic)."""
    from arvid_ray.video.synthetic import render_video

    clips = []
    for index in range(synth.num_videos):
        video = render_video(index, synth)
        if video.split in splits:
            clips.append(video.frames)
            if limit is not None and len(clips) >= limit:
                break
    if not clips:
        raise ValueError(f"no synthetic videos in split(s) {splits} among synth.num_videos={synth.num_videos}; "
                         "raise synth.num_videos or the split fractions")
    return np.stack(clips)


def parquet_clips(path: str | Path, splits: tuple[str, ...], num_frames: int, resolution: int,
                  limit: int | None = None, storage: StorageConfig | None = None) -> np.ndarray:
    """The first ``num_frames`` frames of each video of ``splits`` in a videos.parquet (or an ingest output
    directory; local or on object storage, read through ``arvid_ray.video.reader``) → uint8 array."""
    from arvid_ray.video.reader import iter_clips

    clips = []
    for clip in iter_clips(str(path), splits, num_frames, resolution, storage=storage):
        clips.append(clip.frames)
        if limit is not None and len(clips) >= limit:
            break
    if not clips:
        raise ValueError(f"no videos of split(s) {splits} with >= {num_frames} frames in '{path}'; "
                         "check data.train_split / data.num_frames")
    log.info("decoded %d clips from %s", len(clips), path)
    return np.stack(clips)


def sample_batch(clips: np.ndarray, batch_size: int, num_frames: int, rng: np.random.Generator,
                 flip: bool = True, crop: int = 0) -> np.ndarray:
    """Random clips, temporal crops of ``num_frames``, square spatial crops of ``crop`` pixels (0 = whole
    frame; the network is fully convolutional, so crops cut the cost per sample) and horizontal flips."""
    n, total, height, width = clips.shape[:4]
    if num_frames > total:
        raise ValueError(f"training clips of {num_frames} frames need videos of >= {num_frames} frames, got {total}")
    ch, cw = (crop, crop) if crop else (height, width)
    if ch > height or cw > width:
        raise ValueError(f"crop {crop} is larger than the {height}x{width} frames")
    idx = rng.integers(0, n, batch_size)
    starts = rng.integers(0, total - num_frames + 1, batch_size)
    ys, xs = rng.integers(0, height - ch + 1, batch_size), rng.integers(0, width - cw + 1, batch_size)
    batch = np.stack([clips[i, s:s + num_frames, y:y + ch, x:x + cw]
                      for i, s, y, x in zip(idx, starts, ys, xs)])  # (B, T, ch, cw, 3)
    if flip:
        mask = rng.random(batch_size) < 0.5
        batch[mask] = batch[mask, :, :, ::-1]
    return batch
