"""The training loop: a plain function over a plain iterator, in one process, on CPU or one GPU.

Design trade-off: nothing distributed lives here — ``parallel.parallelize`` applies DDP or FSDP2 (and
compile, activation checkpointing) to the model when a process group of >= 2 ranks exists, and a
``Reporter`` receives metrics and a "save a checkpoint here" callback at the cadence points. The single-process path
(``LocalReporter``) writes metrics to the run directory / MLflow and checkpoints to
``<run_dir>/checkpoints/step_*``; the Ray worker plugs in ``ray.train.report``. The same loop therefore
runs in unit tests, in ``train.num_workers=0`` and on every Ray Train rank, and every rank reaches the
same cadence points (Ray requires the same number of reports on every rank).

Resuming seeks the data instead of replaying it: ``cycle`` returns a ``Cycle`` that knows its position
(epoch, batches into it), the checkpoint records it per rank, and a resumed run opens that epoch at that
offset — exactly, when the source can seek (``make_iter(epoch, skip=k)``: in-memory lists, a worker's
cached shard); a Ray Data stream cannot seek, and its source decides (the worker starts a fresh pass:
no read is wasted, the interrupted epoch's order is not reproduced — Ray Data never guaranteed it).
"""

from __future__ import annotations

import inspect
import itertools
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
from arvid_ray.train import parallel
from arvid_ray.train.cost import CostMeter
from arvid_ray.train.step import (
    autocast_context,
    build_optimizer,
    build_scheduler,
    grad_accum_steps,
    rank_generator,
    seed_everything,
    train_step,
    window_seed,
)

log = logging.getLogger(__name__)

__all__ = ["Reporter", "LocalReporter", "LoopResult", "Cycle", "cycle", "train_loop", "build_training_model",
           "vocab_size"]

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


def vocab_size(cfg: ExperimentConfig) -> int:
    """The tokenizer's vocabulary (``tokenizer_vocab_size``: what evaluation builds the model with too), not
    the product of ``tokenizer.fsq_levels``, which the builtin weights and checkpoints ignore."""
    from arvid_ray.tokenizer import tokenizer_vocab_size

    return tokenizer_vocab_size(cfg.tokenizer)


def build_training_model(cfg: ExperimentConfig) -> torch.nn.Module:
    """The model with the same initial weights on every rank (seeded by the experiment seed only)."""
    from arvid_ray.model import build_model

    vocab = vocab_size(cfg)  # before seeding: reading it may build a tokenizer (which draws random numbers)
    torch.manual_seed(cfg.experiment.seed)
    return build_model(cfg.model, vocab, cfg.latent_shape())


