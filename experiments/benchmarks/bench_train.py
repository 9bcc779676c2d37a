"""Throughput of the Ray Train path vs the same loop on a plain in-memory iterator, side by side.

Both paths train the same debug model, same objective, same micro-batches, one CPU thread each: the
in-process run iterates a Python list; the Ray run is a TorchTrainer with one CPU worker that streams the
same rows from a Ray Dataset. Both run several epochs (the dataset is a third of the steps) and report
every 10 steps, as real runs do, so the per-epoch data restart and the per-report cost are inside the
measurement. Throughput is wall-clock over the second half of each run — tokens consumed between the
report at half-time and the last one, divided by the wall time between them (``cost/tokens`` and
``cost/wall_time_s`` from each run's metric history) — so start-up is excluded from the steady state
but printed separately. Data-wait is the loop's own measure over the same half. The in-process run goes
before and after the Ray run and the two are averaged, so drifting load does not bias the ratio. On a
machine with CUDA, ``--mfu`` also measures MFU of preset B for `full` and `local` in-process (bf16).

    python experiments/benchmarks/bench_train.py --quick      # < 2 min on a 2-core CPU
Ends with ``RATIO <name> <value>`` lines.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time

import numpy as np
import torch

from arvid_ray.config import ExperimentConfig
from arvid_ray.train.loop import cycle, train_loop


def base_config(steps: int, workdir: str) -> ExperimentConfig:
    return ExperimentConfig().replace(
        **{
            "experiment.name": "bench-train",
            "experiment.workdir": workdir,
            "data.num_frames": 17,
            "data.resolution": 64,
            "data.batch_size": 8,
            "data.shuffle_buffer": 0,
            "data.prefetch_batches": 4,
            "train.global_batch_size": 8,
            "train.steps": steps,
            "train.log_every": 10,
            "train.ckpt_every": 0,
            "train.warmup_steps": 2,
            "train.num_workers": 1,
            "train.cpus_per_worker": 1.0,
            "train.val_batches": 1,
            "tracking.enabled": False,
            "train.storage_path": os.path.join(workdir, "runs"),
        }
    )


def token_rows(n: int, shape: tuple[int, int, int], seed: int = 0) -> list[dict]:
    """Class-patterned token grids (what a tokens.parquet cache holds), as plain rows."""
    rng = np.random.default_rng(seed)
    t, i, j = np.ogrid[: shape[0], : shape[1], : shape[2]]
    rows = []
    for k in range(n):
        label = int(rng.integers(16))
        tokens = ((label * 37 + t * 5 + i * 3 + j + rng.integers(0, 2, shape)) % 1000).astype(np.int32)
        rows.append({"tokens": tokens, "label": label, "caption": "", "video_id": f"v{k}", "clip_start": 0})
    return rows


def steady_state(history: list[dict[str, float]]) -> dict[str, float]:
    """Wall-clock throughput and data-wait over the second half of a run's metric history."""
    last = history[-1]
    mid = min(history, key=lambda m: abs(m["step"] - last["step"] / 2))
    wall = last["cost/wall_time_s"] - mid["cost/wall_time_s"]
    window = [m for m in history if mid["step"] < m["step"] <= last["step"]]
    steps = last["step"] - mid["step"]
    wait = sum(m["train/data_wait_frac"] * m["train/step_time_s"] for m in window) * 10  # 10 steps per report
    return {
        "tokens_per_s": (last["cost/tokens"] - mid["cost/tokens"]) / wall,
        "data_wait_frac": wait / wall,
        "s_per_step": wall / steps,
        "startup_s": mid["cost/wall_time_s"] - mid["step"] * wall / steps,
    }


class _Recorder:
    def __init__(self):
        self.history: list[dict[str, float]] = []

    def report(self, step, metrics, save) -> None:
        self.history.append(dict(metrics))


def run_in_process(cfg: ExperimentConfig, rows: list[dict]) -> dict[str, float]:
    from arvid_ray.train.worker import collate_tokens

    bs = cfg.data.batch_size
    batches = [
        collate_tokens({k: np.stack([r[k] for r in rows[i : i + bs]]) for k in ("tokens", "label")})
        for i in range(0, len(rows) - bs + 1, bs)
    ]
    rec = _Recorder()
    t0 = time.perf_counter()
    train_loop(cfg, cycle(lambda epoch: iter(batches)), device="cpu", reporter=rec)
    return {**steady_state(rec.history), "wall_s": time.perf_counter() - t0}


