"""What test_clips.py and test_clips_integration.py share (moved here from both when the tests were split)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from arvid_ray import schemas as S


def _rows(n: int, start: int, splits: list[str], video: bytes = b"") -> pa.Table:
    return pa.Table.from_pylist([
        {S.VIDEO_ID: f"v{start + i}", S.SOURCE_URI: f"mem://{start + i}", S.VIDEO: video, S.NUM_FRAMES: 9,
         S.FPS: 8.0, S.WIDTH: 16, S.HEIGHT: 16, S.LABEL: start + i, S.CAPTION: "", S.SPLIT: splits[(start + i) % len(splits)],
         S.SEGMENT_START: 0} for i in range(n)], schema=S.VIDEOS_SCHEMA)


def _write(path, n: int, start: int, row_group: int, splits: list[str], video: bytes = b"") -> str:
    pq.write_table(_rows(n, start, splits, video), path, row_group_size=row_group)
    return str(path)
