"""evaluate: metrics on given videos, real-feature cache, reports, and `evaluate` of a debug checkpoint on
local Ray logging metrics and artifacts to a real MLflow server."""

from __future__ import annotations

import math

import numpy as np
from evaluate_shared import _cfg

from arvid_ray.config import ExperimentConfig
from arvid_ray.evaluate import evaluate_videos, metric_names, real_clips, real_features, segment_starts
from arvid_ray.metrics.extractors import SynthC3DExtractor
from arvid_ray.report import drift_plot, markdown_table, pareto_plot, sweep_report


def test_metric_names_never_call_a_proxy_fvd():
    assert metric_names("i3d-0123456789ab")[0] == "eval/fvd"
    assert metric_names("synthc3d-0123456789ab") == ("eval/fd_synthc3d", "eval/kvd_synthc3d")


def test_only_a_real_i3d_file_reports_eval_fvd(tmp_path):
    import torch
    from test_extractors import _I3DStandIn

    from arvid_ray.metrics.extractors import load_extractor

    torch.jit.script(_I3DStandIn()).save(str(tmp_path / "i3d.pt"))
    ext = load_extractor("i3d", tmp_path / "i3d.pt")
    videos = np.random.default_rng(0).integers(0, 256, (6, 17, 32, 32, 3), dtype=np.uint8)
    out = evaluate_videos(ext(videos), videos[:3], ext)
    assert "eval/fvd" in out and "eval/fd_synthc3d" not in out and out["eval/fd_floor_n"] == 3


def test_segment_starts_follow_the_causal_latent_layout():
    # 4x rollout of 5 latent frames = 20 latent = 77 video frames; segments start at latent 0, 5, 10, 15
    assert segment_starts(77, 17, 5, 4) == [0, 17, 37, 57]
    assert segment_starts(37, 17, 5, 4) == [0, 17]


def test_evaluate_videos_ranks_real_above_damaged_and_caches_real_stats(tmp_path):
    cfg = _cfg(tmp_path, **{"eval.num_videos": 16})
    ext = SynthC3DExtractor()
    clips = real_clips(cfg, 32)
    assert clips.frames.shape == (32, 17, 64, 64, 3) and clips.positions.shape == (32, 17, 2)
    real = real_features(cfg, ext, clips)
    cached = real_features(cfg, ext, clips)  # second call reads the cache file
    np.testing.assert_array_equal(real["features"], cached["features"])
    assert len(list((tmp_path / "wd" / "eval_cache").glob("*.npz"))) == 1
    good = evaluate_videos(real["features"][:16], clips.frames[16:], ext, labels=clips.labels[16:])
    frozen = np.repeat(clips.frames[16:, :1], 17, axis=1)
    bad = evaluate_videos(real["features"][:16], frozen, ext, labels=clips.labels[16:])
    assert good["eval/num_videos"] == 16 and good["eval/fd_floor_n"] == 8
    assert bad["eval/fd_synthc3d"] > 2 * good["eval/fd_synthc3d"]
    assert bad["eval/motion"] < 0.05 < good["eval/motion"]  # frozen video: perfect warp, no motion
    assert good["eval/class_retention"] > bad["eval/class_retention"]
    assert "eval/fvd" not in good


def test_real_clips_from_videos_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from arvid_ray import schemas
    from arvid_ray.video.io import encode_mp4
    from arvid_ray.video.synthetic import render_video

    synth = ExperimentConfig().synth
    rows = []
    for i in range(5):
        v = render_video(i, synth)
        rows.append({"video_id": f"v{i}", "source_uri": f"mem://{i}", "video": encode_mp4(v.frames[:20]),
                     "num_frames": 20 if i else 9, "fps": 8.0, "width": 64, "height": 64, "label": v.label,
                     "caption": v.caption, "split": "val" if i < 2 else "train", "segment_start": 0})
    (tmp_path / "videos.parquet").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=schemas.VIDEOS_SCHEMA), tmp_path / "videos.parquet" / "0.parquet")
    cfg = _cfg(tmp_path, **{"data.source": str(tmp_path / "videos.parquet")})
    clips = real_clips(cfg, 8)
    assert clips.frames.shape == (4, 17, 64, 64, 3) and clips.positions is None  # the 9-frame video is skipped
    assert list(clips.labels[:1]) == [rows[1]["label"]]  # val split first
    assert np.abs(clips.frames[0].astype(int) - render_video(1, synth).frames[:17]).mean() < 3


