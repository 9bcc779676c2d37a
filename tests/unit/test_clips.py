"""clips.py: read planning over any videos.parquet layout (every row of the split read exactly once),
the ingest layout (small row groups), and the actor-pool decode stream over a one-file dataset."""

from __future__ import annotations

import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from clips_shared import _rows, _write
from pyarrow import fs as pafs

from arvid_ray import schemas as S
from arvid_ray.clips import _read_unit, plan_units


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
