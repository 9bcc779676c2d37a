"""Tokenize stage + tokens.parquet cache: one row per clip, plain-pyarrow readable, tokenizer-checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from video_fixtures import shared_synth_cfg

from arvid_ray import schemas as S
from arvid_ray.ingest import video_id_of
from arvid_ray.tokens import TokenizerMismatch
from arvid_ray.video.synthetic import render_video


@pytest.mark.ray
def test_token_cache_one_row_per_clip(ray_session, tmp_path_factory, tmp_path):
    from arvid_ray.data import local_token_batches, synthetic_cache_dir, token_dataset, videos_path
    from arvid_ray.tokenizer import load_tokenizer
    from arvid_ray.tokens import read_token_cache, write_token_cache

    cfg = shared_synth_cfg(tmp_path_factory)
    cfg = cfg.replace(**{"data.source": videos_path(cfg)})
    path = write_token_cache(cfg, tmp_path / "cache")
    tok = load_tokenizer(cfg.tokenizer)

    table = pq.read_table(path)  # plain pyarrow, no arvid_ray needed
    assert table.schema.remove_metadata().equals(S.TOKENS_SCHEMA)
    meta = pq.read_schema(path).metadata
    assert meta[S.META_TOKENIZER_ID].decode() == tok.id and meta[S.META_TOKENIZER_SHA256].decode() == tok.sha256
    assert int(meta[S.META_VOCAB_SIZE]) == tok.vocab_size
    # 17-frame videos, 9-frame clips, hop 8 → clips at 0 and 8: exactly two rows per video
    n = cfg.synth.num_videos
    assert table.num_rows == 2 * n
    keys = {(r[S.VIDEO_ID], r[S.CLIP_START]) for r in table.select([S.VIDEO_ID, S.CLIP_START]).to_pylist()}
    raw = Path(synthetic_cache_dir(cfg)) / "raw" / "videos"
    assert keys == {(video_id_of(str(raw / f"{i:06d}.mp4")), s) for i in range(n) for s in (0, 8)}

    # the cached tokens are the tokenizer's encoding of the decoded clip
    from arvid_ray.video.decode import decode_clip

    row = table.slice(table.num_rows - 1, 1).to_pylist()[0]
    index = next(i for i in range(n) if video_id_of(str(raw / f"{i:06d}.mp4")) == row[S.VIDEO_ID])
    frames = decode_clip((raw / f"{index:06d}.mp4").read_bytes(), start=row[S.CLIP_START], num_frames=9, size=32)
    with torch.no_grad():
        expected = tok.encode(frames[None])[0].numpy()  # (t, h, w)
    got = np.asarray(row[S.TOKENS], np.int32).reshape(row[S.TOKENS_SHAPE])
    assert (got == expected).mean() > 0.99  # same clip; PyAV in another process may differ by rounding
    assert row[S.LABEL] == render_video(index, cfg.synth).label and row[S.NUM_FRAMES] == 9

    assert write_token_cache(cfg, tmp_path / "cache") == path  # reused, same tokenizer and clips
    other = load_tokenizer(cfg.tokenizer.__class__(name="fsq", fsq_levels=(5, 5, 5)))
    with pytest.raises(TokenizerMismatch, match="different tokenizer"):
        read_token_cache(path, other)

    cached = cfg.replace(**{"data.tokens_path": str(path)})
    rows = token_dataset(cached, "val", train=False).take_all()
    val = sum(render_video(i, cfg.synth).split == "val" for i in range(n))
    assert len(rows) == 2 * val
    assert rows[0]["tokens"].shape == tuple(row[S.TOKENS_SHAPE]) and rows[0]["tokens"].dtype == np.int32
    batches = list(local_token_batches(cached, "train", batch_size=5, tokenizer=tok))
    assert sum(len(b["label"]) for b in batches) == 2 * (n - val)
    with pytest.raises(TokenizerMismatch):
        next(local_token_batches(cached, "train", batch_size=5, tokenizer=other))
