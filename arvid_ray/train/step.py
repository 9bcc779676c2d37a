"""One optimizer step: AdamW with decoupled decay, warmup + cosine LR, clipping, accumulation, precision.

Design trade-off: no Ray and no parallelism knowledge here beyond "reduce gradients on the last
micro-batch only" (``parallel.grad_sync``) — the same functions drive the single-process loop and every
Ray Train rank, so the math is tested without a cluster. The step reads the device once: the loss
terms and the gradient norm are summed on the device and copied to the host together at the end. Gradient
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
    "seed_everything",
    "rank_generator",
    "window_seed",
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


def lr_factor(step: int, cfg: TrainConfig, spent: float | None = None) -> float:
    """Multiplier of cfg.lr at optimizer step ``step`` (0-based): linear warmup, cosine to min_lr_ratio over
    the steps — or, with ``train.budget_gpu_hours`` and ``spent`` (accelerator-hours spent so far), over
    the budget, so a run stopped by its budget ends its schedule there."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.budget_gpu_hours > 0 and spent is not None:
        progress = min(max(spent / cfg.budget_gpu_hours, 0.0), 1.0)
    else:
        decay_steps = max(cfg.steps - cfg.warmup_steps, 1)
        progress = min(max(step - cfg.warmup_steps, 0) / decay_steps, 1.0)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                    spent: Callable[[], float] | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """``spent()``: accelerator-hours spent so far (the cost meter's), read when a budget is set."""
    if cfg.budget_gpu_hours > 0 and spent is not None:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg, spent()))
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


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed python, numpy and torch for one rank; returns the rank seed."""
    rank_seed = (seed * 1_000_003 + rank * 7919) % (2**31 - 1)
    random.seed(rank_seed)
    np.random.seed(rank_seed)
    torch.manual_seed(rank_seed)
    return rank_seed


def rank_generator(seed: int, rank: int = 0) -> torch.Generator:
    """The generator of this rank's CFG dropout (different on every rank, like its data)."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + rank * 7919 + 1) % (2**31 - 1))
    return g


def window_seed(seed: int, step: int, micro: int) -> int:
    """Seed of the window-start draw of micro-batch ``micro`` of optimizer step ``step``: the same on every
    rank (no rank waits for a longer window) and a pure function of the position, so resuming is exact."""
    return (seed * 1_000_003 + step * 104_729 + micro * 7919 + 17) % (2**63 - 1)


@dataclass
class StepResult:
    """Averages over the micro-batches of one optimizer step, plus per-micro-batch counters."""

    scalars: dict[str, float]
    micro: list[tuple[dict[str, float], int, int]] = field(default_factory=list)  # (counters, batch, clip tokens)
    grad_norm: float = 0.0
    lr: float = 0.0


_LOSS_TERMS = ("loss", "ce", "reco")


def _grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip in place and return the total norm as a plain device tensor (no host read here)."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    full = getattr(norm, "full_tensor", None)  # FSDP: a DTensor of the global norm
    return full() if full is not None else norm


def train_step(
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    micro_batches: Sequence[dict],
    *,
    grad_clip: float,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    before_micro: Callable[[int], None] | None = None,
) -> StepResult:
    """Forward/backward of ``module(batch)`` (a loss module: objective outputs) over the micro-batches,
    reducing gradients across ranks on the last one only; clip, step, schedule; one device→host read."""
    from arvid_ray.train.parallel import grad_sync

    optimizer.zero_grad(set_to_none=True)
    n = len(micro_batches)
    sums: dict[str, torch.Tensor] = {}
    micro = []
    for i, batch in enumerate(micro_batches):
        if before_micro is not None:
            before_micro(i)
        with grad_sync(module, enabled=i == n - 1):
            with autocast():
                out = module(batch)
            (out["loss"] / n).backward()
        for k in _LOSS_TERMS:
            if k in out:
                v = out[k].detach().float()
                sums[k] = sums[k] + v if k in sums else v
        # the token counters are host tensors built from shapes: reading them costs no device sync
        counters = {k: float(v) for k, v in out.items() if k.startswith("tokens")}
        micro.append((counters, int(batch["tokens"].shape[0]), int(batch["tokens"].numel())))
    params = [p for g in optimizer.param_groups for p in g["params"]]
    norm = _grad_norm(params, grad_clip if grad_clip > 0 else float("inf"))
    lr = optimizer.param_groups[0]["lr"]
    optimizer.step()
    scheduler.step()
    names = list(sums)
    host = torch.stack([sums[k] for k in names] + [norm.detach().float().to(sums[names[0]].device)]).tolist()
    scalars = {k: v / n for k, v in zip(names, host)}
    return StepResult(scalars=scalars, micro=micro, grad_norm=host[-1], lr=lr)