def test_pareto_plot_drift_plot_and_tables(tmp_path):
    from types import SimpleNamespace as NS

    points = [(3.0, 1.0), (2.0, 2.0), (2.5, 3.0), (1.0, 4.0), (math.nan, 1.0)]
    png = pareto_plot(points, tmp_path / "p.png", pareto=[0, 1, 3], baseline=3, quality_key="eval/fd_synthc3d",
                      cost_key="cost/gpu_hours", n=64)
    assert png.stat().st_size > 5000
    assert drift_plot({"2x": [1.0, 1.5], "4x": [1.0, 1.4, 2.0, 2.2]}, tmp_path / "d.png", floor=0.5).is_file()
    table = markdown_table([{"a": 1.23456, "b": "x|y"}, {"a": math.nan}])
    assert table.splitlines()[0] == "| a | b |" and "1.235" in table and "x\\|y" in table and "–" in table
    trials = [NS(trial_id=f"t{i}", role="baseline" if i == 3 else "search", status="TERMINATED",
                 params={"objective.window_frames": i}, metrics={"q": q, "c": c}) for i, (q, c) in enumerate(points)]
    files = sweep_report(NS(name="s", quality_key="q", cost_key="c", trials=trials, pareto=["t0", "t1", "t3"]),
                         tmp_path / "rep")
    assert [f.relative_to(tmp_path / "rep").as_posix() for f in files] == ["plots/pareto.png", "plots/cost_quality.html", "report.md"]
    assert "| t3 | baseline |" in files[-1].read_text()


def test_fd_recon_is_a_floor_the_model_and_the_shuffled_control_stay_above(tmp_path):
    import torch

    from arvid_ray.evaluate.rollouts import reconstruction_fd, sample_videos
    from arvid_ray.metrics.trajectory import ground_truth_drift
    from arvid_ray.model import build_model
    from arvid_ray.tokenizer import load_tokenizer

    cfg = _cfg(tmp_path, **{"tokenizer.name": "builtin", "eval.num_videos": 16, "eval.batch_size": 16})
    ext, tok = SynthC3DExtractor(), load_tokenizer(cfg.tokenizer)
    clips = real_clips(cfg, 32)
    real = real_features(cfg, ext, clips)["features"]
    recon = reconstruction_fd(cfg, tok, ext, clips, real, 16)
    floor = evaluate_videos(real, clips.frames[16:], ext)["eval/fd_floor"]
    torch.manual_seed(0)
    model = build_model(cfg.model, tok.vocab_size, cfg.latent_shape())  # an untrained model
    videos = sample_videos(model, tok, cfg, cfg.latent_frames(), clips.labels[:16], clips.captions[:16])
    model_fd = evaluate_videos(real, videos, ext)["eval/fd_synthc3d"]
    # the shuffled control on the best a model could do: real clips' tokens with their latent frames permuted
    with torch.no_grad():
        tokens = tok.encode(clips.frames[16:])  # (16, 5, h, w)
        order = torch.stack([torch.randperm(5, generator=torch.Generator().manual_seed(i)) for i in range(16)])
        shuffled = tok.decode(torch.take_along_dim(tokens, order[:, :, None, None], 1)).numpy()
        unshuffled = tok.decode(tokens).numpy()
    control_fd = evaluate_videos(real, shuffled, ext)["eval/fd_synthc3d"]
    assert 0 < recon < model_fd and recon < control_fd
    assert recon < 10 * max(floor, 1.0)  # the tokenizer keeps what the extractor sees
    starts = segment_starts(17, 17, 5, 4)
    fit = ground_truth_drift(unshuffled, starts, 17)["traj_error"][0]
    broken = ground_truth_drift(shuffled, starts, 17)["traj_error"][0]
    assert broken > 3 * fit  # the physics fit cannot explain frames out of order


