"""The Ray Train worker: dataset shard, device, reporter, checkpoints around the plain loop.

Design trade-off: the worker only wires Ray to ``train_loop`` — data parallelism (DDP or FSDP2) is applied
inside the loop by ``parallel.parallelize`` from the process group Ray Train created, so the same code
runs in-process, under ``torch.multiprocessing`` and on a Ray cluster. Nothing here runs a collective:
Ray's own report is the only cross-rank agreement, and when to report is a pure function of the step
number (identical on every rank), because a collective on a CPU tensor fails under NCCL-only process
groups ("No backend type associated with device type cpu") and every extra collective is a sync point.
Turning the shard into epochs of batches (and caching it) is ``arvid_ray.train.batches``.
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

import torch

from arvid_ray.config import ExperimentConfig
from arvid_ray.tracking import Tracker
from arvid_ray.train import checkpoint as ckpt
from arvid_ray.train.batches import collate_tokens, epoch_batches
from arvid_ray.train.cost import COST_UNIT_TAG, cost_unit, detect_accelerator
from arvid_ray.train.loop import SaveFn, cycle, train_loop

log = logging.getLogger(__name__)

# collate_tokens and epoch_batches live in arvid_ray.train.batches; importable from here as before
__all__ = ["train_worker", "collate_tokens", "epoch_batches", "RayReporter", "FAIL_MARKER"]

FAIL_MARKER = "fail_at_step.injected"
FinalHook = Callable[..., dict[str, float]]  # (cfg, model, *, tracker, out_dir) -> metrics


@dataclass
class RayReporter:
    """Every rank calls ``report`` at the same steps; rank 0 logs each to MLflow/JSONL, and all ranks
    pass it on to ``ray.train.report`` when it carries a checkpoint or a validation, is the last step,
    follows a checkpoint, or is the first report at or after a multiple of ``every`` steps
    (``train.report_every``). Ray's report is a collective, so the ranks must agree: they do by
    construction (the step number is the same everywhere), with no collective of our own. Rank 0 adds to
    a report it sends anyway the next evaluation during training that has ended (``quality/*`` with its
    checkpoint's ``quality/step``; each once, in step order), for Tune only — ASHA prunes on it with sweep.prune_on=quality; the
    tracker has it already, logged by the evaluation at the checkpoint's step."""

    rank: int
    tracker: Tracker | None
    total_steps: int = 0
    every: int = 1
    eval_every: int = 0
    quality: Any = None  # rank 0's evaluate.during.QualityWatch when eval.quality_every > 0
    _last_step: int = 0
    _after_checkpoint: bool = False

    def _due(self, step: int, metrics: dict[str, float], save: SaveFn | None) -> bool:
        # the report after a checkpoint always goes out too: it blocks until the controller has taken the
        # checkpoint's result (queue of 1), so a crash right after saving still restarts from it
        # from the cadence, not from the metrics: a rank with an empty validation shard logs no eval/val_ce
        evaluated = self.eval_every > 0 and step % self.eval_every == 0
        last = step >= self.total_steps or metrics.get("train/budget_stop", 0.0) > 0
        if save is not None or self._after_checkpoint or evaluated or last:
            self._after_checkpoint = save is not None
            return True
        return step // self.every > self._last_step // self.every

    def report(self, step: int, metrics: dict[str, float], save: SaveFn | None) -> None:
        import ray.train

        if self.tracker is not None:
            self.tracker.log_metrics(metrics, step)
        if self.quality is not None:
            self.quality.poll()  # collects ended evaluations; never waits
        if not self._due(step, metrics, save):
            return
        self._last_step = step
        if self.rank == 0 and self.quality is not None and (point := self.quality.take()) is not None:
            metrics = {**metrics, **point}  # to Ray/Tune only: rank 0's metrics are what Tune sees
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
        if self.quality is not None:  # persisted by now: the evaluator reads it from storage
            self.quality.after_checkpoint(step, metrics)


def _shard_batches(name: str, cfg: ExperimentConfig, train: bool, fixed_rows: bool) -> Callable[[int], Iterator[dict]]:
    """This worker's shard of dataset ``name`` as epochs of batches (``batches.epoch_batches``)."""
    import ray.train

    return epoch_batches(ray.train.get_dataset_shard(name), cfg, train, fixed_rows)


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
    "run_dir": local run directory (metrics.jsonl, fault marker), "final_hook": optional callable,
    "quality_watch": optional factory (cfg, run_id, tracker) -> evaluate.during.QualityWatch}."""
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
        tracker.set_tags({COST_UNIT_TAG: cost_unit(detect_accelerator(cfg.cost.accelerator, use_gpu=on_gpu))})
    restore, tmp = _restore_dir()
    if restore is not None and rank == 0:
        source = getattr(ray.train.get_checkpoint(), "path", restore)  # where in Train storage it came from
        log.info("attempt resumes from %s", source)
        if tracker is not None:  # visible in MLflow: this run survived a restart (lost node, preemption)
            tracker.set_tags({"arvid.resumed_from": str(source)})
    val = _shard_batches("val", cfg, train=False, fixed_rows=True) if config.get("has_val") else None
    quality = None  # evaluations during training (eval.quality_every), submitted by rank 0
    if rank == 0 and config.get("quality_watch") is not None:
        quality = config["quality_watch"](cfg, tracker.run_id if tracker is not None else None, tracker)
        resumed = ckpt.checkpoint_step(source) if restore is not None else None
        if resumed is not None:  # the evaluations the previous attempt's rank 0 took down with it
            quality.recover(resumed)
    try:
        result = train_loop(
            cfg,
            cycle(_shard_batches("train", cfg, train=True, fixed_rows=bool(config.get("fixed_train_rows")))),
            reporter=RayReporter(rank, tracker, cfg.train.steps, cfg.train.report_every, cfg.train.eval_every,
                                 quality=quality),
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
    if quality is not None:  # after the last step: Ray ends a task with its owner, so let them land
        quality.finish()
    if tracker is not None:
        tracker.end("FINISHED")
    log.info("rank %d finished %d steps", rank, len(result.steps))
