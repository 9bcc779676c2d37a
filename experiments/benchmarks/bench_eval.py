"""Evaluation cost: feature-extraction clips/s (batched vs one clip at a time) and one full evaluation.

Measured side by side in one run on the same clips:
- SynthC3D features at batch 32 vs batch 1 (clips/s) — the ratio is what batching buys;
- optical-flow consistency (videos/s);
- one `evaluate_model` of N videos at 64x64 (default N=256; --quick N=16): a debug model with random
  weights and the seeded FSQ tokenizer, so the timing covers sampling, decoding, real stats, FD/KVD/floor,
  consistency, trajectory error and 2x/4x drift — the split says where the time goes.

    nice -n 10 python experiments/benchmarks/bench_eval.py [--quick]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import numpy as np
import torch

from arvid_ray.config import ExperimentConfig, SynthConfig
from arvid_ray.metrics.consistency import batch_flow_consistency
from arvid_ray.metrics.extractors import SynthC3DExtractor
from arvid_ray.video.synthetic import render_video


def _clips(n: int) -> np.ndarray:
    cfg = SynthConfig(num_videos=n, seed=3)
    return np.stack([render_video(i, cfg).frames[:17] for i in range(n)])  # (N, 17, 64, 64, 3)


def _rate(fn, n: int, repeats: int = 2) -> float:
    fn()  # warm-up
    best = min(_timed(fn) for _ in range(repeats))
    return n / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_extractor(clips: np.ndarray) -> tuple[float, float]:
    ext = SynthC3DExtractor(batch_size=32)
    one = SynthC3DExtractor(batch_size=1)
    return _rate(lambda: ext(clips), len(clips)), _rate(lambda: one(clips), len(clips))


def bench_evaluation(n: int, drift: list[int]) -> dict[str, float]:
    import arvid_ray.evaluate as ev
    from arvid_ray.evaluate import rollouts
    from arvid_ray.model import build_model
    from arvid_ray.tokenizer import load_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = ExperimentConfig().replace(**{
            "experiment.workdir": tmp, "tokenizer.name": "fsq", "eval.num_videos": n, "eval.batch_size": 32,
            "eval.drift_multipliers": drift, "tracking.enabled": False})
        tok = load_tokenizer(cfg.tokenizer)
        model = build_model(cfg.model, tok.vocab_size, cfg.latent_shape())
        spent = {"sampling": 0.0}
        original = rollouts.sample_videos

        def timed_sample(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent["sampling"] += time.perf_counter() - start

        rollouts.sample_videos = timed_sample
        try:
            total = _timed(lambda: ev.evaluate_model(cfg, model, tok, out_dir=f"{tmp}/out"))
        finally:
            rollouts.sample_videos = original
    return {"total_s": total, "sampling_s": spent["sampling"], "metrics_s": total - spent["sampling"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="< 2 min: 32 clips, N=16 evaluation with 2x drift")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    n_clips, n_eval, drift = (32, 16, [2]) if args.quick else (128, 256, [2, 4])
    clips = _clips(n_clips)
    batched, single = bench_extractor(clips)
    flow = _rate(lambda: batch_flow_consistency(clips[:16]), 16, repeats=1)
    ev = bench_evaluation(n_eval, drift)
    print(f"synthc3d features: {batched:.1f} clips/s batched(32), {single:.1f} clips/s one at a time "
          f"({n_clips} clips of 17x64x64, {args.threads} thread)")
    print(f"flow consistency: {flow:.2f} videos/s (17 frames, 64x64)")
    print(f"evaluate_model N={n_eval} drift={drift}: {ev['total_s']:.1f} s total, {ev['sampling_s']:.1f} s sampling"
          f"+decode, {ev['metrics_s']:.1f} s real stats + metrics + files")
    print(f"RATIO synthc3d_batched_over_unbatched {batched / single:.2f}")
    print(f"RATIO eval_seconds_per_video_N{n_eval} {ev['total_s'] / n_eval:.3f}")
    print(f"RATIO eval_sampling_share {ev['sampling_s'] / ev['total_s']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
