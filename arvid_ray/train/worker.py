"""The Ray Train worker: dataset shard → batches, device placement, gradient sync, reporter, checkpoints.

Design trade-off: the objectives call model methods other than ``forward`` (``condition``, ``prefill``,
``forward_with_cache`` for the no-grad Local Opt. prefix), which a DistributedDataParallel wrapper neither
exposes nor sees — its reducer only syncs gradients produced through ``DDP.forward``. So the model is placed
with ``ray.train.torch.prepare_model(parallel_strategy=None)`` and gradients are averaged with one flat
all-reduce per optimizer step (after accumulation), which is exactly what DDP + ``no_sync`` computes, minus
DDP's bucketed compute/communication overlap (irrelevant at the model sizes trained on CPU; revisit for
large GPU runs). Everything else is the plain ``train_loop``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arvid_ray.config import ExperimentConfig
from arvid_ray.tracking import Tracker
from arvid_ray.train import checkpoint as ckpt
from arvid_ray.train.loop import SaveFn, cycle, train_loop

log = logging.getLogger(__name__)

__all__ = ["train_worker", "allreduce_grads", "collate_tokens", "epoch_batches", "RayReporter", "FAIL_MARKER"]

FAIL_MARKER = "fail_at_step.injected"
FinalHook = Callable[..., dict[str, float]]  # (cfg, model, *, tracker, out_dir) -> metrics


def allreduce_grads(model: torch.nn.Module) -> None:
    """Average gradients over the process group with one flat all-reduce (missing grads count as 0)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


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
    follows a checkpoint, or ``train.report_interval_s`` has passed since the previous Ray report (on
    any rank: the ranks agree with one tiny all-reduce, because Ray's report is a collective)."""

    rank: int
    tracker: Tracker | None
    total_steps: int = 0
    interval_s: float = 0.0
    _last: float = field(default_factory=time.monotonic)
    _after_checkpoint: bool = False

    def _due(self, step: int, metrics: dict[str, float], save: SaveFn | None) -> bool:
        # the report after a checkpoint always goes out too: it blocks until the controller has taken the
        # checkpoint's result (queue of 1), so a crash right after saving still restarts from it
        if save is not None or self._after_checkpoint or "eval/val_ce" in metrics or step >= self.total_steps:
            self._after_checkpoint = save is not None
            return True
        due = time.monotonic() - self._last >= self.interval_s
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flag = torch.tensor([1.0 if due else 0.0])
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            due = bool(flag.item() > 0)
        return due

    def report(self, step: int, metrics: dict[str, float], save: SaveFn | None) -> None:
        import ray.train

        if self.tracker is not None:
            self.tracker.log_metrics(metrics, step)
        if not self._due(step, metrics, save):
            return
        self._last = time.monotonic()
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


def epoch_batches(shard, cfg: ExperimentConfig, train: bool, fixed_rows: bool) -> Callable[[int], Iterator[dict]]:
    """Epoch → batches of ``shard`` (a Ray ``DataIterator``: this worker's shard of a dataset).

    The first complete pass streams from Ray Data; if the shard fits ``data.worker_cache_mb`` and its
    rows are the same every pass (``fixed_rows``: a token cache — not clips tokenized on the fly with
    random starts; validation always), later passes replay it from memory, reshuffled per epoch
    for training — a Ray Data re-execution per epoch costs seconds of stall that small datasets pay
    every few dozen steps. Caching pins each worker to the rows of its first pass (like a sharded
    sampler without a global reshuffle).
    """
    limit = cfg.data.worker_cache_mb * 2**20
    cacheable = limit > 0 and (not train or fixed_rows)
    cached: dict[str, np.ndarray] | None = None  # the shard's rows, column by column

    def stream(epoch: int) -> Iterator[dict[str, np.ndarray]]:
        shuffle = cfg.data.shuffle_buffer if train and cfg.data.shuffle_buffer > 0 else None
        return iter(
            shard.iter_batches(
                batch_size=cfg.data.batch_size,
                prefetch_batches=cfg.data.prefetch_batches,
                batch_format="numpy",
                drop_last=train,
                local_shuffle_buffer_size=shuffle,
                local_shuffle_seed=(cfg.experiment.seed + epoch) if shuffle else None,
            )
        )

    def epoch_iter(epoch: int) -> Iterator[dict]:
        nonlocal cached
        if cached is not None:
            yield from _replay(cached, cfg.data.batch_size, cfg.experiment.seed + epoch if train else None, train)
            return
        kept: list[dict[str, np.ndarray]] | None = [] if cacheable else None
        size = 0
        for batch in stream(epoch):
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


def _replay(rows: dict[str, np.ndarray], batch_size: int, seed: int | None, drop_last: bool) -> Iterator[dict]:
    """Re-batch cached rows: in a seeded permutation (``seed``) or in their original order (None)."""
    n = len(next(iter(rows.values())))
    order = np.random.default_rng(seed).permutation(n) if seed is not None else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
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
    device = ray.train.torch.get_device() if cfg.train.use_gpu else torch.device("cpu")
    tracker = None
    if rank == 0:
        tracker = Tracker(cfg, run_dir)
        tracker.start(run_name=cfg.train.run_name, resume_by_name=True)
        tracker.log_config()
    restore, tmp = _restore_dir()
    if restore is not None and rank == 0:
        log.info("attempt resumes from %s", restore)
    val = _shard_batches("val", cfg, train=False, fixed_rows=True) if config.get("has_val") else None
    try:
        result = train_loop(
            cfg,
            cycle(_shard_batches("train", cfg, train=True, fixed_rows=bool(config.get("fixed_train_rows")))),
            reporter=RayReporter(rank, tracker, cfg.train.steps, cfg.train.report_interval_s),
            val_batches=(lambda: val(0)) if val else None,
            rank=rank,
            world_size=world,
            device=device,
            wrap_model=lambda m: ray.train.torch.prepare_model(m, parallel_strategy=None),
            grad_sync=allreduce_grads,
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
