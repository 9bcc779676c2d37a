"""What one rank trains with, built once: the model (same initial weights on every rank), the objective,
parallelism applied from outside, optimizer, scheduler, cost meter, weight average — and a checkpoint's
state restored into it (weights, optimizer, scheduler, RNG, cost totals, data position).

``train_loop`` (``loop.py``) only drives the cadence over a ``_Run``; everything it saves and resumes is
here, so the loop reads as the steps it takes.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from arvid_ray.config import ExperimentConfig
from arvid_ray.train import checkpoint as ckpt
from arvid_ray.train import parallel
from arvid_ray.train.cost import CostMeter
from arvid_ray.train.epochs import Cycle
from arvid_ray.train.step import (
    autocast_context,
    build_optimizer,
    build_scheduler,
    rank_generator,
    seed_everything,
)

log = logging.getLogger(__name__)

__all__ = ["SaveFn", "build_training_model", "vocab_size"]

SaveFn = Callable[[Path], None]


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