def test_shuffled_control_resamples_the_same_model_with_the_same_seeds_frames_shuffled(tmp_path, monkeypatch):
    """eval.shuffled_control: every sampling call of the evaluation is repeated with the same seed and length
    and sampling.shuffle_frames on, and its metrics come back under control/ beside (not instead of) eval/."""
    import torch

    from arvid_ray import evaluate
    from arvid_ray.evaluate import rollouts
    from arvid_ray.model import build_model
    from arvid_ray.tokenizer import load_tokenizer

    calls = []
    real_sample = rollouts.sample_videos

    def recording(model, tokenizer, cfg, num_latent, labels, captions, *, prompt=None, seed=0):
        if prompt is None:
            calls.append((num_latent, seed, cfg.sampling.shuffle_frames))
        return real_sample(model, tokenizer, cfg, num_latent, labels, captions, prompt=prompt, seed=seed)

    monkeypatch.setattr(rollouts, "sample_videos", recording)
    cfg = _cfg(tmp_path, **{"eval.trajectory_videos": 0, "eval.shuffled_control": True})
    tok = load_tokenizer(cfg.tokenizer)
    torch.manual_seed(0)
    model = build_model(cfg.model, tok.vocab_size, cfg.latent_shape())
    metrics = evaluate.evaluate_model(cfg, model, tok, out_dir=tmp_path / "out")
    plain = [(n, s) for n, s, shuffled in calls if not shuffled]
    assert sorted((n, s) for n, s, shuffled in calls if shuffled) == sorted(plain) and len(plain) == 2
    for key in ("fd_synthc3d", "drift_2x", "traj_error_2x_seg1", "identity_seg1"):
        assert math.isfinite(metrics[f"eval/{key}"]) and math.isfinite(metrics[f"control/{key}"]), key
    assert metrics["control/fd_synthc3d"] != metrics["eval/fd_synthc3d"]

    calls.clear()  # off by default: nothing sampled twice, no control/ keys
    metrics = evaluate.evaluate_model(cfg.replace(**{"eval.shuffled_control": False}), model, tok,
                                      out_dir=tmp_path / "out2")
    assert not any(shuffled for *_, shuffled in calls) and not any(k.startswith("control/") for k in metrics)


def test_evaluating_a_checkpoint_scores_its_weight_average_when_it_has_one(tmp_path, monkeypatch):
    """train.ema_decay: the checkpoint's ema.pt (what the run validated) is scored, not its raw model.pt;
    eval.num_sample_videos=0 writes no sample files."""
    import torch

    from arvid_ray import evaluate
    from arvid_ray.evaluate import run
    from arvid_ray.model import build_model
    from arvid_ray.tokenizer import load_tokenizer
    from arvid_ray.train.checkpoint import save_checkpoint

    cfg = _cfg(tmp_path, **{"eval.num_sample_videos": 0, "eval.drift_multipliers": [], "eval.trajectory_videos": 0})
    tok = load_tokenizer(cfg.tokenizer)
    torch.manual_seed(0)
    raw, avg = (build_model(cfg.model, tok.vocab_size, cfg.latent_shape()) for _ in range(2))
    ckpt = save_checkpoint(tmp_path / "run" / "step_0000003", cfg, step=3, data_position=0, model=raw,
                           ema={"weights": avg.state_dict(), "n_averaged": 3})
    scored = []
    real = run.evaluate_model

    def recording(cfg, model, tokenizer, **kwargs):
        scored.append({k: v.clone() for k, v in model.state_dict().items()})
        return real(cfg, model, tokenizer, **kwargs)

    monkeypatch.setattr(run, "evaluate_model", recording)
    out = evaluate.evaluate_checkpoint(cfg, ckpt, out_dir=tmp_path / "out", use_ray=False)
    assert math.isfinite(out["metrics"]["eval/fd_synthc3d"])
    assert torch.equal(scored[0]["head.weight"], avg.state_dict()["head.weight"])
    assert not torch.equal(scored[0]["head.weight"], raw.state_dict()["head.weight"])
    assert not (tmp_path / "out" / "samples").exists()


def test_sampling_batch_size_sets_the_generation_chunk_apart_from_pixel_decoding(tmp_path, monkeypatch):
    """sampling.batch_size videos are decoded to tokens together (a GPU wants hundreds); pixels are still
    decoded eval.batch_size at a time. 0 keeps eval.batch_size for both."""
    import torch

    from arvid_ray.evaluate import rollouts

    generated, decoded = [], []

    def fake_generate(model, b, num_latent, cfg, labels, captions, prompt, gen):
        generated.append(b)
        return torch.zeros(b, num_latent, 2, 2, dtype=torch.long)

    class Tokenizer:
        def decode(self, tokens):
            decoded.append(len(tokens))
            return torch.zeros(len(tokens), 3, 4, 4, 3)

    monkeypatch.setattr(rollouts, "_generate", fake_generate)
    model = torch.nn.Linear(1, 1)
    for batch, gen_sizes, pix_sizes in [(8, [8, 2], [4, 4, 2]), (0, [4, 4, 2], [4, 4, 2])]:
        generated.clear(), decoded.clear()
        cfg = _cfg(tmp_path, **{"sampling.batch_size": batch})
        videos = rollouts.sample_videos(model, Tokenizer(), cfg, 2, list(range(10)), [""] * 10)
        assert videos.shape == (10, 3, 4, 4, 3) and generated == gen_sizes and decoded == pix_sizes