def run_ray(cfg: ExperimentConfig, rows: list[dict]) -> dict[str, float]:
    import ray

    from arvid_ray.launch import launch
    from arvid_ray.tracking import read_metrics_jsonl

    if not ray.is_initialized():
        ray.init(
            num_cpus=4,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}},
        )
    datasets = {"train": ray.data.from_items(rows), "val": ray.data.from_items(rows[:8])}
    t0 = time.perf_counter()
    result = launch(cfg, datasets=datasets)
    history = [m for m in read_metrics_jsonl(result.run_dir) if "cost/wall_time_s" in m]
    return {**steady_state(history), "wall_s": time.perf_counter() - t0}


def _final_mfu(cfg: ExperimentConfig, rows: list[dict]) -> float:
    from arvid_ray.train.worker import collate_tokens

    bs = cfg.data.batch_size
    batches = [collate_tokens({k: np.stack([r[k] for r in rows[i : i + bs]]) for k in ("tokens", "label")})
               for i in range(0, len(rows) - bs + 1, bs)]
    return train_loop(cfg, cycle(lambda epoch: iter(batches)), device="cpu" if not torch.cuda.is_available()
                      else "cuda").metrics["cost/mfu"]


def run_mfu(steps: int, workdir: str) -> dict[str, float]:
    out = {}
    for kind in ("full", "local"):
        cfg = base_config(steps, workdir).replace(
            **{
                "model.preset": "B",
                "objective.kind": kind,
                "data.batch_size": 16,
                "train.global_batch_size": 16,
                "cost.accelerator": "auto",
            }
        )
        rows = token_rows(64, cfg.latent_shape())
        out[kind] = _final_mfu(cfg, rows) if torch.cuda.is_available() else float("nan")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short run (< 2 min on a 2-core CPU)")
    p.add_argument("--mfu", action="store_true", help="also measure MFU at preset B on CUDA")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    steps = 60 if args.quick else 240  # the steady-state window is the second half
    with tempfile.TemporaryDirectory(prefix="bench-train-") as workdir:
        cfg = base_config(steps, workdir)
        rows = token_rows(8 * steps // 3, cfg.latent_shape())  # ~3 epochs: the epoch restarts are measured
        before = run_in_process(cfg, rows)
        ray_m = run_ray(cfg, rows)
        after = run_in_process(cfg, rows)  # before/after mean cancels load drift on a shared machine
        local = {k: (before[k] + after[k]) / 2 for k in before if k in after}
        mfu = run_mfu(steps, workdir) if args.mfu else {}
    shape = cfg.latent_shape()
    print(
        f"debug model, objective={cfg.objective.kind}, tokens/clip={shape[0] * shape[1] * shape[2]}, "
        f"batch={cfg.data.batch_size}, steps={steps}, {len(rows)} rows (~{8 * steps / len(rows):.0f} epochs), "
        f"report every {cfg.train.log_every} steps; steady state = wall clock over the second half"
    )
    for name, m in (("in-process (list)", local), ("Ray Train 1 CPU worker", ray_m)):
        print(
            f"{name:>24}: {m['tokens_per_s']:9.0f} tok/s, data-wait {m['data_wait_frac']:.2%}, "
            f"{m['s_per_step'] * 1e3:.1f} ms/step, start-up {m['startup_s']:.1f}s, wall {m['wall_s']:.1f}s"
        )
    print(f"RATIO ray_vs_inprocess_tokens_per_s {ray_m['tokens_per_s'] / local['tokens_per_s']:.3f}")
    print(f"RATIO ray_data_wait_frac {ray_m['data_wait_frac']:.4f}")
    print(f"RATIO ray_vs_inprocess_wall_s {ray_m['wall_s'] / local['wall_s']:.3f}")
    for kind, value in mfu.items():
        print(f"RATIO mfu_B_{kind} {value:.4f}")


if __name__ == "__main__":
    main()