def _to_device(batch: dict, device: torch.device) -> dict:
    """Move tensors to ``device``; inference-mode tensors (e.g. from a tokenizer) become normal tensors,
    which autograd requires. Host tensors are pinned first on CUDA: a copy from pageable memory waits for
    the device's stream (a host sync per micro-batch)."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            if device.type == "cuda" and v.device.type == "cpu":
                v = v.pin_memory()
            v = v.to(device, non_blocking=True)
            out[k] = v.clone() if v.is_inference() else v
        else:
            out[k] = v
    return out


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


def _accepts_skip(make_iter: Callable) -> bool:
    try:
        return "skip" in inspect.signature(make_iter).parameters
    except (TypeError, ValueError):
        return False


class Cycle:
    """Epochs chained forever; ``position()`` is (epoch, batches consumed in it) and ``seek`` reopens there.

    ``make_iter(epoch)`` gives one epoch's batches; if it also takes ``skip``, ``make_iter(epoch, skip=k)``
    must start after the first k batches of that epoch without reading them. Otherwise a seek re-reads
    (and drops) at most one epoch's first batches — never the whole run's.
    """

    def __init__(self, make_iter: Callable[..., Iterable[dict]], start_epoch: int = 0):
        self.make_iter = make_iter
        self.epoch, self.offset = start_epoch, 0
        self._it: Iterator[dict] | None = None
        self._yielded = self._resumed = False

    def position(self) -> tuple[int, int]:
        return self.epoch, self.offset

    def seek(self, epoch: int, offset: int) -> None:
        self.epoch, self.offset, self._it = int(epoch), int(offset), None

    def __iter__(self) -> Cycle:
        return self

    def _open(self) -> Iterator[dict]:
        if self.offset == 0:
            return iter(self.make_iter(self.epoch))
        if _accepts_skip(self.make_iter):
            return iter(self.make_iter(self.epoch, skip=self.offset))
        log.info("re-reading %d batches of epoch %d to reach the checkpoint's data position (the source "
                 "cannot seek)", self.offset, self.epoch)
        return itertools.islice(iter(self.make_iter(self.epoch)), self.offset, None)

    def __next__(self) -> dict:
        while True:
            if self._it is None:
                self._it, self._yielded, self._resumed = self._open(), False, self.offset > 0
            try:
                batch = next(self._it)
            except StopIteration:
                if not self._yielded and not self._resumed:
                    raise ValueError(f"epoch {self.epoch} of the training data is empty; check "
                                     f"data.train_split and the dataset") from None
                self.epoch, self.offset, self._it = self.epoch + 1, 0, None
                continue
            self._yielded = True
            self.offset += 1
            return batch


def cycle(make_iter: Callable[..., Iterable[dict]], start_epoch: int = 0) -> Cycle:
    """Chain epochs forever: ``make_iter(epoch)`` gives one epoch's batches (e.g. shuffled by epoch)."""
    return Cycle(make_iter, start_epoch)


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
        if not _NO_VAL_WARNED:
            _NO_VAL_WARNED.append(True)
            log.warning("no validation data (split '%s' of the dataset is empty): eval/val_ce is not logged; "
                        "ingest with ingest.val_fraction > 0 or name a 'val' split in the manifest", cfg.data.val_split)
        return float("nan")
    return total / n


_NO_VAL_WARNED: list[bool] = []  # said once per process, not at every evaluation


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


@dataclass
class _Run:
    """Everything one rank trains with; built once by ``_setup``."""

    cfg: ExperimentConfig
    module: torch.nn.Module  # what the step calls: the loss module, DDP(loss module), or over an FSDP model
    loss: parallel.LossModule  # holds the generators
    inner: torch.nn.Module  # the model (FSDP-sharded or plain): checkpoints, FLOPs, validation
    objective: Callable
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    device: torch.device
    meter: CostMeter
    rank: int
    start: int = 0
    position: int = 0
    ema: torch.optim.swa_utils.AveragedModel | None = None  # train.ema_decay: the weight average

    def autocast(self):
        return autocast_context(self.device, self.cfg.train.precision)

    def save_fn(self, step: int, batches: Iterator[dict]) -> SaveFn:
        position = self.position
        data = None
        if isinstance(batches, Cycle):
            epoch, offset = batches.position()
            data = {"epoch": epoch, "offset": offset, "world": self.meter.world_size}

        def save(directory: Path) -> None:
            # gathering FSDP shards is a collective: every rank runs this, rank 0 writes the full state
            model_state = parallel.model_state(self.inner)
            optimizer_state = parallel.optimizer_state(self.inner, self.optimizer)
            ckpt.save_checkpoint(
                directory,
                self.cfg,
                step=step,
                data_position=position,
                model_state=model_state,
                optimizer_state=optimizer_state,
                scheduler=self.scheduler,
                rank=self.rank,
                generator=self.generator,
                cost=self.meter.state(),
                data=data,
                ema=self.ema_state() if self.rank == 0 else None,
            )

        return save

    def ema_state(self) -> dict | None:
        if self.ema is None:
            return None
        return {"weights": self.ema.module.state_dict(), "n_averaged": int(self.ema.n_averaged)}

    def validate(self, val_batches: Callable[[], Iterable[dict]]) -> float:
        model = self.inner if self.ema is None else self.ema.module  # validate what gets evaluated
        return _validate(model, self.objective, val_batches, self.cfg, self.device, self.autocast)

    def plain_model(self) -> torch.nn.Module:
        """The model for end-of-run work on rank 0 alone: itself, or — when sharded (each forward would need
        every rank) or compiled (decoding would recompile per length) — a plain copy of its full weights;
        with train.ema_decay, a plain model holding the averaged weights. A collective under FSDP: every rank
        calls it; the others get None."""
        if self.ema is not None:  # a plain copy taken before DDP / compile (config refuses EMA with FSDP)
            return self.ema.module if self.rank == 0 else None
        if not (parallel.is_fsdp(self.inner) or self.cfg.train.compile):
            return self.inner
        state = parallel.model_state(self.inner)
        if self.rank != 0:
            return None
        model = build_training_model(self.cfg)
        model.load_state_dict(state)
        return model.to(self.device)


