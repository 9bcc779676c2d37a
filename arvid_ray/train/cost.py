"""Cost accounting for a training run: wall time, accelerator-hours, dollars, FLOPs, MFU, memory.

Design trade-off: FLOPs are *analytic* (the model's ``forward_flops(n_query, n_context)`` times the tokens
the objective really ran: 3x for tokens run with grad — forward + backward — and 1x for the no-grad
prefix of Local Opt.), not profiled. That makes the number cheap, deterministic and comparable across
objectives and devices, at the price of ignoring kernel-level waste — which is exactly what MFU then
exposes. Each rank measures its own work; a data-parallel run is symmetric, so rank 0 scales its numbers
by the world size instead of paying for a collective on every log step.

The run totals (accelerator-seconds, dollars, tokens, FLOPs, wall time) are saved in every checkpoint
(``state``) and continued by the next attempt (``restore``), so a trial restarted after a failure or a
spot preemption is billed for all its attempts, not only the last one. Not billed: the work between the
last checkpoint and the failure, and the restart itself (nothing records them).
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from arvid_ray.config import ExperimentConfig

log = logging.getLogger(__name__)

__all__ = ["CostMeter", "detect_accelerator", "cost_unit", "step_flops", "peak_memory_gb", "COST_UNIT_TAG"]

COST_UNIT_TAG = "arvid.cost_unit"  # what cost/gpu_hours counts in this run, said in the run itself

FlopsFn = Callable[[int, int], float]


def detect_accelerator(requested: str = "auto", use_gpu: bool | None = None) -> str:
    """The price/peak table key for this process: 'cpu' or a GPU family such as 'H100', 'A100'."""
    if requested != "auto":
        return requested
    gpu = torch.cuda.is_available() if use_gpu is None else (use_gpu and torch.cuda.is_available())
    if not gpu:
        return "cpu"
    name = torch.cuda.get_device_name(0).upper()
    for family in ("H200", "H100", "A100", "A10G", "L40S", "L4", "T4", "V100"):
        if family in name:
            return family
    return name


def cost_unit(accelerator: str) -> str:
    """What ``cost/gpu_hours`` counts for ``accelerator`` (a run tag, so a CPU run never passes for GPU-hours)."""
    if accelerator == "cpu":
        return ("CPU core-hours: no GPU, so cost/gpu_hours counts CPU cores (train.cpus_per_worker per worker) "
                "x wall time")
    return f"GPU-hours ({accelerator}): GPUs x wall time"


def step_flops(flops_fn: FlopsFn, batch_size: int, tokens_grad: float, tokens_nograd: float,
               head_flops: Callable[[int], float] | None = None) -> float:
    """Analytic train FLOPs of one micro-batch.

    ``tokens_grad``/``tokens_nograd`` are per batch (the objective's counters). Per sample, the no-grad
    prefix of ``p`` tokens costs one forward of p queries over p keys, less the output head (``head_flops``:
    the prefix computes no logits); the ``g`` grad tokens attend to ``p + g`` keys and cost forward +
    backward = 3 forwards.
    """
    if batch_size <= 0:
        return 0.0
    g = int(round(float(tokens_grad) / batch_size))
    p = int(round(float(tokens_nograd) / batch_size))
    per_sample = 3.0 * flops_fn(g, p + g) if g > 0 else 0.0
    if p > 0:
        per_sample += flops_fn(p, p) - (head_flops(p) if head_flops is not None else 0.0)
    return per_sample * batch_size


def peak_memory_gb(device: torch.device | str = "cpu") -> float:
    """Peak accelerator memory (CUDA max_memory_allocated) or the process's peak RSS on CPU, in GB."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 1e9 if sys.platform == "darwin" else rss * 1024 / 1e9


@dataclass
class CostMeter:
    """Accumulates step time, data-wait time, tokens and FLOPs of one rank; ``metrics()`` scales to the run.

    ``devices_per_worker`` is 1 GPU per worker, or ``cpus_per_worker`` cores on CPU (CPU-hours).
    """

    cfg: ExperimentConfig
    world_size: int = 1
    device: str = "cpu"
    flops_fn: FlopsFn | None = None
    head_flops_fn: Callable[[int], float] | None = None  # the head's share of flops_fn (no-grad prefix: none)
    accelerator: str = field(init=False)
    start_time: float = field(init=False)
    step_time_s: float = 0.0
    data_wait_s: float = 0.0
    tokens: float = 0.0
    flops: float = 0.0
    steps: int = 0
    _last_steps: int = 0
    prior: dict[str, float] = field(default_factory=dict)  # run totals of earlier attempts (``restore``)
    _window: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # step s, wait s, tokens

    def __post_init__(self) -> None:
        on_gpu = torch.device(self.device).type == "cuda"
        self.accelerator = detect_accelerator(self.cfg.cost.accelerator, use_gpu=on_gpu)
        self.start_time = time.perf_counter()

    # ---------------------------------------------------------------------------------- recording
    def timed_next(self, it):
        """``next(it)`` while counting the time blocked on data as data-wait."""
        t0 = time.perf_counter()
        try:
            return next(it)
        finally:
            self.add_data_wait(time.perf_counter() - t0)

    def add_data_wait(self, seconds: float) -> None:
        self.data_wait_s += seconds
        self._window[1] += seconds

    def add_step(self, seconds: float, out: Mapping[str, object], batch_size: int, clip_tokens: int) -> None:
        """Record one micro-batch: its compute time, the objective's token counters (FLOPs) and the clip
        tokens it consumed (tokens/s counts data throughput, comparable across objectives)."""
        tokens_grad = float(out.get("tokens_grad", 0.0))
        tokens_nograd = float(out.get("tokens_nograd", 0.0))
        self.step_time_s += seconds
        self._window[0] += seconds
        self.tokens += clip_tokens
        self._window[2] += clip_tokens
        if self.flops_fn is not None:
            self.flops += step_flops(self.flops_fn, batch_size, tokens_grad, tokens_nograd, self.head_flops_fn)

    def end_optimizer_step(self) -> None:
        self.steps += 1

    # ---------------------------------------------------------------------------------- reporting
    def devices(self) -> float:
        """Accelerator units billed for the run: GPUs, or CPU cores when there is no GPU."""
        if self.accelerator == "cpu":
            return self.world_size * self.cfg.train.cpus_per_worker
        return float(self.world_size)

    def wall_s(self) -> float:
        return time.perf_counter() - self.start_time

    def state(self) -> dict[str, float]:
        """Run totals so far (this attempt plus the earlier ones): what a checkpoint saves."""
        wall = self.wall_s()
        return {
            "device_s": self.prior.get("device_s", 0.0) + self.devices() * wall,
            "usd": self.prior.get("usd", 0.0) + self.devices() * wall / 3600.0 * self._price(),
            "tokens": self.prior.get("tokens", 0.0) + self.tokens * self.world_size,
            "flops": self.prior.get("flops", 0.0) + self.flops * self.world_size,
            "wall_s": self.prior.get("wall_s", 0.0) + wall,
            # accelerator-seconds inside optimizer steps only: MFU's denominator (an older checkpoint has none)
            "step_device_s": self.prior.get("step_device_s", 0.0) + self.devices() * self.step_time_s,
        }

    def gpu_hours(self) -> float:
        """cost/gpu_hours so far (this attempt plus the earlier ones): what train.budget_gpu_hours bounds."""
        return self.state()["device_s"] / 3600.0

    def restore(self, state: Mapping[str, float] | None) -> None:
        """Continue the totals of a checkpointed run (its attempts may have had another world size/device)."""
        self.prior = {k: float(v) for k, v in (state or {}).items()}

    def _price(self) -> float:
        return float(self.cfg.cost.price_per_hour.get(self.accelerator, 0.0))

    def metrics(self, reset_window: bool = True) -> dict[str, float]:
        """Run-level cost/* metrics since the start; train/* throughput (tokens/s, step time, data-wait
        fraction) over the window since the last call, so the first window shows start-up honestly and later
        ones the steady state."""
        total = self.state()
        device_s = max(total["device_s"], 1e-9)
        peak = float(self.cfg.cost.peak_tflops.get(self.accelerator, 0.0)) * 1e12
        win_step, win_wait, win_tokens = self._window
        win_time = win_step + win_wait
        out = {
            "train/tokens_per_s": self.world_size * win_tokens / win_time if win_time > 0 else 0.0,
            "train/step_time_s": win_time / max(self.steps - self._last_steps, 1),
            "train/data_wait_frac": win_wait / win_time if win_time > 0 else 0.0,
            "train/peak_mem_gb": peak_memory_gb(self.device),
            "cost/wall_time_s": total["wall_s"],
            "cost/gpu_hours": device_s / 3600.0,
            "cost/usd": total["usd"],
            "cost/train_flops": total["flops"],
            # over training steps only: validation, checkpoints and start-up are billed, not counted as slow steps
            "cost/mfu": total["flops"] / (total["step_device_s"] * peak) if peak > 0 and total["step_device_s"] > 0
            else 0.0,
            "cost/tokens": total["tokens"],
        }
        if reset_window:
            self._window = [0.0, 0.0, 0.0]
            self._last_steps = self.steps
        return out

    def summary(self) -> str:
        m = self.metrics(reset_window=False)
        busy = self.step_time_s + self.data_wait_s
        m["train/data_wait_frac"] = self.data_wait_s / busy if busy > 0 else 0.0  # whole run
        return (
            f"{self.accelerator} x{self.devices():g}: {m['cost/wall_time_s']:.1f}s wall, "
            f"{m['cost/gpu_hours']:.5f} {'CPU core-h' if self.accelerator == 'cpu' else 'GPU-h'}, ${m['cost/usd']:.4f}, {m['cost/train_flops']:.3g} FLOPs, "
            f"MFU {m['cost/mfu']:.2%}, data-wait {m['train/data_wait_frac']:.1%}"
        )
