"""The ingest's Ray Data stage: one input read, probed and cut into rows (``process_input``, never raises),
run as a ``map_batches`` stage whose rows stream into ``write_parquet``, with every input's outcome
reported to a tally actor (see the ``arvid_ray.ingest`` package docstring for why)."""

from __future__ import annotations

import threading
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa

from arvid_ray import schemas as S
from arvid_ray import storage as st
from arvid_ray.config import ExperimentConfig, IngestConfig, StorageConfig
from arvid_ray.ingest.sources import _Input, video_id_of
from arvid_ray.video.probe import Rejected, VideoInfo, probe

__all__ = ["process_input"]


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
