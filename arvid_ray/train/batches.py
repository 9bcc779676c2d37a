"""Batches for the training loop: a worker's dataset shard → seekable epochs, cached in memory when it fits.

Design trade-off: the first complete pass over a shard streams from Ray Data; when the shard's rows are the
same every pass and fit ``data.worker_cache_mb``, later passes replay them from this process's memory,
reshuffled per epoch — a Ray Data re-execution per epoch costs seconds of stall that small datasets pay
every few dozen steps. The price is that a worker keeps the rows of its first pass (like a sharded
sampler without a global reshuffle). Nothing here imports Ray: the shard is any object with Ray's
``DataIterator.iter_batches``, so the caching is tested without a cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from arvid_ray.config import ExperimentConfig

log = logging.getLogger(__name__)

__all__ = ["collate_tokens", "epoch_batches"]


def collate_tokens(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """Ray Data numpy batch → the objective's batch: tokens LongTensor [B, t, h, w], label [B], captions."""
    # np.array copies: Ray hands out read-only views of its object store, which torch warns about
    out: dict[str, Any] = {"tokens": torch.from_numpy(np.array(batch["tokens"], dtype=np.int64))}
    if "label" in batch:
        out["label"] = torch.from_numpy(np.array(batch["label"], dtype=np.int64))
    if "caption" in batch:
        out["caption"] = [str(c) for c in batch["caption"]]
    return out


def epoch_batches(shard, cfg: ExperimentConfig, train: bool, fixed_rows: bool) -> Callable[..., Iterator[dict]]:
    """(epoch, skip) → batches of ``shard`` (a Ray ``DataIterator``: this worker's shard of a dataset).

    The first complete pass streams from Ray Data; if the shard fits ``data.worker_cache_mb`` and its
    rows are the same every pass (``fixed_rows``: a token cache — not clips tokenized on the fly with
    random starts; validation always), later passes replay it from memory, reshuffled per epoch
    for training — a Ray Data re-execution per epoch costs seconds of stall that small datasets pay
    every few dozen steps. Caching pins each worker to the rows of its first pass (like a sharded
    sampler without a global reshuffle).

    ``skip`` (resuming mid-epoch): a cached pass seeks exactly (no row is read); a stream cannot seek, so
    it starts a fresh pass of the shard with another shuffle seed — no read is wasted, the interrupted
    epoch's remaining rows are not reproduced (a restarted worker group gets a new split anyway).
    """
    limit = cfg.data.worker_cache_mb * 2**20
    cacheable = limit > 0 and (not train or fixed_rows)
    cached: dict[str, np.ndarray] | None = None  # the shard's rows, column by column

    def stream(epoch: int, salt: int = 0) -> Iterator[dict[str, np.ndarray]]:
        shuffle = cfg.data.shuffle_buffer if train and cfg.data.shuffle_buffer > 0 else None
        return iter(
            shard.iter_batches(
                batch_size=cfg.data.batch_size,
                prefetch_batches=cfg.data.prefetch_batches,
                batch_format="numpy",
                drop_last=train,
                local_shuffle_buffer_size=shuffle,
                local_shuffle_seed=(cfg.experiment.seed + epoch + 7919 * salt) if shuffle else None,
            )
        )

    def epoch_iter(epoch: int, skip: int = 0) -> Iterator[dict]:
        nonlocal cached
        if cached is not None:
            seed = cfg.experiment.seed + epoch if train else None
            yield from _replay(cached, cfg.data.batch_size, seed, train, skip)
            return
        if skip:
            log.info("resuming inside epoch %d: a stream cannot seek, starting a fresh pass of the shard "
                     "instead of re-reading %d batches", epoch, skip)
        kept: list[dict[str, np.ndarray]] | None = [] if cacheable else None
        size = 0
        for batch in stream(epoch, salt=skip):
            if kept is not None:
                size += sum(v.nbytes for v in batch.values() if isinstance(v, np.ndarray))
                if size <= limit:
                    kept.append(batch)
                else:
                    kept = None  # too big: keep streaming every epoch
            yield collate_tokens(batch)
        if kept:  # a complete pass that fits: replay it from now on (concatenated once, here)
            cached = {k: np.concatenate([b[k] for b in kept]) for k in kept[0]}

    return epoch_iter


def _replay(rows: dict[str, np.ndarray], batch_size: int, seed: int | None, drop_last: bool,
            skip: int = 0) -> Iterator[dict]:
    """Re-batch cached rows: in a seeded permutation (``seed``) or in their original order (None),
    starting after the first ``skip`` batches."""
    n = len(next(iter(rows.values())))
    order = np.random.default_rng(seed).permutation(n) if seed is not None else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for i in range(skip * batch_size, stop, batch_size):
        idx = order[i : i + batch_size]
        yield collate_tokens({k: v[idx] for k, v in rows.items()})
