"""One optimizer step: AdamW with decoupled decay, warmup + cosine LR, clipping, accumulation, precision.

Design trade-off: no Ray and no DDP knowledge here beyond ``no_sync`` — the same functions drive the
single-process loop and every Ray Train rank, so the math is tested without a cluster. Gradient
accumulation is *derived* (global batch / (workers x micro-batch)) rather than configured, so changing the
worker count keeps the optimisation identical; a global batch that does not divide is refused.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from arvid_ray.config import ConfigError, ExperimentConfig, TrainConfig

__all__ = [
    "build_optimizer",
    "build_scheduler",
    "lr_factor",
    "grad_accum_steps",
    "autocast_context",
    "maybe_compile",
    "seed_everything",
    "rank_generator",
    "train_step",
    "StepResult",
]


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (no decay on norms, biases, or other 1-D params)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = {}
    if fused is None:  # fused AdamW runs on CUDA and, since torch 2.4, on CPU (~3x faster step there)
        fused = bool(decay) and decay[0].device.type in ("cuda", "cpu")
    if fused:
        kwargs["fused"] = True
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), **kwargs)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of cfg.lr at optimizer step ``step`` (0-based): linear warmup, cosine to min_lr_ratio."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    decay_steps = max(cfg.steps - cfg.warmup_steps, 1)
    progress = min(max(step - cfg.warmup_steps, 0) / decay_steps, 1.0)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))


def grad_accum_steps(cfg: ExperimentConfig, world_size: int) -> int:
    """Micro-batches per optimizer step so that workers x micro x accum == global batch."""
    per_step = max(world_size, 1) * cfg.data.batch_size
    if cfg.train.global_batch_size % per_step:
        raise ConfigError(
            f"config field 'train.global_batch_size' = {cfg.train.global_batch_size} is invalid: must be a "
            f"multiple of workers ({max(world_size, 1)}) x data.batch_size ({cfg.data.batch_size}) "
            f"= {per_step}"
        )
    return cfg.train.global_batch_size // per_step


def autocast_context(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPU for 'auto'/'bf16'; fp32 on CPU for 'auto'; 'bf16' on CPU is honoured."""
    device = torch.device(device)
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def maybe_compile(model: torch.nn.Module, cfg: TrainConfig) -> torch.nn.Module:
    return torch.compile(model) if cfg.compile else model


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed python, numpy and torch for one rank; returns the rank seed."""
    rank_seed = (seed * 1_000_003 + rank * 7919) % (2**31 - 1)
    random.seed(rank_seed)
    np.random.seed(rank_seed)
    torch.manual_seed(rank_seed)
    return rank_seed


def rank_generator(seed: int, rank: int = 0) -> torch.Generator:
    """The generator handed to the objective (window sampling, CFG dropout) on this rank."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + rank * 7919 + 1) % (2**31 - 1))
    return g


@dataclass
class StepResult:
    """Averages over the micro-batches of one optimizer step, plus per-micro-batch counters."""

    scalars: dict[str, float]
    micro: list[tuple[dict[str, float], int, int]] = field(default_factory=list)  # (out, batch, clip tokens)
    grad_norm: float = 0.0
    lr: float = 0.0


def _scalar(v) -> float:
    return float(v.detach().float().item()) if isinstance(v, torch.Tensor) else float(v)


def train_step(
    model: torch.nn.Module,
    objective: Callable,
    optimizer: torch.optim.Optimizer,
    scheduler,
    micro_batches: Sequence[dict],
    generator: torch.Generator,
    *,
    grad_clip: float,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    grad_sync: Callable[[], None] | None = None,
) -> StepResult:
    """Forward/backward over the micro-batches (DDP sync on the last one only; or ``grad_sync`` after
    all of them), clip, step, schedule."""
    optimizer.zero_grad(set_to_none=True)
    n = len(micro_batches)
    sums: dict[str, float] = {}
    micro = []
    for i, batch in enumerate(micro_batches):
        sync = i == n - 1 or not hasattr(model, "no_sync")
        with contextlib.nullcontext() if sync else model.no_sync():
            with autocast():
                out = objective(model, batch, generator)
            (out["loss"] / n).backward()
        values = {k: _scalar(v) for k, v in out.items()}
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
        micro.append((values, int(batch["tokens"].shape[0]), int(batch["tokens"].numel())))
    if grad_sync is not None:
        grad_sync()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    max_norm = grad_clip if grad_clip > 0 else float("inf")
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    scalars = {k: v / n for k, v in sums.items() if not k.startswith("tokens")}
    return StepResult(scalars=scalars, micro=micro, grad_norm=grad_norm, lr=lr)
