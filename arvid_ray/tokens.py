"""The tokenize stage (Ray Data actor pool) and the tokens.parquet cache.

Design trade-off: tokenizing is a class-based ``map_batches`` so each actor loads the tokenizer once
and keeps it on its device (GPU when ``tokenizer.num_gpus`` > 0); a stateless function would reload
weights per batch. The cache is written by the driver from the streamed token rows into one Parquet
file: token rows are tiny (hundreds of int32 per clip) and a single writer can put the tokenizer id,
weight sha256 and vocabulary size into the file footer, which plain pyarrow reads back and which
``read_token_cache`` checks so a cache is never silently used with a different tokenizer.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from arvid_ray import schemas as S
from arvid_ray.config import ExperimentConfig, StorageConfig

__all__ = ["tokenize", "write_token_cache", "read_token_cache", "read_token_table", "token_cache_meta",
           "TokenizeActor", "TokenizerMismatch", "TOKENS_FILE"]

log = logging.getLogger(__name__)
TOKENS_FILE = "tokens.parquet"


class TokenizerMismatch(ValueError):
    """A token cache was made by a different tokenizer than the one configured."""


class TokenizeActor:
    """map_batches actor: loads the tokenizer once; clips uint8 [B, T, H, W, 3] → tokens int32 [B, t, h, w]."""

    def __init__(self, cfg_dict: dict[str, Any]):
        import torch

        from arvid_ray.tokenizer import load_tokenizer

        cfg = ExperimentConfig.from_dict(cfg_dict)
        self.device = "cuda" if cfg.tokenizer.num_gpus > 0 and torch.cuda.is_available() else "cpu"
        self.tokenizer = load_tokenizer(cfg.tokenizer, device=self.device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        frames = np.asarray(batch.pop(S.FRAMES))  # (B, T, H, W, 3)
        if not frames.flags.writeable:  # a zero-copy view of Ray's object store; torch wants writable memory
            frames = frames.copy()
        if len(frames) == 0:
            t, h, w = self.tokenizer.latent_shape(*frames.shape[1:4])
            return {**batch, S.TOKENS: np.zeros((0, t, h, w), np.int32)}
        with torch.inference_mode():
            tokens = self.tokenizer.encode(torch.from_numpy(frames).to(self.device))  # (B, t, h, w)
        return {**batch, S.TOKENS: tokens.to("cpu", torch.int32).numpy()}


def tokenize(clips, cfg: ExperimentConfig):
    """Clip rows (``frames`` + pass-through columns) → the same rows with ``tokens`` int32 [t, h, w]
    instead of frames. An actor pool of ``tokenizer.concurrency`` actors, ``tokenizer.num_gpus`` each."""
    import ray

    tk = cfg.tokenizer
    return clips.map_batches(TokenizeActor, fn_constructor_kwargs={"cfg_dict": cfg.to_dict()},
                             batch_size=tk.batch_size, batch_format="numpy",
                             compute=ray.data.ActorPoolStrategy(size=tk.concurrency),
                             num_gpus=tk.num_gpus or None, num_cpus=1 if not tk.num_gpus else None)


def token_cache_meta(tokenizer) -> dict[bytes, bytes]:
    """The Parquet footer metadata identifying ``tokenizer``."""
    return {S.META_TOKENIZER_ID: str(tokenizer.id).encode(), S.META_TOKENIZER_SHA256: str(tokenizer.sha256).encode(),
            S.META_VOCAB_SIZE: str(int(tokenizer.vocab_size)).encode()}


def _to_token_table(batch: dict[str, np.ndarray], num_frames: int) -> pa.Table:
    tokens = np.asarray(batch[S.TOKENS], np.int32)  # (B, t, h, w)
    b = len(tokens)
    flat = pa.array(list(tokens.reshape(b, -1)), type=pa.list_(pa.int32()))  # row-major [t*h*w]
    shape = pa.array([list(tokens.shape[1:])] * b, type=pa.list_(pa.int32(), 3))
    return pa.Table.from_arrays([
        pa.array([str(v) for v in batch[S.VIDEO_ID]], pa.string()),
        pa.array(np.asarray(batch[S.CLIP_START], np.int32)), pa.array(np.full(b, num_frames, np.int32)),
        flat, shape, pa.array(np.asarray(batch[S.LABEL], np.int32)),
        pa.array([str(v) for v in batch[S.CAPTION]], pa.string()),
        pa.array([str(v) for v in batch[S.SPLIT]], pa.string())], schema=S.TOKENS_SCHEMA)


def _fs(path: str, storage: StorageConfig | None):
    from arvid_ray import storage as st

    return st.resolve(path, storage or StorageConfig())


def _cache_file(path: str) -> str:
    from arvid_ray import storage as st

    path = st.absolute(str(path))
    return path if path.endswith(".parquet") else st.join(path, TOKENS_FILE)


def _check_meta(path: str, meta: dict[bytes, bytes] | None, tokenizer) -> None:
    meta = meta or {}
    if S.META_TOKENIZER_ID not in meta:
        raise TokenizerMismatch(f"{path} has no tokenizer metadata; it was not written by `arvid-ray tokenize` "
                                f"(re-create it with `arvid-ray tokenize`)")
    if tokenizer is None:
        return
    have = (meta[S.META_TOKENIZER_ID].decode(), meta[S.META_TOKENIZER_SHA256].decode())
    want = (str(tokenizer.id), str(tokenizer.sha256))
    if have != want:
        raise TokenizerMismatch(
            f"token cache {path} was made by a different tokenizer: id={have[0]} sha256={have[1][:12]}…, "
            f"but the configured tokenizer is id={want[0]} sha256={want[1][:12]}…. Re-create the cache with "
            f"`arvid-ray tokenize` under this tokenizer, or set tokenizer.name to the one that made it")


def write_token_cache(cfg: ExperimentConfig, out: str | Path, splits: list[str] | None = None,
                      progress: bool = False) -> str:
    """Tokenize the clips of ``splits`` (None = all) of cfg.data.source into ``out/tokens.parquet``.

    ``data.source`` must be a videos.parquet location (for the built-in dataset, set it to
    ``arvid_ray.data.videos_path(cfg)`` first, as `arvid-ray tokenize` and the sweep do).

    Clips per video: every start that is a multiple of ``data.cache_clip_hop`` (0 = frame 0 only).
    An existing cache made by the same tokenizer for the same clip settings is reused as is.
    Returns the location of the Parquet file (absolute local path or s3:// / gs:// URI).
    """
    import pyarrow.parquet as pq

    from arvid_ray.clips import clip_stream
    from arvid_ray.tokenizer import load_tokenizer

    out = str(out)
    target = _cache_file(out)
    filesystem, inner = _fs(target, cfg.storage)
    meta = {**token_cache_meta(load_tokenizer(cfg.tokenizer)), **_clip_meta(cfg, splits)}
    if _existing_matches(filesystem, inner, meta):
        log.info("reusing token cache %s", target)
        return target
    clips = clip_stream(cfg.data.source, cfg, None, train=False, keep_split=True, hop=cfg.data.cache_clip_hop)
    if splits is not None:
        from functools import reduce

        from ray.data.expressions import col

        clips = clips.filter(expr=reduce(lambda a, b: a | b, [col(S.SPLIT) == s for s in splits]))
    filesystem.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    tmp = inner + ".tmp"
    rows = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc="tokenize", unit="clip")
    with pq.ParquetWriter(tmp, S.TOKENS_SCHEMA.with_metadata(meta), filesystem=filesystem) as writer:
        for batch in tokenize(clips, cfg).iter_batches(batch_size=256, batch_format="numpy"):
            table = _to_token_table(batch, cfg.data.num_frames)
            writer.write_table(table)
            rows += table.num_rows
            if bar is not None:
                bar.update(table.num_rows)
    if bar is not None:
        bar.close()
    if rows == 0:
        filesystem.delete_file(tmp)
        raise ValueError(f"no clips to tokenize in {cfg.data.source} (splits={splits}); check data.num_frames "
                         f"against the videos' lengths and the split names")
    filesystem.move(tmp, inner)
    log.info("wrote %d token rows to %s", rows, target)
    return target


def _clip_meta(cfg: ExperimentConfig, splits: list[str] | None) -> dict[bytes, bytes]:
    d = cfg.data
    key = f"{d.source}|{d.num_frames}|{d.frame_stride}|{d.resolution}|{d.cache_clip_hop}|{sorted(splits or [])}"
    return {b"arvid.clips": key.encode()}


def _existing_matches(filesystem, inner: str, meta: dict[bytes, bytes]) -> bool:
    import pyarrow.parquet as pq
    from pyarrow import fs

    if filesystem.get_file_info(inner).type != fs.FileType.File:
        return False
    with filesystem.open_input_file(inner) as fh:
        have = pq.read_schema(fh).metadata or {}
    return all(have.get(k) == v for k, v in meta.items())


def _read_meta(path: str, storage: StorageConfig | None) -> tuple[Any, str, dict[bytes, bytes] | None]:
    import pyarrow.parquet as pq

    target = _cache_file(path)
    filesystem, inner = _fs(target, storage)
    try:
        with filesystem.open_input_file(inner) as fh:
            return filesystem, inner, pq.read_schema(fh).metadata
    except (FileNotFoundError, OSError) as exc:
        raise FileNotFoundError(f"token cache {target} not found ({exc}); create it with `arvid-ray tokenize`") from exc


def read_token_cache(path: str | Path, tokenizer, storage: StorageConfig | None = None):
    """Ray Dataset over a tokens.parquet cache (TOKENS_SCHEMA rows); refuses a cache from another tokenizer."""
    import ray

    filesystem, inner, meta = _read_meta(str(path), storage)
    _check_meta(str(path), meta, tokenizer)
    # The cache is one file whose footer was just read: Ray Data 2.60's default (v2) Parquet reader
    # provisions 32 footer-reading actors per read (RAY_DATA_PARQUET_FOOTER_NUM_ACTORS) — per dataset,
    # i.e. per trial and split — which on a small cluster spends minutes starting processes (seen: 128
    # actors for 2 trials on the test cluster, training waited 8 min for its first batch). The v1 reader
    # plans from the footer directly.
    from ray.data import DataContext

    ctx = DataContext.get_current()
    before, ctx.use_datasource_v2 = ctx.use_datasource_v2, False
    try:
        return ray.data.read_parquet(inner, filesystem=filesystem)
    finally:
        ctx.use_datasource_v2 = before


def read_token_table(path: str | Path, tokenizer, storage: StorageConfig | None = None,
                     split: str | None = None) -> pa.Table:
    """The cache as one pyarrow Table (no Ray), optionally one split; same tokenizer check."""
    import pyarrow.dataset as pads

    filesystem, inner, meta = _read_meta(str(path), storage)
    _check_meta(str(path), meta, tokenizer)
    kwargs = {} if split is None else {"filter": pads.field(S.SPLIT) == split}
    return pads.dataset(inner, filesystem=filesystem, format="parquet").to_table(**kwargs)


def default_cache_dir(cfg: ExperimentConfig, videos: str) -> str:
    """Where `arvid-ray tokenize` writes by default: beside the videos.parquet, keyed by tokenizer and clip."""
    name = os.path.basename(cfg.tokenizer.name.rstrip("/")).replace(".", "_")
    key = f"{name}-{cfg.data.resolution}px-{cfg.data.num_frames}f-s{cfg.data.frame_stride}-h{cfg.data.cache_clip_hop}"
    return f"{videos.rstrip('/').rsplit('/', 1)[0]}/tokens-{key}"
