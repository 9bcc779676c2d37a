"""Sources (directory tree, CSV/JSONL manifest, s3:// prefix) → videos.parquet + rejects.jsonl.

Design trade-off: probing (a full decode per file) runs as a Ray Data ``map_batches`` stage, one input
per batch, and the accepted rows stream straight into ``write_parquet`` so video bytes never pass
through the driver. Rejected inputs are not rows of that dataset (they would break the exact
VIDEOS_SCHEMA); each task reports every input's outcome to a small tally actor instead, which also
drives the progress bar and lets the driver check that every input ended in exactly one place.
Long or oversized sources are re-encoded (H.264) into evenly sized segments; short ones keep their
original bytes untouched. Output files are ~64 MiB with row groups of
``schemas.VIDEOS_ROW_GROUP_ROWS`` rows, the unit the clip stream (``arvid_ray.clips``) plans reads in.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa

from arvid_ray import schemas as S
from arvid_ray import storage as st
from arvid_ray.config import ExperimentConfig, IngestConfig, StorageConfig
from arvid_ray.storage import resolve_videos_path
from arvid_ray.video.probe import REASONS, Rejected, VideoInfo, probe

__all__ = ["ingest", "IngestSummary", "list_inputs", "video_id_of", "resolve_videos_path",
           "VIDEOS_DIR", "REJECTS_NAME", "CLASSES_NAME"]

log = logging.getLogger(__name__)

VIDEOS_DIR = st.VIDEOS_DIR
REJECTS_NAME = "rejects.jsonl"
CLASSES_NAME = "classes.txt"
SUMMARY_NAME = "summary.json"
_MANIFEST_SUFFIXES = (".csv", ".jsonl")
# what can hold the guaranteed 'val' video of a small folder: a README.txt or notes.pdf cannot
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv",
                  ".3gp", ".ts", ".gif")


def video_id_of(source_uri: str) -> str:
    """Stable id of a source: the first 16 hex digits of sha1(source URI)."""
    return hashlib.sha1(source_uri.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------- inputs
@dataclass
class _Input:
    uri: str
    label: int = S.NO_LABEL
    caption: str = ""
    split: str = ""
    auto_split: bool = False  # the source named no split: assigned by _assign_splits
    split_key: str = ""  # what the split hash reads: the path relative to the source (the URI when empty)


def _split_hash(item: _Input) -> float:
    """Uniform in [0, 1), from the path relative to the folder or manifest, so a dataset copied elsewhere
    (another disk, a bucket) keeps every video in the split it had."""
    key = item.split_key or item.uri
    return int(hashlib.sha1(("split:" + key).encode()).hexdigest()[:8], 16) / 2**32


def _assign_splits(inputs: list[_Input], cfg: IngestConfig) -> None:
    """Inputs that name no split: 'val' when their relative path's hash falls under ingest.val_fraction (stable per
    video, whatever else is in the folder), else ingest.default_split. When the fraction is > 0 but picks
    none of two or more such inputs, the one with the smallest hash goes to 'val': a small folder still
    gets a validation split (its segments all stay in it, so no video is in both)."""
    unsplit = [i for i in inputs if not i.split]
    for item in unsplit:
        item.auto_split = True
        item.split = "val" if _split_hash(item) < cfg.val_fraction else cfg.default_split
    videos = [i for i in unsplit if PurePosixPath(i.uri.lower()).suffix in VIDEO_SUFFIXES] or unsplit
    if cfg.val_fraction > 0 and len(videos) >= 2 and not any(i.split == "val" for i in videos):
        min(videos, key=_split_hash).split = "val"


def _list_tree(src: str, storage: StorageConfig) -> tuple[list[_Input], list[str]]:
    """Every non-hidden file under ``src``; label = index of its parent folder name (UCF-101 layout)."""
    from pyarrow import fs

    filesystem, root = st.resolve(src, storage)
    infos = filesystem.get_file_info(fs.FileSelector(root, recursive=True))
    files = sorted(i.path for i in infos if i.type == fs.FileType.File
                   and not any(p.startswith(".") for p in PurePosixPath(i.path).relative_to(root).parts))
    prefix = f"{st.scheme(src)}://" if st.is_remote(src) else ""
    rel_parents = [PurePosixPath(f).relative_to(root).parent for f in files]
    classes = sorted({p.name for p in rel_parents if p.name})
    index = {name: i for i, name in enumerate(classes)}
    inputs = [_Input(prefix + f, index[p.name] if p.name else S.NO_LABEL,
                     split_key=str(PurePosixPath(f).relative_to(root))) for f, p in zip(files, rel_parents)]
    return inputs, classes


def _read_manifest_rows(src: str, storage: StorageConfig) -> list[dict[str, Any]]:
    text = st.read_text(src, storage)
    if src.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return list(csv.DictReader(text.splitlines()))


def _list_manifest(src: str, storage: StorageConfig) -> tuple[list[_Input], list[str]]:
    """Rows with ``path`` (relative to the manifest, absolute, or s3://) and optional label/caption/split."""
    rows = _read_manifest_rows(src, storage)
    base = st.parent(src)
    raw_labels = [r.get("label") for r in rows]
    named = any(isinstance(v, str) and v.strip() and not v.strip().lstrip("-").isdigit() for v in raw_labels)
    classes = sorted({str(v).strip() for v in raw_labels if v not in (None, "")}) if named else []
    inputs = []
    for n, row in enumerate(rows):
        if not row.get("path"):
            raise ValueError(f"manifest {src} row {n + 1} has no 'path'; columns must be path,label,caption,split")
        path = str(row["path"])
        uri = path if st.is_remote(path) or os.path.isabs(path) else st.join(base, path)
        value = row.get("label")
        label = S.NO_LABEL if value in (None, "") else classes.index(str(value).strip()) if named else int(value)
        inputs.append(_Input(uri, label, str(row.get("caption") or ""), str(row.get("split") or ""), split_key=path))
    return inputs, classes


def list_inputs(src: str, cfg: ExperimentConfig) -> tuple[list[_Input], list[str]]:
    """Inputs of a directory tree, a .csv/.jsonl manifest or an s3:// prefix, with their class names."""
    if src.endswith(_MANIFEST_SUFFIXES):
        inputs, classes = _list_manifest(src, cfg.storage)
    else:
        if not st.is_remote(src) and not Path(src).expanduser().is_dir():
            raise FileNotFoundError(f"ingest source {src!r} is neither a directory, a .csv/.jsonl manifest "
                                    f"nor an s3:// or gs:// prefix")
        inputs, classes = _list_tree(src, cfg.storage)
    _assign_splits(inputs, cfg.ingest)
    return inputs, classes


# ----------------------------------------------------------------------------------------- per file
def _read_bytes(uri: str, storage: StorageConfig, filesystems: dict | None = None) -> bytes:
    """``filesystems``: ``scheme://bucket`` → a filesystem made on the driver (it carries the endpoint and the
    bucket's region; credentials come from each node's own provider chain)."""
    filesystem = (filesystems or {}).get(st.bucket_of(uri)) if st.is_remote(uri) else None  # local: no bucket
    return st.read_bytes(uri, storage, filesystem=filesystem)


def _segments(info: VideoInfo, size: int, cfg: IngestConfig) -> list[tuple[int, int]]:
    """[(start, length)] covering the video; one segment unless too many frames or bytes."""
    max_len = cfg.max_segment_frames
    if size > cfg.max_segment_bytes:  # shorten so each re-encoded segment stays under the byte cap
        max_len = min(max_len, max(cfg.min_frames, int(info.num_frames * cfg.max_segment_bytes / size * 0.8)))
    if info.num_frames <= max_len and size <= cfg.max_segment_bytes:
        return [(0, info.num_frames)]
    n = -(-info.num_frames // max_len)
    bounds = np.linspace(0, info.num_frames, n + 1).round().astype(int)  # even split: no tiny tail
    return [(int(a), int(b - a)) for a, b in zip(bounds[:-1], bounds[1:])]


def _encode_segments(data: bytes, info: VideoInfo, segs: list[tuple[int, int]]) -> list[bytes]:
    from arvid_ray.video.decode import frame_to_rgb, iter_frames
    from arvid_ray.video.io import Mp4Encoder

    out, ends = [], {start + length - 1 for start, length in segs}
    encoder = Mp4Encoder(fps=info.fps or 25.0)
    for i, frame in enumerate(iter_frames(data)):
        encoder.add(frame_to_rgb(frame))  # rotation applied: segments are stored upright
        if i in ends:
            out.append(encoder.finish())
            encoder = Mp4Encoder(fps=info.fps or 25.0)
    return out


def _row(item: _Input, data: bytes, info: VideoInfo, start: int, length: int) -> dict[str, Any]:
    return {S.VIDEO_ID: video_id_of(item.uri), S.SOURCE_URI: item.uri, S.VIDEO: data, S.NUM_FRAMES: length,
            S.FPS: float(info.fps), S.WIDTH: info.width, S.HEIGHT: info.height, S.LABEL: item.label,
            S.CAPTION: item.caption, S.SPLIT: item.split, S.SEGMENT_START: start}


def process_input(item: _Input, cfg: ExperimentConfig, filesystems: dict | None = None) -> tuple[list[dict[str, Any]], Rejected | None]:
    """Probe one input and cut it into rows; any failure becomes a Rejected (never raises)."""
    try:
        data = _read_bytes(item.uri, cfg.storage, filesystems)
    except Exception as exc:  # noqa: BLE001 - a bad input must not stop the ingest
        return [], Rejected("unreadable", f"{exc.__class__.__name__}: {exc}")
    try:
        info = probe(data, min_frames=cfg.ingest.min_frames)
        if isinstance(info, Rejected):
            return [], info
        segs = _segments(info, len(data), cfg.ingest)
        if len(segs) == 1:
            return [_row(item, data, info, 0, info.num_frames)], None
        blobs = _encode_segments(data, info, segs)
        return [_row(item, b, info, s, n) for b, (s, n) in zip(blobs, segs)], None
    except Exception as exc:  # noqa: BLE001
        return [], Rejected("undecodable", f"unexpected {exc.__class__.__name__}: {exc}")


def _ingest_batch(batch: dict[str, np.ndarray], cfg_dict: dict, tally, filesystems: dict | None = None) -> pa.Table:
    """Ray Data map_batches fn: input rows → accepted video rows (VIDEOS_SCHEMA); outcomes → tally."""
    cfg = ExperimentConfig.from_dict(cfg_dict)
    rows, outcomes = [], []
    for i in range(len(batch["uri"])):
        item = _Input(str(batch["uri"][i]), int(batch["label"][i]), str(batch["caption"][i]), str(batch["split"][i]))
        item_rows, rejected = process_input(item, cfg, filesystems)
        rows.extend(item_rows)
        outcomes.append((item.uri, None if rejected is None else (rejected.code, str(rejected)), len(item_rows)))
    # wait for the record: a fire-and-forget call could land after the driver reads the tally
    import ray

    ray.get(tally.record.remote(outcomes))
    return pa.Table.from_pylist(rows, schema=S.VIDEOS_SCHEMA)


# ----------------------------------------------------------------------------------------- driver
class _Tally:
    """Ray actor body: the outcome of every input (deduplicated by URI, so task retries count once)."""

    def __init__(self) -> None:
        self.outcomes: dict[str, tuple[tuple[str, str] | None, int]] = {}

    def record(self, outcomes: list[tuple[str, tuple[str, str] | None, int]]) -> None:
        for uri, rejected, rows in outcomes:
            self.outcomes[uri] = (rejected, rows)

    def count(self) -> int:
        return len(self.outcomes)

    def result(self) -> dict[str, tuple[tuple[str, str] | None, int]]:
        return self.outcomes


@dataclass
class IngestSummary:
    """What an ingest did: accepted inputs, rows written (segments), rejected inputs by reason."""

    out: str
    inputs: int
    accepted: int
    rows: int
    rejected: dict[str, int] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    splits: dict[str, int] = field(default_factory=dict)  # accepted videos per split
    val_assigned: int = 0  # of them in 'val' by ingest.val_fraction (the source named no split)
    val_fraction: float = 0.0

    def format(self) -> str:
        lines = [f"ingested {self.inputs} inputs in {self.seconds:.1f}s → {self.out}",
                 f"  accepted: {self.accepted} videos ({self.rows} rows after segmenting)",
                 f"  rejected: {sum(self.rejected.values())}"]
        lines += [f"    {code:<16} {n:>6}  ({REASONS[code]})" for code, n in sorted(self.rejected.items())]
        if self.classes:
            lines.append(f"  classes: {len(self.classes)} (written to {CLASSES_NAME})")
        if self.splits:
            how = (f" ({self.val_assigned} val by hash, ingest.val_fraction={self.val_fraction:g}, where the source "
                   f"names no split)" if self.val_assigned else "")
            lines.append("  splits: " + ", ".join(f"{n} {name}" for name, n in sorted(self.splits.items())) + how)
            if not self.splits.get("val"):
                fix = ("name a 'val' split in a manifest, or add videos (ingest.val_fraction="
                       f"{self.val_fraction:g} picked none of the accepted ones)" if self.val_fraction > 0
                       else "set ingest.val_fraction > 0 or name splits in a manifest")
                lines.append(f"  no 'val' split: training will report no eval/val_ce ({fix})")
        return "\n".join(lines)


def _write_text(filesystem, path: str, text: str) -> None:
    with filesystem.open_output_stream(path) as fh:
        fh.write(text.encode("utf-8"))


def _placement(uris: list[str]) -> dict[str, Any]:
    """Placement of tasks that open ``uris``: local paths exist only on the driver's machine, so those
    tasks (and the Parquet writes fused into them) are pinned to the driver's node by its node-id label
    (on a multi-node cluster the default SPREAD would send them to nodes where every file is
    'unreadable'); remote URIs may be read from any node."""
    if all(st.is_remote(u) for u in uris):
        return {}
    import ray

    return {"label_selector": {"ray.io/node-id": ray.get_runtime_context().get_node_id()}}


def _run_stage(inputs: list[_Input], videos_path: str, filesystem, cfg: ExperimentConfig, progress: bool,
               out_uri: str = "") -> dict:
    """Run probe+segment+write on Ray Data; returns {uri: (rejected or None, rows)} from the tally."""
    import ray

    tally = ray.remote(num_cpus=0)(_Tally).remote()
    buckets = {st.bucket_of(i.uri) for i in inputs if st.is_remote(i.uri)}
    filesystems = {bucket: st.resolve(bucket, cfg.storage)[0] for bucket in sorted(buckets)}
    ds = ray.data.from_items([asdict(i) for i in inputs], override_num_blocks=max(1, min(len(inputs), 256)))
    ds = ds.map_batches(_ingest_batch, batch_size=1, batch_format="numpy", num_cpus=cfg.data.decode_cpus,
                        fn_kwargs={"cfg_dict": cfg.to_dict(), "tally": tally,
                                   "filesystems": filesystems}, **_placement([i.uri for i in inputs] + [out_uri]))
    errors: list[BaseException] = []

    def write() -> None:
        try:
            ds.write_parquet(videos_path, filesystem=filesystem, min_bytes_per_file=S.VIDEOS_FILE_BYTES,
                             row_group_size=S.VIDEOS_ROW_GROUP_ROWS)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the driver thread below
            errors.append(exc)

    thread = threading.Thread(target=write, name="ingest-write", daemon=True)
    thread.start()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(inputs), desc="ingest", unit="video")
    while thread.is_alive():
        thread.join(0.5)
        if bar is not None:
            bar.update(ray.get(tally.count.remote()) - bar.n)
    outcomes = ray.get(tally.result.remote())
    if bar is not None:
        bar.update(len(outcomes) - bar.n)
        bar.close()
    ray.kill(tally)
    if errors:
        raise errors[0]
    return outcomes


def ingest(src: str | Path, out: str | Path, cfg: ExperimentConfig | None = None,
           progress: bool = False) -> IngestSummary:
    """Ingest ``src`` (dir tree, .csv/.jsonl manifest, s3://bucket/prefix) into ``out``.

    Writes ``out/videos.parquet/`` (Parquet shards, VIDEOS_SCHEMA), ``out/rejects.jsonl`` (source_uri,
    reason), ``out/classes.txt`` (when labels come from folder or class names) and ``out/summary.json``.
    ``out`` may be local or s3://. Any previous output in ``out/videos.parquet`` is replaced.
    """
    import pyarrow.parquet as pq
    from pyarrow import fs

    cfg = cfg or ExperimentConfig()
    start = time.time()
    src, out = str(src), str(out)
    inputs, classes = list_inputs(src, cfg)
    if not inputs:
        raise ValueError(f"ingest source {src!r} contains no files; point it at a folder of videos, "
                         f"a manifest (.csv/.jsonl with a 'path' column) or an s3:// prefix")
    filesystem, out_path = st.resolve(out, cfg.storage)
    videos_path = f"{out_path}/{VIDEOS_DIR}"
    # the new dataset is written beside the old one and replaces it only once complete: a failed or
    # interrupted re-ingest leaves the previous dataset as it was
    staging = f"{out_path}/.{VIDEOS_DIR}.incoming"
    if filesystem.get_file_info(staging).type != fs.FileType.NotFound:
        filesystem.delete_dir(staging)
    filesystem.create_dir(staging, recursive=True)
    try:
        outcomes = _run_stage(inputs, staging, filesystem, cfg, progress, out_uri=out)
        missing = [i.uri for i in inputs if i.uri not in outcomes]
        if missing:
            raise RuntimeError(f"ingest lost track of {len(missing)} inputs (first: {missing[0]}); rerun the ingest")
    except BaseException:
        filesystem.delete_dir(staging)
        raise
    rejects = [{S.SOURCE_URI: i.uri, "reason": outcomes[i.uri][0][1]} for i in inputs if outcomes[i.uri][0]]
    rows = sum(n for _, n in outcomes.values())
    previous = filesystem.get_file_info(videos_path).type != fs.FileType.NotFound
    keep_previous = rows == 0 and previous  # nothing accepted: an earlier dataset stays (the CLI exits 1)
    if keep_previous:
        filesystem.delete_dir(staging)
    else:
        if rows == 0:  # keep the dataset readable (with its schema) even when every input was rejected
            pq.write_table(S.VIDEOS_SCHEMA.empty_table(), f"{staging}/empty.parquet", filesystem=filesystem)
        _replace_dir(filesystem, staging, videos_path)
        _write_text(filesystem, f"{out_path}/{REJECTS_NAME}", "".join(json.dumps(r) + "\n" for r in rejects))
        classes_file = f"{out_path}/{CLASSES_NAME}"
        if classes:
            _write_text(filesystem, classes_file, "\n".join(classes) + "\n")
        elif filesystem.get_file_info(classes_file).type == fs.FileType.File:
            filesystem.delete_file(classes_file)  # an earlier ingest's class names would mislabel this one
    by_reason: dict[str, int] = {}
    for rejected, _ in outcomes.values():
        if rejected:
            by_reason[rejected[0]] = by_reason.get(rejected[0], 0) + 1
    accepted = [i for i in inputs if not outcomes[i.uri][0]]
    splits: dict[str, int] = {}
    for item in accepted:
        splits[item.split] = splits.get(item.split, 0) + 1
    summary = IngestSummary(out=out, inputs=len(inputs), accepted=len(inputs) - len(rejects), rows=rows,
                            rejected=by_reason, classes=classes, seconds=time.time() - start, splits=splits,
                            val_assigned=sum(i.auto_split and i.split == "val" for i in accepted),
                            val_fraction=cfg.ingest.val_fraction)
    if keep_previous:
        log.warning("no input of %s was accepted: the dataset already in %s was left as it was", src, out)
        return summary
    _write_text(filesystem, f"{out_path}/{SUMMARY_NAME}", json.dumps(asdict(summary), indent=1) + "\n")
    log.debug("%s", summary.format())  # the caller shows it (the CLI prints it once)
    return summary


def _replace_dir(filesystem, staging: str, final: str) -> None:
    """Swap a complete ``staging`` directory in for ``final`` (a rename locally; per object on a bucket)."""
    from pyarrow import fs

    if filesystem.get_file_info(final).type != fs.FileType.NotFound:
        filesystem.delete_dir(final)
    if isinstance(filesystem, fs.LocalFileSystem):
        filesystem.move(staging, final)
        return
    filesystem.create_dir(final, recursive=True)
    for info in filesystem.get_file_info(fs.FileSelector(staging, recursive=True)):
        if info.type == fs.FileType.File:
            filesystem.move(info.path, final + info.path[len(staging):])
    filesystem.delete_dir(staging)
