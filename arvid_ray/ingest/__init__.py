"""Sources (directory tree, CSV/JSONL manifest, s3:// prefix) → videos.parquet + rejects.jsonl.

Design trade-off: probing (a full decode per file) runs as a Ray Data ``map_batches`` stage, one input
per batch, and the accepted rows stream straight into ``write_parquet`` so video bytes never pass
through the driver. Rejected inputs are not rows of that dataset (they would break the exact
VIDEOS_SCHEMA); each task reports every input's outcome to a small tally actor instead, which also
drives the progress bar and lets the driver check that every input ended in exactly one place.
Long or oversized sources are re-encoded (H.264) into evenly sized segments; short ones keep their
original bytes untouched. Output files are ~64 MiB with row groups of
``schemas.VIDEOS_ROW_GROUP_ROWS`` rows, the unit the clip stream (``arvid_ray.clips``) plans reads in.

One job per module: ``sources`` (what the inputs are: a directory tree, a manifest or a bucket prefix, with
labels and stable splits), ``stage`` (one input probed and cut into rows; the Ray Data stage and its tally
actor), ``driver`` (``ingest``: the staged dataset swapped in, rejects.jsonl, classes.txt, the summary).
Every name is importable from ``arvid_ray.ingest``.
"""

from arvid_ray.ingest.driver import (
    CLASSES_NAME,
    REJECTS_NAME,
    SUMMARY_NAME,
    VIDEOS_DIR,
    IngestSummary,
    ingest,
)
from arvid_ray.ingest.sources import (  # noqa: F401 - _Input, _split_hash: internals the tests build inputs with
    VIDEO_SUFFIXES,
    _Input,
    _split_hash,
    list_inputs,
    video_id_of,
)
from arvid_ray.ingest.stage import process_input
from arvid_ray.storage import resolve_videos_path

__all__ = ["ingest", "IngestSummary", "list_inputs", "video_id_of", "resolve_videos_path",
           "VIDEOS_DIR", "REJECTS_NAME", "CLASSES_NAME", "SUMMARY_NAME", "VIDEO_SUFFIXES", "process_input"]
