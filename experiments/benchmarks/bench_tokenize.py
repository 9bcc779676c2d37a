"""Tokenize throughput: the Ray Data actor-pool stage vs calling the tokenizer directly in one process.

Both sides encode the same decoded clips (synthetic, 17 frames of 64x64) with the same tokenizer
(``tokenizer.name``, default the seeded ``fsq`` architecture) at the same batch size and one
intra-op thread each, side by side in one run. The Ray side is one actor (``tokenizer.concurrency``
= 1), timed from its first output batch to its last after a warm-up pass, so actor start-up and
weight loading (paid once per actor) are printed but not counted.
Prints ``RATIO tokenize_ray_over_direct X`` (target >= 0.8).

    python experiments/benchmarks/bench_tokenize.py [--quick] [--clips N] [--tokenizer NAME]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from arvid_ray.config import ExperimentConfig, SynthConfig
from arvid_ray.tokenizer import load_tokenizer
from arvid_ray.tokens import tokenize
from arvid_ray.video.synthetic import render_video


def time_direct(clips: np.ndarray, cfg: ExperimentConfig) -> float:
    tok = load_tokenizer(cfg.tokenizer)
    bs = cfg.tokenizer.batch_size
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(clips), bs):
            tok.encode(torch.from_numpy(clips[i:i + bs]))
    return len(clips) / (time.perf_counter() - start)


def time_ray(clips: np.ndarray, cfg: ExperimentConfig) -> tuple[float, float]:
    """(clips/s from the first output batch to the last, seconds until the first batch)."""
    import ray

    bs = cfg.tokenizer.batch_size
    ds = ray.data.from_items([{"frames": c, "label": 0, "caption": "", "video_id": str(i), "clip_start": 0}
                              for i, c in enumerate(clips)], override_num_blocks=max(1, len(clips) // bs))
    start, first, n = time.perf_counter(), None, 0
    for batch in tokenize(ds, cfg).iter_batches(batch_size=bs, batch_format="numpy"):
        if first is None:
            first = time.perf_counter()
        else:
            n += len(batch["tokens"])
    return n / (time.perf_counter() - first), first - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small run (< 2 min on a 2-core CPU)")
    p.add_argument("--clips", type=int, default=None)
    p.add_argument("--tokenizer", default="fsq")
    args = p.parse_args(argv)
    n = args.clips or (48 if args.quick else 256)
    torch.set_num_threads(1)  # one core on each side: the actor also runs with OMP_NUM_THREADS=1
    synth = SynthConfig(num_videos=n, num_frames=17, resolution=64)
    clips = np.stack([render_video(i, synth).frames for i in range(min(n, 16))])
    clips = clips[np.arange(n) % len(clips)]  # (N, 17, 64, 64, 3); repeated content, same encode cost
    cfg = ExperimentConfig.from_flat({"tokenizer.name": args.tokenizer, "tokenizer.batch_size": 8,
                                      "tokenizer.concurrency": 1, "data.num_frames": 17})
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    time_ray(clips[: 2 * cfg.tokenizer.batch_size + 1], cfg)  # warm-up: worker imports
    direct, via_ray, startup = [], [], []
    for _ in range(2):  # interleaved, to share background load fairly
        direct.append(time_direct(clips, cfg))
        rate, wait = time_ray(clips, cfg)
        via_ray.append(rate)
        startup.append(wait)
    print(f"clips={n} frames=17 size=64x64 tokenizer={args.tokenizer} batch=8 threads=1 actors=1")
    print(f"direct (one process): {max(direct):.2f} clips/s (runs: {', '.join(f'{x:.2f}' for x in direct)})")
    print(f"ray actor pool:       {max(via_ray):.2f} clips/s (runs: {', '.join(f'{x:.2f}' for x in via_ray)}); "
          f"start-up to first batch {min(startup):.1f}s (not counted)")
    print(f"RATIO tokenize_ray_over_direct {max(via_ray) / max(direct):.3f}")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
