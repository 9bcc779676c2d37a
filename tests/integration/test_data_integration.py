"""data.py: the synthetic cache, clip streams (random train starts, fixed eval starts), local batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from video_fixtures import shared_synth_cfg

from arvid_ray import schemas as S
from arvid_ray.ingest import video_id_of
from arvid_ray.video.synthetic import render_video


@pytest.mark.ray
def test_synthetic_cache_and_clip_streams(ray_session, tmp_path_factory):
    import pyarrow.parquet as pq

    from arvid_ray.data import clip_dataset, local_token_batches, synthetic_cache_dir, videos_path

    cfg = shared_synth_cfg(tmp_path_factory)
    path = videos_path(cfg)
    table = pq.read_table(path)
    assert table.num_rows == cfg.synth.num_videos and table.schema.remove_metadata().equals(S.VIDEOS_SCHEMA)
    done = Path(synthetic_cache_dir(cfg)) / "_COMPLETE"
    stamp = done.stat().st_mtime_ns
    assert videos_path(cfg) == path and done.stat().st_mtime_ns == stamp  # cached, not regenerated

    splits = [render_video(i, cfg.synth).split for i in range(cfg.synth.num_videos)]
    rows = clip_dataset(cfg, "val", train=False).take_all()
    assert len(rows) == splits.count("val") and {r["clip_start"] for r in rows} == {0}
    raw = Path(synthetic_cache_dir(cfg)) / "raw" / "videos"
    by_id = {video_id_of(str(raw / f"{i:06d}.mp4")): render_video(i, cfg.synth) for i in range(cfg.synth.num_videos)}
    for r in rows:
        assert set(r) == {"frames", "label", "caption", "video_id", "clip_start"}
        video = by_id[r["video_id"]]
        assert (r["label"], r["caption"]) == (video.label, video.caption)
        assert np.abs(r["frames"].astype(int) - video.frames[:cfg.data.num_frames]).mean() < 4
    train = clip_dataset(cfg, "train", train=True).take_all()
    assert len(train) == splits.count("train")
    assert all(0 <= r["clip_start"] <= cfg.synth.num_frames - cfg.data.num_frames for r in train)
    assert len({r["clip_start"] for r in train}) > 1

    from arvid_ray.tokenizer import load_tokenizer

    tok = load_tokenizer(cfg.tokenizer)
    batches = list(local_token_batches(cfg, "val", batch_size=2, seed=1, tokenizer=tok))
    assert sum(len(b["label"]) for b in batches) == splits.count("val")
    t, h, w = tok.latent_shape(cfg.data.num_frames, cfg.data.resolution, cfg.data.resolution)
    assert batches[0]["tokens"].shape == (2, t, h, w) and str(batches[0]["tokens"].dtype) == "torch.int64"
    assert sorted(int(x) for b in batches for x in b["label"]) == sorted(r["label"] for r in rows)
