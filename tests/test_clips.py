"""clips.py: read planning over any videos.parquet layout (every row of the split read exactly once),
the ingest layout (small row groups), and the actor-pool decode stream over a one-file dataset."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import fs as pafs

from arvid_ray import schemas as S
from arvid_ray.clips import _read_unit, clip_stream, plan_units
from arvid_ray.config import ExperimentConfig


def _rows(n: int, start: int, splits: list[str], video: bytes = b"") -> pa.Table:
    return pa.Table.from_pylist([
        {S.VIDEO_ID: f"v{start + i}", S.SOURCE_URI: f"mem://{start + i}", S.VIDEO: video, S.NUM_FRAMES: 9,
         S.FPS: 8.0, S.WIDTH: 16, S.HEIGHT: 16, S.LABEL: start + i, S.CAPTION: "", S.SPLIT: splits[(start + i) % len(splits)],
         S.SEGMENT_START: 0} for i in range(n)], schema=S.VIDEOS_SCHEMA)


def _write(path, n: int, start: int, row_group: int, splits: list[str], video: bytes = b"") -> str:
    pq.write_table(_rows(n, start, splits, video), path, row_group_size=row_group)
    return str(path)


def _read_all(paths: list[str], split: str | None, rows: int) -> tuple[list[int], list[int]]:
    """(labels read, in unit order; rows per unit) of a plan over ``paths``."""
    local = pafs.LocalFileSystem()
    units = plan_units(local, paths, split, rows)
    labels, sizes = [], []
    footers: dict = {}
    for unit in units:
        # through JSON, as the plan travels to the decode actors
        pieces = json.loads(json.dumps(unit))
        got = _read_unit(local, pieces, split, footers).column(S.LABEL).to_pylist()
        labels += got
        sizes.append(len(got))
    return labels, sizes


@pytest.mark.parametrize("split", [None, "train", "val"])
def test_plan_covers_every_row_of_the_split_once(tmp_path, caplog, split):
    splits = ["train"] * 9 + ["val"]  # every 10th row is val: row groups mix splits
    paths = [_write(tmp_path / "one.parquet", 300, 0, S.VIDEOS_ROW_GROUP_ROWS, splits),          # the ingest layout
             *[_write(tmp_path / f"small-{k}.parquet", 5, 300 + 5 * k, 5, splits) for k in range(12)],  # many files
             _write(tmp_path / "big.parquet", 500, 360, 500, splits)]                     # one huge row group
    expected = [i for i in range(860) if split is None or splits[i % 10] == split]
    with caplog.at_level(logging.WARNING, logger="arvid_ray.clips"):
        labels, sizes = _read_all(paths, split, rows=64)
    assert sorted(labels) == expected  # each row exactly once, none of another split
    assert max(sizes) <= 2 * 64 + S.VIDEOS_ROW_GROUP_ROWS  # units stay near the requested size
    if split != "val":  # the huge row group is sliced (and the user is told why that re-reads it)
        assert "re-ingest" in caplog.text.lower()
    assert len(sizes) >= len(expected) // (64 + 5)


def test_plan_skips_row_groups_without_the_split(tmp_path):
    # rows sorted by split: the val row groups are never part of a train unit
    table = pa.concat_tables([_rows(40, 0, ["train"]), _rows(16, 40, ["val"])])
    path = tmp_path / "sorted.parquet"
    pq.write_table(table, path, row_group_size=8)
    units = plan_units(pafs.LocalFileSystem(), [str(path)], "val", rows=64)
    assert [(p.row_group, p.lo, p.hi) for u in units for p in u] == [(5, 0, 8), (6, 0, 8)]
    assert plan_units(pafs.LocalFileSystem(), [str(path)], "test", rows=64) == []


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
