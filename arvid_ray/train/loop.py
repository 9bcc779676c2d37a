"""The training loop: a plain function over a plain iterator, in one process, on CPU or one GPU.

Design trade-off: nothing distributed lives here — ``parallel.parallelize`` applies DDP or FSDP2 (and
compile, activation checkpointing) to the model when a process group of >= 2 ranks exists, and a
``Reporter`` receives metrics and a "save a checkpoint here" callback at the cadence points. The single-process path
(``LocalReporter``) writes metrics to the run directory / MLflow and checkpoints to
``<run_dir>/checkpoints/step_*``; the Ray worker plugs in ``ray.train.report``. The same loop therefore
runs in unit tests, in ``train.num_workers=0`` and on every Ray Train rank, and every rank reaches the
same cadence points (Ray requires the same number of reports on every rank).

What one rank trains with (model, optimizer, scheduler, cost meter, weight average) and how a checkpoint
is restored into it live in ``setup.py``; the seekable data position (``Cycle``) in ``epochs.py``.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from arvid_ray.config import ExperimentConfig
from arvid_ray.tracking import Tracker
from arvid_ray.train import checkpoint as ckpt
from arvid_ray.train.cost import CostMeter
from arvid_ray.train.epochs import Cycle, cycle
from arvid_ray.train.setup import SaveFn, _Run, _setup, _to_device, build_training_model, vocab_size
from arvid_ray.train.step import grad_accum_steps, train_step, window_seed

log = logging.getLogger(__name__)

__all__ = ["Reporter", "LocalReporter", "LoopResult", "Cycle", "cycle", "train_loop", "build_training_model",
           "vocab_size"]



class Reporter(Protocol):
    """Receives metrics at every cadence point; ``save`` (when not None) writes this rank's checkpoint."""

    def report(self, step: int, metrics: dict[str, float], save: SaveFn | None) -> None: ...


@dataclass
class LocalReporter:
    """Single-process reporter: metrics to a Tracker (JSONL + MLflow), checkpoints under ``ckpt_root``."""

    tracker: Tracker
    ckpt_root: Path
    keep: int = 2
    history: list[dict[str, float]] = field(default_factory=list)
    quality: Any = None  # evaluate.during.QualityWatch (inline) when eval.quality_every > 0

    def report(self, step: int, metrics: dict[str, float], save: SaveFn | None) -> None:
        self.history.append({"step": step, **metrics})
        self.tracker.log_metrics(metrics, step)
        if save is None:
            return
        save(Path(self.ckpt_root) / ckpt.checkpoint_name(step))
        if self.quality is not None:
            self.quality.after_checkpoint(step, metrics, str(Path(self.ckpt_root) / ckpt.checkpoint_name(step)))
        kept = sorted(p for p in Path(self.ckpt_root).glob("step_*") if p.is_dir())
        for old in kept[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)


@dataclass
class LoopResult:
    steps: list[int]
    losses: list[float]
    metrics: dict[str, float]
    model: torch.nn.Module
    start_step: int = 0


def _check_on_host(model: torch.nn.Module, batch: dict) -> None:
    """Token and label ranges, checked before the batch moves to the device (free on the host; inside the
    model each check would be a device→host read per call)."""
    if isinstance(batch.get("tokens"), torch.Tensor):
        model.check_tokens(batch["tokens"])
    check_labels = getattr(model.conditioner, "check_labels", None)
    if check_labels is not None and isinstance(batch.get("label"), torch.Tensor):
        check_labels(batch["label"])


def _next(it: Iterator[dict], meter: CostMeter, step: int) -> dict:
    try:
        return meter.timed_next(it)
    except StopIteration:
        raise ValueError(
            f"the training batch iterator ran out at step {step}; pass an iterator that cycles "
            f"epochs (e.g. arvid_ray.train.loop.cycle) or lower train.steps"
        ) from None


def _put_val(metrics: dict[str, float], value: float) -> None:
    """eval/val_ce only when there was validation data (a NaN would read as a broken run)."""
    if math.isfinite(value):
        metrics["eval/val_ce"] = value


def _cadence(step: int, cfg: ExperimentConfig, last: bool) -> tuple[bool, bool, bool]:
    """(log, eval, checkpoint) at the end of 1-based optimizer step ``step`` (``last``: the run ends there)."""
    t = cfg.train
    return (
        step % t.log_every == 0 or last,
        (t.eval_every > 0 and step % t.eval_every == 0) or last,
        (t.ckpt_every > 0 and step % t.ckpt_every == 0) or last,
    )


