"""What an ingest reads: the inputs of a directory tree (labels from folder names), a .csv/.jsonl manifest
(path, label, caption, split) or an s3:// / gs:// prefix, each with a stable video id and a split that
stays the same wherever the dataset is copied."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from arvid_ray import schemas as S
from arvid_ray import storage as st
from arvid_ray.config import ExperimentConfig, IngestConfig, StorageConfig

__all__ = ["list_inputs", "video_id_of", "VIDEO_SUFFIXES"]

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
