"""videos.parquet → a Ray Dataset of decoded clips, one decode-actor call per planned read unit.

Design trade-off: Ray Data's ``read_parquet`` makes one read task per file (or per group of files)
and emits a file's rows as one block; small encoded videos then need a ``repartition`` before decode
tasks can run in parallel, and that streaming repartition task keeps a CPU slot for as long as the
backpressured stream runs (measured: on 2 CPUs only one decode task fit for most of a 2400-video
stream, 0.59x per core). Instead the driver plans the read from Parquet metadata alone (footers and
the tiny ``split`` column): *units* of consecutive row groups (or row slices of oversized row groups)
holding about ``decode_rows_per_task`` rows of the wanted split. Each unit is one call of a decode
actor that reads exactly its rows (only the columns decode needs) and decodes them, so decode
parallelism is whatever the CPU budget allows, with nothing else holding a slot, for any layout:
one big file, thousands of small ones, local or s3://. ``arvid-ray ingest`` writes small row groups
(``schemas.VIDEOS_ROW_GROUP_ROWS``) in ~64 MiB files so units never re-read data; foreign layouts
with huge row groups still work (each slice re-reads its row group's column chunks; a warning says
so). A unit travels to the actor as JSON: a list of ``_Piece`` tuples.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from arvid_ray import schemas as S
from arvid_ray.config import ExperimentConfig

__all__ = ["clip_stream", "plan_units", "decode_rows_per_task"]

log = logging.getLogger(__name__)

_AUTO_DECODE_BYTES = 96 * 2**20
_AUTO_DECODE_MAX_ROWS = 256
_READ_COLUMNS = [S.VIDEO, S.NUM_FRAMES, S.LABEL, S.CAPTION, S.VIDEO_ID, S.SEGMENT_START, S.SPLIT]
_OVERSIZED = 2  # a row group with more than this many units' worth of rows is sliced


def decode_rows_per_task(cfg: ExperimentConfig) -> int:
    """Videos per decode call: ``data.decode_batch_size``, or (0 = auto) ~96 MiB of decoded uint8
    frames, capped at 256 videos — large enough that the ~25 ms fixed cost of a Ray Data call is a few
    percent (bench_decode, 64x64x33 clips: 32 / 64 / 128 / 256 videos per call gave 0.70 / 0.77 /
    0.79–0.80 / 0.83 of single-process PyAV per core), small enough that blocks stay under Ray Data's
    128 MiB target block size."""
    d = cfg.data
    if d.decode_batch_size > 0:
        return d.decode_batch_size
    clip_bytes = d.num_frames * d.resolution * d.resolution * 3
    return max(1, min(_AUTO_DECODE_MAX_ROWS, _AUTO_DECODE_BYTES // clip_bytes))


class _Piece(NamedTuple):
    """Rows ``lo:hi`` of one row group of one file (a JSON list in transit)."""

    path: str
    row_group: int
    lo: int  # row offset inside the row group
    hi: int


def _file_layout(filesystem, path: str, split: str | None) -> list[tuple[int, int]]:
    """[(rows in row group, rows of ``split`` in it)] for one Parquet file (split None = all rows)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    with filesystem.open_input_file(path) as fh:
        pf = pq.ParquetFile(fh)
        sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
        if split is None or not sizes:
            return [(n, n) for n in sizes]
        col = pf.read(columns=[S.SPLIT]).column(S.SPLIT)
    match = np.asarray(pc.equal(col, split).to_numpy(zero_copy_only=False), bool)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [(n, int(match[bounds[i]:bounds[i + 1]].sum())) for i, n in enumerate(sizes)]


