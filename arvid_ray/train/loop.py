"""The training loop: a plain function over a plain iterator, in one process, on CPU or one GPU.

Design trade-off: everything distributed is injected — ``wrap_model`` (DDP via Ray's prepare_model),
``grad_sync`` (an all-reduce when the objective bypasses DDP's forward), and a ``Reporter`` that receives
metrics and a "save a checkpoint here" callback at the cadence points. The single-process path
(``LocalReporter``) writes metrics to the run directory / MLflow and checkpoints to
``<run_dir>/checkpoints/step_*``; the Ray worker plugs in ``ray.train.report``. The same loop therefore
runs in unit tests, in ``train.num_workers=0`` and on every Ray Train rank, and every rank reaches the
same cadence points (Ray requires the same number of reports on every rank).
"""

from __future__ import annotations

import itertools
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from arvid_ray.config import ExperimentConfig
from arvid_ray.tracking import Tracker
from arvid_ray.train import checkpoint as ckpt
from arvid_ray.train.cost import CostMeter
from arvid_ray.train.step import (
    autocast_context,
    build_optimizer,
    build_scheduler,
    grad_accum_steps,
    maybe_compile,
    rank_generator,
    seed_everything,
    train_step,
)

log = logging.getLogger(__name__)

__all__ = ["Reporter", "LocalReporter", "LoopResult", "train_loop", "build_training_model", "vocab_size"]

SaveFn = Callable[[Path], None]


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

    def report(self, step: int, metrics: dict[str, float], save: SaveFn | None) -> None:
        self.history.append({"step": step, **metrics})
        self.tracker.log_metrics(metrics, step)
        if save is None:
            return
        save(Path(self.ckpt_root) / ckpt.checkpoint_name(step))
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


def vocab_size(cfg: ExperimentConfig) -> int:
    """Tokenizer vocabulary: the product of the FSQ levels."""
    return math.prod(int(x) for x in cfg.tokenizer.fsq_levels)


def build_training_model(cfg: ExperimentConfig) -> torch.nn.Module:
    """The model with the same initial weights on every rank (seeded by the experiment seed only)."""
    from arvid_ray.model import build_model

    torch.manual_seed(cfg.experiment.seed)
    return build_model(cfg.model, vocab_size(cfg), cfg.latent_shape())


def _to_device(batch: dict, device: torch.device) -> dict:
    """Move tensors to ``device``; inference-mode tensors (e.g. from a tokenizer) become normal tensors,
    which autograd requires."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            out[k] = v.clone() if v.is_inference() else v
        else:
            out[k] = v
    return out


def _next(it: Iterator[dict], meter: CostMeter, step: int) -> dict:
    try:
        return meter.timed_next(it)
    except StopIteration:
        raise ValueError(
            f"the training batch iterator ran out at step {step}; pass an iterator that cycles "
            f"epochs (e.g. arvid_ray.train.loop.cycle) or lower train.steps"
        ) from None


def cycle(make_iter: Callable[[int], Iterable[dict]], start_epoch: int = 0) -> Iterator[dict]:
    """Chain epochs forever: ``make_iter(epoch)`` gives one epoch's batches (e.g. shuffled by epoch)."""
    for epoch in itertools.count(start_epoch):
        empty = True
        for batch in make_iter(epoch):
            empty = False
            yield batch
        if empty:
            raise ValueError(
                f"epoch {epoch} of the training data is empty; check data.train_split and the dataset"
            )


def _validate(model, objective, val_batches, cfg, device, autocast) -> float:
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for batch in itertools.islice(val_batches(), cfg.train.val_batches):
            with autocast():
                total += float(objective.val_ce(model, _to_device(batch, device)))
            n += 1
    model.train()
    if n == 0:
        log.warning("validation data is empty; eval/val_ce is NaN (check data.val_split)")
        return float("nan")
    return total / n


def _cadence(step: int, cfg: ExperimentConfig) -> tuple[bool, bool, bool]:
    """(log, eval, checkpoint) at the end of 1-based optimizer step ``step``."""
    last = step == cfg.train.steps
    t = cfg.train
    return (
        step % t.log_every == 0 or last,
        (t.eval_every > 0 and step % t.eval_every == 0) or last,
        (t.ckpt_every > 0 and step % t.ckpt_every == 0) or last,
    )


