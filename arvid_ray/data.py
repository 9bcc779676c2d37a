"""The datasets a trainer consumes: decoded clip streams and token streams (Ray Data), plus a plain
single-process token iterator for tests and ``train.num_workers=0``.

Design trade-off: decode runs in a pool of CPU decode actors (``arvid_ray.clips``: processes, since
PyAV releases the GIL little; actors, since Ray Data's stateless tasks left a core idle between
tasks) and streams — nothing is materialised, so a dataset larger than memory flows through.
Training clips start at a random frame on every pass (fresh
entropy per batch: more distinct clips per epoch, not bit-reproducible); evaluation clips always
start at the first frame of each stored segment, so evaluation sees the same clips every time.
The token stream reads a tokens.parquet cache when ``data.tokens_path`` is set and otherwise
tokenizes decoded clips on the fly through the actor pool in ``arvid_ray.tokens``.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import logging
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np

from arvid_ray import schemas as S
from arvid_ray.config import ExperimentConfig

__all__ = ["videos_path", "clip_dataset", "token_dataset", "local_token_batches", "synthetic_cache_dir"]

log = logging.getLogger(__name__)
_DONE = "_COMPLETE"


# ----------------------------------------------------------------------------------------- sources
def synthetic_cache_dir(cfg: ExperimentConfig) -> str:
    """Cache location of the built-in dataset for cfg.synth (+ the ingest settings that shape it), under
    the storage root (``<root>/synthetic/n<N>-<digest>``; local path or URI)."""
    from arvid_ray import storage as st

    key = json.dumps({"synth": asdict(cfg.synth), "ingest": asdict(cfg.ingest), "v": 2}, sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return st.join(st.storage_root(cfg), "synthetic", f"n{cfg.synth.num_videos}-{digest}")


def videos_path(cfg: ExperimentConfig) -> str:
    """The videos.parquet location for cfg.data.source.

    ``synthetic``: render + ingest the built-in dataset once into a cache under the storage root and
    return its videos.parquet location. Locally the cache is file-locked so concurrent trials wait for
    one writer; on a remote root (only the sweep driver materialises it, before any trial starts) the
    videos are rendered into a temporary local folder, uploaded under the root and ingested from there,
    so that every node reads them. A ``_COMPLETE`` marker is written last.
    Otherwise the source itself, or ``<source>/videos.parquet`` when it is an ingest output directory.
    """
    from arvid_ray import storage as st

    if cfg.data.source != "synthetic":
        from arvid_ray.storage import resolve_videos_path

        return resolve_videos_path(cfg.data.source, cfg.storage)
    cache = synthetic_cache_dir(cfg)
    videos = st.join(cache, "ingested", "videos.parquet")
    if st.exists(st.join(cache, _DONE), cfg.storage):
        return videos
    if st.is_remote(cache):
        _materialise_synthetic(cfg, cache)
        return videos
    Path(cache).mkdir(parents=True, exist_ok=True)
    with open(Path(cache) / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one writer; others block here and then find _COMPLETE
        if not (Path(cache) / _DONE).exists():
            _materialise_synthetic(cfg, cache)
    return videos


def _materialise_synthetic(cfg: ExperimentConfig, cache: str) -> None:
    import tempfile

    from arvid_ray import storage as st
    from arvid_ray.ingest import ingest
    from arvid_ray.video.synthetic import write_dataset

    log.info("generating the built-in synthetic dataset (%d videos) in %s", cfg.synth.num_videos, cache)
    with tempfile.TemporaryDirectory(prefix="arvid-synth-") as tmp:
        local_raw = st.join(cache, "raw") if not st.is_remote(cache) else tmp
        manifest = write_dataset(cfg.synth, local_raw)
        raw = st.join(cache, "raw")
        st.upload_dir(local_raw, raw, cfg.storage)  # a no-op when the root is local
        summary = ingest(st.join(raw, Path(manifest).name), st.join(cache, "ingested"), cfg)
    if summary.accepted != cfg.synth.num_videos:
        raise RuntimeError(f"synthetic ingest rejected videos:\n{summary.format()}")
    st.write_text(st.join(cache, _DONE), json.dumps(asdict(summary)) + "\n", cfg.storage)


def clip_dataset(cfg: ExperimentConfig, split: str | None, train: bool, keep_split: bool = False, hop: int = 0):
    """Ray Dataset of decoded clips of ``split`` (None = all splits): rows {frames uint8 [T, H, W, 3],
    label, caption, video_id, clip_start} (+ split when ``keep_split``). Streaming; decode on CPU actors;
    train clips start at a random frame, eval clips at frame 0 (or every ``hop`` frames)."""
    from arvid_ray.clips import clip_stream

    return clip_stream(videos_path(cfg), cfg, split, train, keep_split=keep_split, hop=hop)


# ----------------------------------------------------------------------------------------- tokens
def _token_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """tokens.parquet batch → training rows; flat tokens + shape → int32 [B, t, h, w]."""
    shape = tuple(int(v) for v in np.asarray(batch[S.TOKENS_SHAPE][0]))
    tokens = np.stack([np.asarray(t, np.int32).reshape(shape) for t in batch[S.TOKENS]])  # (B, t, h, w)
    return {"tokens": tokens, S.LABEL: batch[S.LABEL].astype(np.int64), S.CAPTION: batch[S.CAPTION],
            S.VIDEO_ID: batch[S.VIDEO_ID], S.CLIP_START: batch[S.CLIP_START].astype(np.int64)}


def token_dataset(cfg: ExperimentConfig, split: str, train: bool):
    """Ray Dataset of token rows {tokens int32 [t, h, w], label, caption, video_id, clip_start}.

    From the tokens.parquet cache at ``data.tokens_path`` (checked against cfg.tokenizer), otherwise
    decoded and tokenized on the fly (actor pool, see ``arvid_ray.tokens.tokenize``).
    """
    from arvid_ray.tokenizer import load_tokenizer
    from arvid_ray.tokens import read_token_cache, tokenize

    if cfg.data.tokens_path:
        ds = read_token_cache(cfg.data.tokens_path, load_tokenizer(cfg.tokenizer), storage=cfg.storage)
        from ray.data.expressions import col

        ds = ds.filter(expr=col(S.SPLIT) == split)
        if train:
            ds = ds.randomize_block_order()
        return ds.map_batches(_token_rows, batch_format="numpy", batch_size=256)
    return tokenize(clip_dataset(cfg, split, train), cfg)


def local_token_batches(cfg: ExperimentConfig, split: str, batch_size: int, seed: int = 0,
                        tokenizer=None) -> Iterator[dict]:
    """One epoch of {"tokens": LongTensor [B, t, h, w], "label": LongTensor [B], "caption": list[str]}.

    Single process, no Ray: from the token cache when ``data.tokens_path`` is set, else decoding the
    videos.parquet with PyAV and encoding with ``tokenizer`` (loaded from cfg.tokenizer if None).
    Order is a seeded shuffle; the last partial batch is kept. Train clips use seeded random starts.
    """
    import torch

    rng = np.random.default_rng(seed)
    if cfg.data.tokens_path:
        from arvid_ray.tokens import read_token_table

        if tokenizer is None:
            from arvid_ray.tokenizer import load_tokenizer

            tokenizer = load_tokenizer(cfg.tokenizer)
        table = read_token_table(cfg.data.tokens_path, tokenizer, storage=cfg.storage, split=split)
        rows = _token_rows({name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names})
        order = rng.permutation(len(rows[S.LABEL]))
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            yield {"tokens": torch.as_tensor(rows["tokens"][idx], dtype=torch.long),
                   "label": torch.as_tensor(rows[S.LABEL][idx], dtype=torch.long),
                   "caption": [str(c) for c in rows[S.CAPTION][idx]]}
        return
    yield from _local_decode_batches(cfg, split, batch_size, rng, tokenizer)


def _local_decode_batches(cfg: ExperimentConfig, split: str, batch_size: int, rng: np.random.Generator,
                          tokenizer) -> Iterator[dict]:
    import torch

    from arvid_ray.video.reader import iter_clips

    if tokenizer is None:
        from arvid_ray.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(cfg.tokenizer)
    d = cfg.data
    clips = iter_clips(videos_path(cfg), (split,), d.num_frames, d.resolution, storage=cfg.storage,
                       stride=d.frame_stride, rng=rng, random_start=split == d.train_split)
    while batch := list(itertools.islice(clips, batch_size)):
        with torch.no_grad():
            tokens = tokenizer.encode(np.stack([c.frames for c in batch]))  # (B, t, h, w)
        yield {"tokens": tokens.long().cpu(),
               "label": torch.as_tensor([c.label for c in batch], dtype=torch.long),
               "caption": [c.caption for c in batch]}