def plan_units(filesystem, paths: Sequence[str], split: str | None, rows: int) -> list[list[_Piece]]:
    """Pack the row groups of ``paths`` (in order) into units of about ``rows`` rows of ``split``.

    Row groups without a matching row are skipped; a row group holding more than ``_OVERSIZED``
    units' worth of rows is cut into row slices of about ``rows`` matching rows each.
    """
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(paths)))) as pool:
        layouts = list(pool.map(lambda p: _file_layout(filesystem, p, split), paths))
    units: list[list[_Piece]] = []
    current: list[_Piece] = []
    filled = 0
    oversized = 0
    for path, layout in zip(paths, layouts):
        for rg, (n, matching) in enumerate(layout):
            if matching == 0:
                continue
            if matching > _OVERSIZED * rows:
                oversized += 1
                slices = -(-matching // rows)  # slices of ~rows matching rows (assumes an even spread)
                edges = np.linspace(0, n, slices + 1).round().astype(int)
                units.extend([_Piece(path, rg, int(a), int(b))] for a, b in zip(edges[:-1], edges[1:]) if b > a)
                continue
            current.append(_Piece(path, rg, 0, n))
            filled += matching
            if filled >= rows:
                units.append(current)
                current, filled = [], 0
    if current:
        units.append(current)
    if oversized:
        log.warning("%d Parquet row groups hold more than %d rows each; every decode task re-reads its row "
                    "group to take its slice. Re-ingest with `arvid-ray ingest` (row groups of %d rows) "
                    "to read each byte once.", oversized, _OVERSIZED * rows, S.VIDEOS_ROW_GROUP_ROWS)
    return units


def _read_unit(filesystem, pieces: Sequence[Sequence], split: str | None, footers: dict | None = None):
    """A unit's rows (``_READ_COLUMNS``) as one Arrow table, filtered to ``split``.

    ``footers`` caches each file's parsed Parquet footer across calls (an ingest file's footer lists
    thousands of row groups; parsing it again per unit cost ~6 % of decode time)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tables = []
    by_file: dict[str, list[_Piece]] = {}
    for piece in map(_Piece._make, pieces):
        by_file.setdefault(piece.path, []).append(piece)
    for path, file_pieces in by_file.items():
        with filesystem.open_input_file(path) as fh:
            pf = pq.ParquetFile(fh, metadata=None if footers is None else footers.get(path))
            if footers is not None:
                footers[path] = pf.metadata
            whole = [p.row_group for p in file_pieces
                     if p.lo == 0 and p.hi == pf.metadata.row_group(p.row_group).num_rows]
            if len(whole) == len(file_pieces):  # the common case: whole row groups, one read
                tables.append(pf.read_row_groups(whole, columns=_READ_COLUMNS))
                continue
            for p in file_pieces:
                tables.append(pf.read_row_group(p.row_group, columns=_READ_COLUMNS).slice(p.lo, p.hi - p.lo))
    if not tables:
        return S.VIDEOS_SCHEMA.empty_table().select(_READ_COLUMNS)
    table = pa.concat_tables(tables)
    if split is not None:
        table = table.filter(pc.equal(table.column(S.SPLIT), split))
    return table


class _ReadDecoder:
    """Ray Data actor: one planned unit per call → its decoded clips (``decode_batch`` rows).

    An actor pool, not stateless tasks: Ray Data's task pool leaves a core idle between a task's
    end and the next task's start (measured ~0.2 s per task on a 2-core VM: 1.3 of 2 cores busy);
    actors keep the next unit queued, so the cores stay busy (0.96 of 2 in the same test).
    """

    def __init__(self, filesystem, split: str | None, keep_split: bool, decode_kwargs: dict) -> None:
        self.filesystem, self.split, self.keep_split = filesystem, split, keep_split
        self.decode_kwargs = decode_kwargs
        self.footers: dict = {}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from arvid_ray.video.decode import decode_batch

        table = _read_unit(self.filesystem, json.loads(batch["unit"][0]), self.split, self.footers)
        rows = {name: table.column(name).to_numpy(zero_copy_only=False) for name in _READ_COLUMNS}
        clips = decode_batch(rows, **self.decode_kwargs)
        if not self.keep_split:
            del clips[S.SPLIT]
        return clips


def _decode_pool_sizes(cfg: ExperimentConfig, units: int) -> tuple[int, int]:
    """(initial, max) decode actors: start with as many as the CPUs free now can host (starting only what
    fits keeps a busy cluster from queueing idle actor requests), then let Ray Data's autoscaling grow
    the pool with the cluster — bounded only by the number of units (and ``data.decode_max_actors`` when
    set), never by the cluster's size now, so an autoscaling cluster that adds CPU nodes gets more
    decoders."""
    import ray

    free = ray.available_resources().get("CPU", 0.0)
    cap = min(units, cfg.data.decode_max_actors) if cfg.data.decode_max_actors else units
    initial = max(1, min(cap, int(free // cfg.data.decode_cpus)))
    return initial, max(initial, cap)


def clip_stream(videos: str, cfg: ExperimentConfig, split: str | None, train: bool, keep_split: bool = False,
                hop: int = 0):
    """videos.parquet → Ray Dataset of decoded clips (rows of ``arvid_ray.video.decode.decode_batch``).

    ``split`` None = all splits. Decode actors of ``data.decode_cpus`` CPUs each take one planned unit
    of ~``decode_rows_per_task`` videos per call; train streams visit units in random order.
    """
    import pyarrow.dataset as pads
    import ray

    from arvid_ray import storage as st
    from arvid_ray.storage import resolve_videos_path

    d = cfg.data
    filesystem, inner = st.resolve(resolve_videos_path(videos, cfg.storage), cfg.storage)
    paths = sorted(pads.dataset(inner, filesystem=filesystem, format="parquet").files)
    units = plan_units(filesystem, paths, split, decode_rows_per_task(cfg))
    if not units:  # an empty split streams no clips (one task returns an empty, well-typed block)
        log.warning("no videos of split %r in %s", split, videos)
        units = [[]]
    items = [{"unit": json.dumps(unit)} for unit in units]  # NamedTuples serialise as lists
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    if train:
        ds = ds.randomize_block_order()
    initial, most = _decode_pool_sizes(cfg, len(units))
    ds = ds.map_batches(_ReadDecoder, batch_size=1, batch_format="numpy", num_cpus=d.decode_cpus,
                        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=most, initial_size=initial),
                        fn_constructor_kwargs={
                            "filesystem": filesystem, "split": split, "keep_split": keep_split,
                            "decode_kwargs": {"num_frames": d.num_frames, "stride": d.frame_stride,
                                              "resolution": d.resolution, "train": train, "hop": hop,
                                              "threads": max(1, int(d.decode_cpus))}})
    return ds