def _resume(run: _Run, state: ckpt.TrainState, batches: Iterator[dict]) -> None:
    """Optimizer, scheduler, cost totals and data position of a checkpoint, into a built run."""
    if state.optimizer is not None:
        parallel.load_optimizer_state(run.inner, run.optimizer, state.optimizer)
    if state.scheduler is not None:
        run.scheduler.load_state_dict(state.scheduler)
    run.meter.restore(state.cost)
    if run.ema is not None:
        if state.ema is not None:
            run.ema.module.load_state_dict(state.ema["weights"])
            run.ema.n_averaged.fill_(int(state.ema["n_averaged"]))
        else:  # a checkpoint of a run without the average: it starts from the resumed weights
            log.warning("checkpoint %s has no ema.pt: the weight average (train.ema_decay=%g) starts from its "
                        "weights", state.path, run.cfg.train.ema_decay)
    if state.data is not None and isinstance(batches, Cycle):
        offset, saved_world = state.data["offset"], state.data.get("world", run.meter.world_size)
        if saved_world != run.meter.world_size:
            # per-rank offsets into equal shards: the same share of the epoch at the new world size (exact
            # for interleaved shards, rank r = batches r, r + world, ...; approximate for Ray Data's split)
            offset = offset * saved_world // run.meter.world_size
            log.info("data position from world size %d rescaled to %d: epoch %d, offset %d", saved_world,
                     run.meter.world_size, state.data["epoch"], offset)
        batches.seek(state.data["epoch"], offset)
        return
    if state.data_position:  # an older checkpoint, or a plain iterator: only the count is known
        log.warning("replaying %d consumed micro-batches to reach the checkpoint's data position (the "
                    "checkpoint or the iterator has no seekable position)", state.data_position)
        for _ in range(state.data_position):
            next(batches)


def _setup(cfg: ExperimentConfig, batches: Iterator[dict], rank: int, world_size: int, device, resume_from) -> _Run:
    from arvid_ray.objectives import build_objective

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = build_training_model(cfg)
    seed_everything(cfg.experiment.seed, rank)
    generator = rank_generator(cfg.experiment.seed, rank)
    state = None
    if resume_from is not None:  # full weights into the plain model, before it is sharded
        state = ckpt.load_checkpoint(resume_from, cfg, model=model, rank=rank, generator=generator)
    model.to(device)
    ema = None
    if cfg.train.ema_decay > 0:  # a copy of the plain model, taken before DDP / compile wrap it
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema_decay))
    objective = build_objective(cfg)
    loss = parallel.LossModule(model, objective)
    loss.generator, loss.window_generator = generator, torch.Generator()
    module = parallel.parallelize(loss, cfg, device)
    optimizer = build_optimizer(model, cfg.train)  # after sharding: FSDP replaced the parameters
    meter = CostMeter(cfg, world_size=world_size, device=str(device), flops_fn=model.forward_flops,
                      head_flops_fn=model.head_flops)
    scheduler = build_scheduler(optimizer, cfg.train, spent=meter.gpu_hours)  # the budget's cosine reads it
    run = _Run(cfg, module, loss, model, objective, optimizer, scheduler, generator, device, meter, rank, ema=ema)
    if state is not None:
        _resume(run, state, batches)
        run.start, run.position = state.step, state.data_position
    return run


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
