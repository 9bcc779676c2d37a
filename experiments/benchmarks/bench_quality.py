"""Does evaluating checkpoints during training (``eval.quality_every``) hold up the training steps?

Side by side in one Ray session: the same Ray Train run (one CPU worker, synthetic pattern tokens at the
quality extractor's clip length, a checkpoint every 10 steps) without and with an evaluation of every
checkpoint — a Ray task of its own (``eval.quality_cpus``) that reads the checkpoint from storage and
logs its point into the run. The training steps' own times (``train/step_time_s``, logged every step)
are compared: median and 90th percentile over the steps after warm-up, and the evaluations' wall time
(``quality/eval_s``). The runs alternate (without, with, without) so drifting load hits both.

On a machine whose CPUs the evaluator shares with training (this 2-core box: 1 training thread, the
evaluator 1 CPU) the p90 shows contention, which a cluster avoids by giving the evaluator its own
resources; the median shows whether the training thread itself ever waits for an evaluation.

    python experiments/benchmarks/bench_quality.py --quick    # < 2 min on a 2-core CPU
Ends with ``RATIO <name> <value>`` lines.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _datasets(n_train: int, n_val: int):
    import ray.data

    def rows(n, seed):
        rng = np.random.default_rng(seed)
        t, i, j = np.ogrid[:5, :4, :4]
        return [{"tokens": ((int(y) * 37 + t * 5 + i * 3 + j) % 1000).astype(np.int32), "label": int(y),
                 "caption": f"clip {k}", "video_id": f"v{k}", "clip_start": 0}
                for k, y in enumerate(rng.integers(16, size=n))]

    return {"train": ray.data.from_items(rows(n_train, 0)), "val": ray.data.from_items(rows(n_val, 1))}


def _run(root: Path, name: str, steps: int, quality_every: int, videos: int) -> dict:
    from mlflow import MlflowClient

    from arvid_ray.config import ExperimentConfig
    from arvid_ray.launch import launch

    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = ExperimentConfig().replace(**{
        "experiment.name": "bench-quality", "experiment.workdir": str(root / "work"),
        "data.num_frames": 17, "data.resolution": 32, "data.batch_size": 4, "data.shuffle_buffer": 8,
        "train.global_batch_size": 4, "train.num_workers": 1, "train.cpus_per_worker": 1.0,
        "train.steps": steps, "train.ckpt_every": 10, "train.log_every": 1, "train.report_every": 10,
        "train.val_batches": 1, "train.final_eval": False, "train.storage_path": str(root / "runs"),
        "train.run_name": name, "tracking.uri": uri, "tracking.system_metrics": False,
        "eval.quality_every": quality_every, "eval.quality_videos": videos, "eval.trajectory_videos": 4,
        "eval.batch_size": videos})
    t0 = time.perf_counter()
    result = launch(cfg, datasets=_datasets(64, 8))
    wall = time.perf_counter() - t0
    client = MlflowClient(uri)
    hist = {m.step: m.value for m in client.get_metric_history(result.mlflow_run_id, "train/step_time_s")}
    evals = [m.value for m in client.get_metric_history(result.mlflow_run_id, "quality/eval_s")]
    times = [hist[s] for s in sorted(hist) if s > 5]  # after warm-up
    return {"median": statistics.median(times), "p90": float(np.percentile(times, 90)), "wall": wall,
            "evals": evals, "steps": len(times)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="40 steps, 8 videos per evaluation (< 2 min)")
    args = ap.parse_args(argv)
    steps, videos = (40, 8) if args.quick else (120, 16)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ray

    ray.init(num_cpus=4, log_to_driver=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    root = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    t0 = time.perf_counter()
    off1 = _run(root, "off-1", steps, 0, videos)
    on = _run(root, "on", steps, 10, videos)
    off2 = _run(root, "off-2", steps, 0, videos)
    ray.shutdown()
    off = {k: (off1[k] + off2[k]) / 2 for k in ("median", "p90", "wall")}
    print(f"without: median step {off['median'] * 1e3:.1f} ms, p90 {off['p90'] * 1e3:.1f} ms "
          f"(runs {off1['median'] * 1e3:.1f} / {off2['median'] * 1e3:.1f} ms), wall {off['wall']:.1f} s")
    print(f"with an evaluation every 10 steps ({len(on['evals'])} evaluations of {videos} videos, "
          f"{statistics.mean(on['evals']):.1f} s each on average): median step {on['median'] * 1e3:.1f} ms, "
          f"p90 {on['p90'] * 1e3:.1f} ms, wall {on['wall']:.1f} s (includes waiting for the last evaluation)")
    print(f"# {steps} steps per run, {on['steps']} timed; bench wall {time.perf_counter() - t0:.0f} s; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"RATIO step_time_with_quality_over_without {on['median'] / off['median']:.3f}")
    print(f"RATIO p90_step_time_with_quality_over_without {on['p90'] / off['p90']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
