"""The one plain clip reader (arvid_ray.video.reader): every caller reads videos.parquet through storage.

Issue 25: three readers of clips from videos.parquet, one of which (tokenizer training's parquet_clips)
opened the path with pyarrow directly — no ingest output directory, no storage.s3_endpoint."""

from __future__ import annotations

import numpy as np
import pytest
from video_reader_shared import SYNTH, _ingest_output

from arvid_ray.tokenizer.clips import parquet_clips
from arvid_ray.video.reader import iter_clips
from arvid_ray.video.synthetic import render_video


def test_iter_clips_orders_splits_skips_short_videos_and_is_seeded(tmp_path):
    out = _ingest_output(tmp_path / "out")
    clips = list(iter_clips(str(out), ("val", "train"), 17, 32))
    assert [c.label for c in clips] == [0, 1, 2, 4]  # val first, then train; the 9-frame video is skipped
    assert clips[0].frames.shape == (17, 32, 32, 3) and clips[0].caption == "clip 0"
    full = render_video(2, SYNTH).frames[:17]
    same = list(iter_clips(str(out / "videos.parquet"), ("train",), 17, 64))[0].frames  # the dataset itself
    assert np.abs(same.astype(int) - full).mean() < 3

    def draw(seed):
        return list(iter_clips(str(out), ("train",), 6, 32, stride=2, rng=np.random.default_rng(seed),
                               random_start=True))

    a, b = draw(1), draw(1)
    assert [c.label for c in a] == [c.label for c in b] and all(np.array_equal(x.frames, y.frames)
                                                                for x, y in zip(a, b))
    orders = {tuple(c.label for c in draw(seed)) for seed in range(8)}
    assert len(orders) > 1 and all(sorted(o) == [2, 4] for o in orders)  # shuffled; span 11 > 9 frames: skipped
    with pytest.raises(ValueError, match="random_start needs an rng"):
        next(iter_clips(str(out), ("train",), 5, 32, random_start=True))


def test_tokenizer_clips_read_an_ingest_output_dir_and_file_uris(tmp_path):
    """The former bypass: ``pq.read_table(path)`` could not open an ingest output directory (it holds
    rejects.jsonl beside the dataset); through storage a directory, the dataset and file:// all work."""
    out = _ingest_output(tmp_path / "out")
    expected = parquet_clips(out / "videos.parquet", ("train",), 17, 32)
    assert expected.shape == (2, 17, 32, 32, 3)
    for where in (out, f"file://{out}", f"file://{out}/videos.parquet"):
        np.testing.assert_array_equal(parquet_clips(where, ("train",), 17, 32), expected)
    assert parquet_clips(out, ("train",), 17, 32, limit=1).shape[0] == 1
    with pytest.raises(ValueError, match="no videos of split"):
        parquet_clips(out, ("test",), 17, 32)
