"""The Ray Train worker: dataset shard → batches, device, reporter, checkpoints around the plain loop.

Design trade-off: the worker only wires Ray to ``train_loop`` — data parallelism (DDP or FSDP2) is applied
inside the loop by ``parallel.parallelize`` from the process group Ray Train created, so the same code
runs in-process, under ``torch.multiprocessing`` and on a Ray cluster. Nothing here runs a collective:
Ray's own report is the only cross-rank agreement, and when to report is a pure function of the step
number (identical on every rank), because a collective on a CPU tensor fails under NCCL-only process
groups ("No backend type associated with device type cpu") and every extra collective is a sync point.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arvid_ray.config import ExperimentConfig
from arvid_ray.tracking import Tracker
from arvid_ray.train import checkpoint as ckpt
from arvid_ray.train.loop import SaveFn, cycle, train_loop

log = logging.getLogger(__name__)

__all__ = ["train_worker", "collate_tokens", "epoch_batches", "RayReporter", "FAIL_MARKER"]

FAIL_MARKER = "fail_at_step.injected"
FinalHook = Callable[..., dict[str, float]]  # (cfg, model, *, tracker, out_dir) -> metrics


def collate_tokens(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """Ray Data numpy batch → the objective's batch: tokens LongTensor [B, t, h, w], label [B], captions."""
    # np.array copies: Ray hands out read-only views of its object store, which torch warns about
    out: dict[str, Any] = {"tokens": torch.from_numpy(np.array(batch["tokens"], dtype=np.int64))}
    if "label" in batch:
        out["label"] = torch.from_numpy(np.array(batch["label"], dtype=np.int64))
    if "caption" in batch:
        out["caption"] = [str(c) for c in batch["caption"]]
    return out


@dataclass
class RayReporter:
    """Every rank calls ``report`` at the same steps; rank 0 logs each to MLflow/JSONL, and all ranks
    pass it on to ``ray.train.report`` when it carries a checkpoint or a validation, is the last step,
    follows a checkpoint, or is the first report at or after a multiple of ``every`` steps
    (``train.report_every``). Ray's report is a collective, so the ranks must agree: they do by
    construction (the step number is the same everywhere), with no collective of our own."""

    rank: int
    tracker: Tracker | None
    total_steps: int = 0
    every: int = 1
    eval_every: int = 0
    _last_step: int = 0
    _after_checkpoint: bool = False

    def _due(self, step: int, metrics: dict[str, float], save: SaveFn | None) -> bool:
        # the report after a checkpoint always goes out too: it blocks until the controller has taken the
        # checkpoint's result (queue of 1), so a crash right after saving still restarts from it
        # from the cadence, not from the metrics: a rank with an empty validation shard logs no eval/val_ce
        evaluated = self.eval_every > 0 and step % self.eval_every == 0
        if save is not None or self._after_checkpoint or evaluated or step >= self.total_steps:
            self._after_checkpoint = save is not None
            return True
        return step // self.every > self._last_step // self.every

    def report(self, step: int, metrics: dict[str, float], save: SaveFn | None) -> None:
        import ray.train

        if self.tracker is not None:
            self.tracker.log_metrics(metrics, step)
        if not self._due(step, metrics, save):
            return
        self._last_step = step
        if save is None:
            ray.train.report(metrics)
            return
        tmp = Path(tempfile.mkdtemp(prefix=f"arvid-ckpt-r{self.rank}-"))
        try:
            save(tmp)
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(str(tmp)),
                checkpoint_dir_name=ckpt.checkpoint_name(step),
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _shard_batches(name: str, cfg: ExperimentConfig, train: bool, fixed_rows: bool) -> Callable[[int], Iterator[dict]]:
    import ray.train

    return epoch_batches(ray.train.get_dataset_shard(name), cfg, train, fixed_rows)


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


def _fail_hook(cfg: ExperimentConfig, rank: int, world: int, run_dir: Path) -> Callable[[int], None] | None:
    """Test hook: rank 1 (rank 0 if alone) dies at cfg.train.fail_at_step, once per run (marker file)."""
    if cfg.train.fail_at_step < 0 or rank != min(1, world - 1):
        return None
    marker = run_dir / FAIL_MARKER

    def hook(step: int) -> None:
        if step == cfg.train.fail_at_step and not marker.exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"rank {rank} exited at step {step}\n")
            log.warning("fail_at_step: rank %d exits at step %d (first attempt)", rank, step)
            os._exit(1)

    return hook


def _restore_dir() -> tuple[Path | None, Path | None]:
    """The latest checkpoint Ray hands this attempt (downloaded to a local temp dir), if any."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None, None
    tmp = Path(tempfile.mkdtemp(prefix="arvid-restore-"))
    path = Path(checkpoint.to_directory(str(tmp)))
    return path, tmp


def _bind_final_hook(hook: FinalHook | None, tracker: Tracker | None, run_dir: Path):
    """Give the end-of-run hook rank 0's tracker and an output directory inside the run."""
    if hook is None:
        return None
    return lambda cfg, model: hook(cfg, model, tracker=tracker, out_dir=run_dir / "eval")


def train_worker(config: dict[str, Any]) -> None:
    """``train_loop_per_worker`` of the TorchTrainer. ``config``: {"cfg": resolved config dict,
    "run_dir": local run directory (metrics.jsonl, fault marker), "final_hook": optional callable}."""
    import ray.train
    import ray.train.torch

    cfg = ExperimentConfig.from_dict(config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    run_dir = Path(config["run_dir"])
    torch.set_num_threads(max(1, int(cfg.train.cpus_per_worker)))
    # train.device=cpu: GPU-scheduled workers that train on CPU (the fake multi-node test cluster)
    on_gpu = cfg.train.use_gpu and cfg.train.device == "auto"
    device = ray.train.torch.get_device() if on_gpu else torch.device("cpu")
    tracker = None
    if rank == 0:
        tracker = Tracker(cfg, run_dir)
        tracker.start(run_name=cfg.train.run_name, resume_by_name=True)
        tracker.log_config()
    restore, tmp = _restore_dir()
    if restore is not None and rank == 0:
        source = getattr(ray.train.get_checkpoint(), "path", restore)  # where in Train storage it came from
        log.info("attempt resumes from %s", source)
        if tracker is not None:  # visible in MLflow: this run survived a restart (lost node, preemption)
            tracker.set_tags({"arvid.resumed_from": str(source)})
    val = _shard_batches("val", cfg, train=False, fixed_rows=True) if config.get("has_val") else None
    try:
        result = train_loop(
            cfg,
            cycle(_shard_batches("train", cfg, train=True, fixed_rows=bool(config.get("fixed_train_rows")))),
            reporter=RayReporter(rank, tracker, cfg.train.steps, cfg.train.report_every, cfg.train.eval_every),
            val_batches=(lambda: val(0)) if val else None,
            rank=rank,
            world_size=world,
            device=device,
            resume_from=restore,
            on_step_end=_fail_hook(cfg, rank, world, run_dir),
            final_hook=_bind_final_hook(config.get("final_hook"), tracker, run_dir),
        )
    except BaseException:
        if tracker is not None:
            tracker.end("FAILED")
        raise
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if tracker is not None:
        tracker.end("FINISHED")
    log.info("rank %d finished %d steps", rank, len(result.steps))