@dataclass
class _Run:
    """Everything one rank trains with; built once by ``_setup``."""

    cfg: ExperimentConfig
    model: torch.nn.Module  # possibly wrapped (prepare_model / torch.compile)
    inner: torch.nn.Module  # the plain model: checkpoints, FLOPs, validation
    objective: Callable
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    device: torch.device
    meter: CostMeter
    rank: int
    start: int = 0
    position: int = 0

    def autocast(self):
        return autocast_context(self.device, self.cfg.train.precision)

    def save_fn(self, step: int) -> SaveFn:
        position = self.position

        def save(directory: Path) -> None:
            ckpt.save_checkpoint(
                directory,
                self.cfg,
                step=step,
                data_position=position,
                model=self.inner,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                rank=self.rank,
                generator=self.generator,
            )

        return save

    def validate(self, val_batches: Callable[[], Iterable[dict]]) -> float:
        return _validate(self.inner, self.objective, val_batches, self.cfg, self.device, self.autocast)


def _setup(
    cfg: ExperimentConfig,
    batches: Iterator[dict],
    rank: int,
    world_size: int,
    device,
    wrap_model,
    resume_from,
) -> _Run:
    from arvid_ray.objectives import build_objective

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = build_training_model(cfg).to(device)
    seed_everything(cfg.experiment.seed, rank)
    generator = rank_generator(cfg.experiment.seed, rank)
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train)
    start, position = 0, 0
    if resume_from is not None:
        state = ckpt.load_checkpoint(
            resume_from,
            cfg,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            rank=rank,
            generator=generator,
        )
        start, position = state.step, state.data_position
        for _ in range(position):  # replay the data order up to the checkpoint
            next(batches)
    wrapped = maybe_compile(wrap_model(model) if wrap_model else model, cfg.train)
    meter = CostMeter(cfg, world_size=world_size, device=str(device), flops_fn=model.forward_flops)
    return _Run(
        cfg,
        wrapped,
        model,
        build_objective(cfg),
        optimizer,
        scheduler,
        generator,
        device,
        meter,
        rank,
        start,
        position,
    )


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
    wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    grad_sync: Callable[[torch.nn.Module], None] | None = None,
    resume_from: str | Path | None = None,
    on_step_end: Callable[[int], None] | None = None,
    final_hook: Callable[[ExperimentConfig, torch.nn.Module], dict[str, float]] | None = None,
) -> LoopResult:
    """Train ``cfg.train.steps`` optimizer steps from ``batches`` (micro-batches of data.batch_size).

    Resuming from a checkpoint restores model, optimizer, scheduler, RNG and skips the micro-batches the
    checkpointed run had consumed, so the following losses equal an uninterrupted run's. ``final_hook``
    (rank 0, e.g. the final evaluation) adds metrics to the last report: code after the last report may
    never run under Tune.
    """
    run = _setup(cfg, batches, rank, world_size, device, wrap_model, resume_from)
    accum = grad_accum_steps(cfg, world_size)
    sync = (lambda: grad_sync(run.inner)) if grad_sync else None
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
    for step in range(run.start + 1, cfg.train.steps + 1):
        micro = [_to_device(_next(batches, run.meter, step), run.device) for _ in range(accum)]
        t0 = time.perf_counter()
        res = train_step(
            run.model,
            run.objective,
            run.optimizer,
            run.scheduler,
            micro,
            run.generator,
            grad_clip=cfg.train.grad_clip,
            autocast=run.autocast,
            grad_sync=sync,
        )
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
        do_log, do_eval, do_ckpt = _cadence(step, cfg)
        if not (do_log or do_eval or do_ckpt):
            continue
        metrics = {
            "step": float(step),
            "train/lr": res.lr,
            "train/grad_norm": res.grad_norm,
            **_window_means(window),
            **run.meter.metrics(),
        }
        # time left for the remaining optimizer steps at the recent pace (excludes evaluations)
        metrics["train/eta_s"] = (cfg.train.steps - step) * metrics["train/step_time_s"]
        window = []
        if do_eval and val_batches is not None:
            metrics["eval/val_ce"] = run.validate(val_batches)
        if step == cfg.train.steps and final_hook is not None and rank == 0:
            metrics.update(final_hook(cfg, run.inner))
        if reporter is not None:
            reporter.report(step, metrics, run.save_fn(step) if do_ckpt else None)
        if rank == 0:
            log.info(
                "step %d/%d loss %.4f %s",
                step,
                cfg.train.steps,
                metrics.get("train/loss", float("nan")),
                f"val_ce {metrics['eval/val_ce']:.4f}" if "eval/val_ce" in metrics else "",
            )
    if not steps and reporter is not None:  # resumed a finished run: one report so Ray gets a result
        metrics = {"step": float(run.start)}
        if val_batches is not None:
            metrics["eval/val_ce"] = run.validate(val_batches)
        reporter.report(run.start, metrics, None)
    if rank == 0:
        log.info("cost: %s", run.meter.summary())
    return LoopResult(steps=steps, losses=losses, metrics=metrics, model=run.inner, start_step=run.start)
