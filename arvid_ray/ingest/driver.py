"""``ingest``: sources → a staged videos.parquet that replaces the previous one only when complete, plus
rejects.jsonl, classes.txt and summary.json; ``IngestSummary`` is what it reports."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from arvid_ray import schemas as S
from arvid_ray import storage as st
from arvid_ray.config import ExperimentConfig
from arvid_ray.ingest.sources import list_inputs
from arvid_ray.ingest.stage import _run_stage
from arvid_ray.video.probe import REASONS

__all__ = ["ingest", "IngestSummary", "VIDEOS_DIR", "REJECTS_NAME", "CLASSES_NAME", "SUMMARY_NAME"]

log = logging.getLogger(__name__)

VIDEOS_DIR = st.VIDEOS_DIR
REJECTS_NAME = "rejects.jsonl"
CLASSES_NAME = "classes.txt"
SUMMARY_NAME = "summary.json"

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
