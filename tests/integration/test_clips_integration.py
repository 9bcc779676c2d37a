"""clips.py: read planning over any videos.parquet layout (every row of the split read exactly once),
the ingest layout (small row groups), and the actor-pool decode stream over a one-file dataset."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from clips_shared import _write

from arvid_ray import schemas as S
from arvid_ray.clips import clip_stream
from arvid_ray.config import ExperimentConfig


def test_ingest_writes_small_row_groups(ray_session, tmp_path_factory):
    from video_fixtures import shared_synth_cfg

    from arvid_ray.data import videos_path

    cfg = shared_synth_cfg(tmp_path_factory)
    files = sorted(Path(videos_path(cfg)).glob("*.parquet"))
    meta = [pq.ParquetFile(f).metadata for f in files]
    assert sum(m.num_rows for m in meta) == cfg.synth.num_videos
    assert len(files) == 1  # a few MiB of videos → one file (files are ~64 MiB), not one per video
    groups = [m.row_group(i).num_rows for m in meta for i in range(m.num_row_groups)]
    assert max(groups) <= S.VIDEOS_ROW_GROUP_ROWS and sum(g == S.VIDEOS_ROW_GROUP_ROWS for g in groups) >= len(groups) - 1


def test_clip_stream_over_one_file_decodes_in_parallel(ray_session, tmp_path):
    """One Parquet file (what used to arrive as a single block) → several decode calls, all rows."""
    from arvid_ray.video.io import encode_mp4
    from arvid_ray.video.synthetic import render_video

    cfg = ExperimentConfig.from_flat({"data.num_frames": 5, "data.resolution": 16, "data.decode_batch_size": 8,
                                      "synth.resolution": 16, "synth.num_frames": 9})
    video = encode_mp4(render_video(0, cfg.synth).frames)
    root = tmp_path / "videos.parquet"
    root.mkdir()
    _write(root / "part-0.parquet", 40, 0, 4, ["train", "val"], video)
    ds = clip_stream(str(root), cfg, "train", train=True)
    rows = ds.take_all()
    assert sorted(r[S.LABEL] for r in rows) == list(range(0, 40, 2))
    assert all(r[S.FRAMES].shape == (5, 16, 16, 3) and 0 <= r[S.CLIP_START] <= 4 for r in rows)
    assert "split" not in rows[0]
    # 2 train rows per row group, 8 per unit → 3 units (8, 8, 4), each its own decode call
    assert "MapBatches(_ReadDecoder): 3 tasks executed" in ds.stats()
    empty = clip_stream(str(root), cfg, "test", train=False).take_all()
    assert empty == []