def _budget_spent(run: _Run) -> bool:
    """Has the run spent train.budget_gpu_hours? Every rank gets the same answer (the largest cost of any
    rank decides), so every rank stops at the same step and makes the same reports."""
    budget = run.cfg.train.budget_gpu_hours
    if budget <= 0:
        return False
    spent = run.meter.gpu_hours() >= budget
    if run.meter.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        flag = torch.tensor([1.0 if spent else 0.0], device=run.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        spent = bool(flag.item() > 0)
    return spent


def _window_means(window: list[dict[str, float]]) -> dict[str, float]:
    out = {}
    for key in ("loss", "ce", "reco"):
        vals = [w[key] for w in window if key in w]
        if vals:
            out[f"train/{key}"] = sum(vals) / len(vals)
    return out


def train_loop(
    cfg: ExperimentConfig,
    batches: Iterator[dict],
    *,
    reporter: Reporter | None = None,
    val_batches: Callable[[], Iterable[dict]] | None = None,
    rank: int = 0,
    world_size: int = 1,
    device: str | torch.device | None = None,
    resume_from: str | Path | None = None,
    on_step_end: Callable[[int], None] | None = None,
    final_hook: Callable[[ExperimentConfig, torch.nn.Module], dict[str, float]] | None = None,
) -> LoopResult:
    """Train ``cfg.train.steps`` optimizer steps from ``batches`` (micro-batches of data.batch_size).

    With a process group of ``world_size`` >= 2 ranks initialised, the model is trained data-parallel
    (``train.parallelism``). Resuming from a checkpoint restores model, optimizer, scheduler, RNG, cost
    totals and the data position (seeking a ``Cycle``, see the module docstring), so the following losses
    equal an uninterrupted run's when the source can seek. ``final_hook``
    (rank 0, e.g. the final evaluation) adds metrics to the last report: code after the last report may
    never run under Tune.
    """
    run = _setup(cfg, batches, rank, world_size, device, resume_from)
    accum = grad_accum_steps(cfg, world_size)
    log.info(
        "rank %d: training %s (%.2fM params) steps %d..%d, accumulation %d, device %s",
        rank,
        cfg.objective.kind,
        run.inner.num_params / 1e6,
        run.start + 1,
        cfg.train.steps,
        accum,
        run.device,
    )
    steps, losses, window, metrics = [], [], [], {}
    first = cfg.train.steps + 1 if run.start and _budget_spent(run) else run.start + 1  # resumed at its budget
    for step in range(first, cfg.train.steps + 1):
        micro = [_next(batches, run.meter, step) for _ in range(accum)]
        for batch in micro:
            _check_on_host(run.inner, batch)
        micro = [_to_device(batch, run.device) for batch in micro]
        t0 = time.perf_counter()
        res = train_step(
            run.module,
            run.optimizer,
            run.scheduler,
            micro,
            grad_clip=cfg.train.grad_clip,
            autocast=run.autocast,
            # every rank draws the same window start for micro-batch i of this step
            before_micro=lambda i, step=step: run.loss.window_generator.manual_seed(
                window_seed(cfg.experiment.seed, step, i)),
        )
        if run.ema is not None:
            run.ema.update_parameters(run.inner)  # first call copies, then e = d*e + (1-d)*w
        elapsed = time.perf_counter() - t0
        for out, bs, clip_tokens in res.micro:
            run.meter.add_step(elapsed / len(res.micro), out, bs, clip_tokens)
        run.meter.end_optimizer_step()
        run.position += accum
        steps.append(step)
        losses.append(res.scalars["loss"])
        window.append(res.scalars)
        if on_step_end is not None:
            on_step_end(step)
        by_budget = step < cfg.train.steps and _budget_spent(run)
        last = by_budget or step == cfg.train.steps
        do_log, do_eval, do_ckpt = _cadence(step, cfg, last)
        if not (do_log or do_eval or do_ckpt):
            continue
        metrics = {
            "step": float(step),
            "train/lr": res.lr,
            "train/grad_norm": res.grad_norm,
            **_window_means(window),
            **run.meter.metrics(),
        }
        # time left for the remaining optimizer steps at the recent pace (excludes evaluations), or for the
        # rest of the budget
        metrics["train/eta_s"] = (cfg.train.steps - step) * metrics["train/step_time_s"]
        if cfg.train.budget_gpu_hours > 0:
            left_s = (cfg.train.budget_gpu_hours - metrics["cost/gpu_hours"]) * 3600.0 / run.meter.devices()
            metrics["train/eta_s"] = max(0.0, min(metrics["train/eta_s"], left_s))
        if by_budget:
            metrics["train/budget_stop"] = 1.0  # the last step: the reporters and the tracker end here too
        window = []
        if do_eval and val_batches is not None:
            _put_val(metrics, run.validate(val_batches))
        if last and final_hook is not None:
            plain = run.plain_model()  # every rank: gathering shards is a collective
            if rank == 0:
                metrics.update(final_hook(cfg, plain))
        if reporter is not None:
            reporter.report(step, metrics, run.save_fn(step, batches) if do_ckpt else None)
        if rank == 0:
            log.info(
                "step %d/%d loss %.4f %s",
                step,
                cfg.train.steps,
                metrics.get("train/loss", float("nan")),
                f"val_ce {metrics['eval/val_ce']:.4f}" if "eval/val_ce" in metrics else "",
            )
        if by_budget:
            if rank == 0:
                log.info("training cost %.4g accelerator-hours reached train.budget_gpu_hours=%g at step %d of %d",
                         metrics["cost/gpu_hours"], cfg.train.budget_gpu_hours, step, cfg.train.steps)
            break
    if not steps and reporter is not None:  # resumed a finished run: one report so Ray gets a result
        metrics = {"step": float(run.start)}
        if val_batches is not None:
            _put_val(metrics, run.validate(val_batches))
        reporter.report(run.start, metrics, None)
    if rank == 0:
        log.info("cost: %s", run.meter.summary())
    return LoopResult(steps=steps, losses=losses, metrics=metrics, model=run.inner, start_step=run.start)
