"""The one plain reader of decoded clips from a videos.parquet: tokenizer training (``tokenizer/clips``),
the evaluation's real reference clips (``evaluate/reference``) and the single-process token iterator
(``data.local_token_batches``) all read here; the Ray Data decode stage (``arvid_ray.clips``) is the
other way in, for streams that need a pool of decode actors.

Design trade-off: plain pyarrow + the shared decoder, no Ray: what these callers read is small (a few
hundred clips at most) and some run inside a Train worker. The location goes through ``arvid_ray.storage``
(an ingest output directory or a videos.parquet itself; a local path, ``file://``, ``s3://`` or ``gs://``),
so a dataset on object storage reads the same as one on disk. One split's rows are read at a time, all of
them (with the encoded bytes): fine at these sizes, and what lets a seeded shuffle be drawn over them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from arvid_ray import schemas as S
from arvid_ray import storage as st

if TYPE_CHECKING:
    from arvid_ray.config import StorageConfig

__all__ = ["Clip", "iter_clips"]

_COLUMNS = [S.VIDEO, S.NUM_FRAMES, S.LABEL, S.CAPTION]


class Clip(NamedTuple):
    """One decoded clip: frames uint8 (T, H, W, 3), the video's label (-1: none) and caption."""

    frames: np.ndarray
    label: int
    caption: str


def iter_clips(source: str, splits: Sequence[str], num_frames: int, size: int, *,
               storage: StorageConfig | None = None, stride: int = 1, rng: np.random.Generator | None = None,
               random_start: bool = False) -> Iterator[Clip]:
    """Decoded clips of ``num_frames`` frames (every ``stride``-th) at ``size`` pixels from the videos of
    ``splits`` in ``source`` (a videos.parquet or an ingest output directory: local, ``file://``, ``s3://``
    or ``gs://``, resolved through ``arvid_ray.storage`` with ``storage``).

    Splits are read in the order given; within one, rows come in dataset order, or in the order of one
    ``rng.permutation`` of the split's rows when ``rng`` is given. Videos shorter than the clip's span are
    skipped. A clip starts at frame 0, or with ``random_start`` at a start drawn from ``rng`` per clip (after
    the permutation), so a seeded generator gives the same clips every time."""
    import pyarrow.dataset as pads

    from arvid_ray.video.decode import decode_clip

    if random_start and rng is None:
        raise ValueError("random_start needs an rng")
    filesystem, inner = st.resolve(st.resolve_videos_path(str(source), storage), storage)
    dataset = pads.dataset(inner, filesystem=filesystem, format="parquet")
    span = (num_frames - 1) * stride + 1
    for split in splits:
        table = dataset.to_table(filter=pads.field(S.SPLIT) == split, columns=_COLUMNS)
        nums = table.column(S.NUM_FRAMES).to_numpy()
        order = range(len(nums)) if rng is None else [int(i) for i in rng.permutation(len(nums))]
        videos, labels, captions = table.column(S.VIDEO), table.column(S.LABEL), table.column(S.CAPTION)
        for j in order:
            if nums[j] < span:
                continue
            start = int(rng.integers(0, nums[j] - span + 1)) if random_start else 0
            frames = decode_clip(videos[j].as_py(), start=start, num_frames=num_frames, stride=stride, size=size)
            yield Clip(frames, int(labels[j].as_py()), captions[j].as_py() or "")
