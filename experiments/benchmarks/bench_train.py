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

Data parallelism (``--part parallel``), 2 gloo ranks under ``torch.multiprocessing``, no Ray:
- DDP (``train.parallelism=ddp``: bucketed all-reduce overlapping backward, ``no_sync`` while accumulating)
  vs the old hand-written sync (one flat all-reduce of a copy of every gradient after accumulation, kept
  here as the baseline): tokens/s of the same loss module, optimizer and micro-batches, the two
  interleaved in blocks of steps so drifting load hits both alike.
- FSDP2 vs DDP memory per worker at preset S: the bytes of parameters, gradients and optimizer state a rank
  holds after a step (local shards under FSDP) — exact; plus the growth of peak RSS over the process's
  baseline (noisy on CPU: glibc keeps freed memory), each variant in its own pair of processes.

    python experiments/benchmarks/bench_train.py --quick      # < 2 min on an idle 2-core CPU
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


# ------------------------------------------------------------------------------- data parallelism
def hand_allreduce_grads(model: torch.nn.Module) -> None:
    """The sync this project used before DDP (train/worker.py until issue 14): one flat all-reduce of a
    copy of every gradient after accumulation, missing gradients counted as zeros."""
    import torch.distributed as dist

    params = [p for p in model.parameters() if p.requires_grad]
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def parallel_config(preset: dict) -> ExperimentConfig:
    return ExperimentConfig().replace(**{
        "data.num_frames": 17, "data.resolution": 64, "data.batch_size": 4, "train.global_batch_size": 16,
        "objective.kind": "local", "objective.reco_weight": 0.1, "model.cfg_dropout": 0.1,
        "tracking.enabled": False, **preset,
    })


def _micro(cfg: ExperimentConfig, rank: int, n: int) -> list[dict]:
    g = torch.Generator().manual_seed(100 + rank)
    shape = cfg.latent_shape()
    return [{"tokens": torch.randint(0, 1000, (cfg.data.batch_size, *shape), generator=g),
             "label": torch.randint(0, 16, (cfg.data.batch_size,), generator=g)} for _ in range(n)]


def _dp_setup(cfg: ExperimentConfig, rank: int):
    from arvid_ray.objectives import build_objective
    from arvid_ray.train import parallel
    from arvid_ray.train.loop import build_training_model
    from arvid_ray.train.step import build_optimizer, build_scheduler, rank_generator

    model = build_training_model(cfg)
    loss = parallel.LossModule(model, build_objective(cfg))
    loss.generator, loss.window_generator = rank_generator(0, rank), torch.Generator()
    module = parallel.parallelize(loss, cfg, "cpu")
    opt = build_optimizer(model, cfg.train)
    return model, loss, module, opt, build_scheduler(opt, cfg.train)


def _dp_steps(cfg, state, micro, steps: int, start: int, hand: bool) -> float:
    """Wall seconds of ``steps`` optimizer steps (accumulation 2), the same window seed on both ranks."""
    import torch.distributed as dist

    from arvid_ray.train.step import train_step, window_seed

    model, loss, module, opt, sched = state
    dist.barrier()
    t0 = time.perf_counter()
    for k in range(start, start + steps):
        batches = micro[(2 * k) % len(micro):][:2]
        def seed(i: int, k: int = k) -> None:
            loss.window_generator.manual_seed(window_seed(0, k, i))

        if hand:  # the old path: plain module, accumulate, then one flat all-reduce
            opt.zero_grad(set_to_none=True)
            for i, b in enumerate(batches):
                seed(i)
                (module(b)["loss"] / 2).backward()
            hand_allreduce_grads(model)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
        else:
            train_step(module, opt, sched, batches, grad_clip=1.0, before_micro=seed)
    dist.barrier()
    return time.perf_counter() - t0


