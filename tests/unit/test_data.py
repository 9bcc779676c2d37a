"""data.py: the synthetic cache, clip streams (random train starts, fixed eval starts), local batches."""

from __future__ import annotations

import numpy as np
import pytest

from arvid_ray import schemas as S
from arvid_ray.config import SynthConfig
from arvid_ray.video.decode import decode_batch
from arvid_ray.video.io import encode_mp4
from arvid_ray.video.synthetic import render_video


def _batch(videos: list[np.ndarray], segment_start: int = 0) -> dict[str, np.ndarray]:
    return {S.VIDEO: np.asarray([encode_mp4(v) for v in videos], object),
            S.NUM_FRAMES: np.asarray([len(v) for v in videos]), S.LABEL: np.arange(len(videos)),
            S.CAPTION: np.asarray(["c"] * len(videos), object), S.VIDEO_ID: np.asarray(["a", "b"][:len(videos)], object),
            S.SEGMENT_START: np.full(len(videos), segment_start), S.SPLIT: np.asarray(["train"] * len(videos), object)}


def test_decode_batch_windows_and_short_videos():
    cfg = SynthConfig(num_frames=13, resolution=32)
    long, short = render_video(0, cfg).frames, render_video(1, cfg).frames[:4]
    out = decode_batch(_batch([long, short], segment_start=100), num_frames=3, stride=2, resolution=16,
                       train=False, hop=4)
    assert out[S.FRAMES].shape == (3, 3, 16, 16, 3)  # starts 0, 4, 8 (span 5 ≤ 13); the 4-frame video has none
    assert out[S.CLIP_START].tolist() == [100, 104, 108] and out[S.VIDEO_ID].tolist() == ["a"] * 3
    first = decode_batch(_batch([long]), num_frames=3, stride=2, resolution=16, train=False)
    # the same window by the two decode paths (one clip / the whole video sliced): equal up to the scaler's
    # rounding — observed 11 runs in 40, up to 6 levels on ~12 % of values, cause not yet found (see the
    # session note); any other window is another clip and differs by far more
    same = np.abs(first[S.FRAMES][0].astype(int) - out[S.FRAMES][0].astype(int))
    other = np.abs(first[S.FRAMES][0].astype(int) - out[S.FRAMES][1].astype(int))
    assert same.max() <= 8 and other.max() > 64, (same.max(), other.max())
    starts = set()
    for _ in range(8):
        train = decode_batch(_batch([long]), num_frames=3, stride=2, resolution=16, train=True)
        starts.add(int(train[S.CLIP_START][0]))
    assert len(starts) > 1 and all(0 <= s <= 13 - 5 for s in starts)
    empty = decode_batch(_batch([short]), num_frames=9, stride=1, resolution=16, train=True)
    assert empty[S.FRAMES].shape == (0, 9, 16, 16, 3)


def test_videos_path_needs_existing_source(tmp_path):
    from arvid_ray.config import ExperimentConfig
    from arvid_ray.data import videos_path

    with pytest.raises(FileNotFoundError, match="does not exist"):
        videos_path(ExperimentConfig.from_flat({"data.source": str(tmp_path / "nope")}))
    (tmp_path / "ing" / "videos.parquet").mkdir(parents=True)
    cfg = ExperimentConfig.from_flat({"data.source": str(tmp_path / "ing")})
    assert videos_path(cfg) == str(tmp_path / "ing" / "videos.parquet")