def _state_bytes(model: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
    """Bytes of parameters, gradients and optimizer state this rank holds (local shards of DTensors)."""
    def local(t):
        return getattr(t, "_local_tensor", t)

    total = 0
    for p in model.parameters():
        total += local(p).numel() * local(p).element_size()
        if p.grad is not None:
            total += local(p.grad).numel() * local(p.grad).element_size()
    for st in opt.state.values():
        for v in st.values():
            if isinstance(v, torch.Tensor):
                total += local(v).numel() * local(v).element_size()
    return total


def _dp_main(rank: int, world: int, port: int, task: str, args: dict, out: str) -> None:
    import json
    import resource

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    result: dict[str, float] = {}
    try:
        if task == "speed":
            cfg = parallel_config(args["preset"])
            micro = _micro(cfg, rank, 8)
            ddp = _dp_setup(cfg.replace(**{"train.parallelism": "ddp"}), rank)
            hand_cfg = cfg.replace(**{"train.num_workers": 1})
            from arvid_ray.objectives import build_objective
            from arvid_ray.train import parallel as par
            from arvid_ray.train.loop import build_training_model
            from arvid_ray.train.step import build_optimizer, build_scheduler, rank_generator

            model = build_training_model(hand_cfg)
            loss = par.LossModule(model, build_objective(hand_cfg))
            loss.generator, loss.window_generator = rank_generator(0, rank), torch.Generator()
            opt = build_optimizer(model, hand_cfg.train)
            hand = (model, loss, loss, opt, build_scheduler(opt, hand_cfg.train))
            _dp_steps(cfg, ddp, micro, 2, 0, False)  # warm-up: buckets, optimizer state
            _dp_steps(cfg, hand, micro, 2, 0, True)
            times = {"ddp": 0.0, "hand": 0.0}
            for block in range(args["blocks"]):
                for name, state, is_hand in (("ddp", ddp, False), ("hand", hand, True))[:: 1 if block % 2 == 0 else -1]:
                    times[name] += _dp_steps(cfg, state, micro, args["steps"], 2 + block * args["steps"], is_hand)
            tokens = args["blocks"] * args["steps"] * world * 2 * micro[0]["tokens"].numel()
            result = {f"{k}_tokens_per_s": tokens / v for k, v in times.items()}
            result["params"] = float(ddp[0].num_params)
        else:  # memory of one variant, this process pair only
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            cfg = parallel_config({"model.preset": "S", "train.parallelism": task})
            micro = _micro(cfg, rank, 4)
            state = _dp_setup(cfg, rank)
            from arvid_ray.train.step import train_step

            train_step(state[2], state[3], state[4], micro[:2], grad_clip=1.0)
            result = {"state_bytes": float(_state_bytes(state[0], state[3])),
                      "rss_growth_bytes": float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024,
                      "params": float(state[0].num_params)}
        if rank == 0:
            with open(out, "w") as f:
                json.dump(result, f)
    finally:
        dist.destroy_process_group()


def _spawn(task: str, args: dict, workdir: str) -> dict[str, float]:
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = os.path.join(workdir, f"dp-{task}.json")
    mp.spawn(_dp_main, args=(2, port, task, args, out), nprocs=2, join=True)
    with open(out) as f:
        return json.load(f)


def run_parallel(quick: bool, workdir: str) -> None:
    preset = {"model.preset": "S", "model.n_layers": 4, "model.d_model": 256, "model.n_heads": 4}
    speed = _spawn("speed", {"preset": preset, "steps": 3 if quick else 8, "blocks": 2 if quick else 4}, workdir)
    mem = {kind: _spawn(kind, {}, workdir) for kind in ("ddp", "fsdp")}
    print(f"\n2 gloo ranks, 1 thread each, local+ReCo, micro-batch 4 x 5x8x8 tokens, accumulation 2, "
          f"model {speed['params'] / 1e6:.1f}M params")
    for name in ("ddp", "hand"):
        print(f"{'DDP (no_sync, buckets)' if name == 'ddp' else 'old hand sync (flat)':>26}: "
              f"{speed[f'{name}_tokens_per_s']:9.0f} tok/s")
    print(f"preset S ({mem['ddp']['params'] / 1e6:.1f}M params) per worker after one step:")
    for kind, m in mem.items():
        print(f"{kind:>26}: params+grads+optimizer {m['state_bytes'] / 2**20:8.1f} MiB, peak RSS growth "
              f"{m['rss_growth_bytes'] / 2**20:8.1f} MiB")
    print(f"RATIO ddp_over_hand_sync_tokens_per_s {speed['ddp_tokens_per_s'] / speed['hand_tokens_per_s']:.3f}")
    print(f"RATIO fsdp_over_ddp_state_mem_per_worker_S {mem['fsdp']['state_bytes'] / mem['ddp']['state_bytes']:.3f}")
    print(f"RATIO fsdp_over_ddp_rss_growth_per_worker_S "
          f"{mem['fsdp']['rss_growth_bytes'] / max(mem['ddp']['rss_growth_bytes'], 1.0):.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short run (< 2 min on a 2-core CPU)")
    p.add_argument("--mfu", action="store_true", help="also measure MFU at preset B on CUDA")
    p.add_argument("--part", choices=("all", "ray", "parallel", "mfu"), default="all",
                   help="ray: Ray Train vs in-process; parallel: DDP vs hand sync, FSDP vs DDP memory; "
                        "mfu: only the CUDA MFU of preset B (implies --mfu)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    if args.part in ("all", "parallel"):
        with tempfile.TemporaryDirectory(prefix="bench-dp-") as workdir:
            run_parallel(args.quick, workdir)
    if args.part == "parallel":
        return
    if args.part == "mfu":
        with tempfile.TemporaryDirectory(prefix="bench-mfu-") as workdir:
            for kind, value in run_mfu(60 if args.quick else 120, workdir).items():
                print(f"RATIO mfu_B_{kind} {value:.4f}")
        return
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
