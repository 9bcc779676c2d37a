"""The training sections: optimisation, the run's workers and resources (train), cost tables (cost)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal, Optional

from arvid_ray.config.base import BOOKKEEPING, HYPER, RESOURCE, _check_range, _fail, role


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 200
    """Optimizer steps (with train.budget_gpu_hours: the most it may take)."""
    budget_gpu_hours: float = field(default=0.0, metadata=role(HYPER, identity_if_set=True))
    """Training-cost budget in accelerator-hours (cost/gpu_hours: GPUs, or CPU cores without one, times wall
    time), 0 = none. The run stops after the first optimizer step at which its cost reaches the budget (or at
    train.steps, whichever comes first), and the learning rate's cosine runs over the budget instead of the
    steps, so a cheaper method spends the same money on more steps with a full schedule (the equal-budget
    study: reproduce_paper.py --study cost)."""
    global_batch_size: int = 16
    """Clips per optimizer step across all workers; accumulation = global / (workers x micro)."""
    lr: float = 3e-4
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """Cosine floor as a fraction of lr."""
    warmup_steps: int = 20
    """Linear warmup steps."""
    weight_decay: float = 0.05
    """AdamW weight decay (not applied to norms and biases)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    grad_clip: float = 1.0
    """Gradient-norm clip (0 = off)."""
    ema_decay: float = 0.0
    """Exponential moving average of the weights (``torch.optim.swa_utils.AveragedModel``), 0 = off. When
    on, validation and the final evaluation use the averaged weights and checkpoints save them (ema.pt),
    which ``evaluate`` then scores. Not with train.parallelism=fsdp (the average would need its own shards)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto = bf16 autocast on GPU, fp32 on CPU."""
    compile: bool = False
    """Wrap the model in torch.compile."""
    log_every: int = field(default=10, metadata=role(RESOURCE))
    """Steps between metric logs."""
    eval_every: int = 0
    """Steps between validation CE evaluations (0 = only at the end)."""
    ckpt_every: int = 100
    """Steps between checkpoints (0 = only at the end)."""
    keep_checkpoints: int = 2
    """Checkpoints kept by Ray Train."""
    report_interval_s: float = 5.0
    """Deprecated, read by nothing: train.report_every replaced it (reports are decided by step number, the
    same on every rank). Kept so configs that set it still load; setting it warns. It stays in the run-name
    hash, so removing it would rename every run."""
    num_workers: int = field(default=1, metadata=role(RESOURCE))
    """Ray Train workers (0 = run the loop in the calling process, no Ray)."""
    use_gpu: bool = False
    """Give each worker a GPU (NCCL); False = CPU workers with gloo."""
    cpus_per_worker: float = field(default=1.0, metadata=role(RESOURCE))
    """CPUs reserved per Ray Train worker."""
    resources_per_worker: dict[str, float] = field(default_factory=dict, metadata=role(RESOURCE))
    """Extra resources per worker (custom resources, or GPU: n with use_gpu); asked for exactly as given."""
    accelerator_type: Optional[str] = field(default=None, metadata=role(RESOURCE))
    """Ask for workers on this accelerator type (Ray's accelerator_type, e.g. H100); None = any."""
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    """Process-group backend; auto = nccl with use_gpu, gloo without."""
    device: Literal["auto", "cpu"] = "auto"
    """auto = the worker's GPU with use_gpu; cpu = train on CPU even on GPU-scheduled workers (tests)."""
    resource_timeout_s: float = field(default=600.0, metadata=role(RESOURCE, may_differ_on_resume=True))
    """Fail the run when its workers' resources cannot be had (e.g. the autoscaler cannot launch the
    GPU nodes) for this long; Ray Train retries every 60 s meanwhile."""
    max_failures: int = field(default=2, metadata=role(RESOURCE, may_differ_on_resume=True))
    """Worker-group restarts from the last checkpoint before the run fails."""
    storage_path: Optional[str] = field(default=None, metadata=role(BOOKKEEPING))
    """Run storage (local dir or s3://); None = <workdir>/runs."""
    run_name: Optional[str] = field(default=None, metadata=role(BOOKKEEPING))
    """Stable Ray Train run name; None = derived from experiment name + config hash."""
    fail_at_step: int = field(default=-1, metadata=role(RESOURCE))
    """Test hook: rank 1 (or 0 with one worker) exits at this step on the first attempt (-1 = off)."""
    val_batches: int = 4
    """Batches used for each validation-CE evaluation."""
    final_eval: bool = field(default=False, metadata=role(RESOURCE))
    """Run arvid_ray.evaluate on rank 0 before the last report (sweeps need the quality metric there)."""
    # a resource: checkpoints hold full state dicts, so a run resumes under either parallelism
    parallelism: Literal["ddp", "fsdp"] = field(default="ddp", metadata=role(RESOURCE))
    """Data parallelism over >= 2 workers: DDP (replicated weights) or FSDP2 (params, grads and optimizer
    state sharded per block; bf16 params with fp32 gradient reduction when precision resolves to bf16)."""
    activation_checkpointing: bool = field(default=False, metadata=role(RESOURCE))
    """Recompute each transformer block in backward instead of keeping its activations (memory for time)."""
    report_every: int = field(default=50, metadata=role(RESOURCE))
    """Optimizer steps between Ray Train reports that carry only metrics (decided by step number, the
    same on every rank, so no collective is needed); checkpoints, validations and the last step always
    report. Train V2 blocks a worker until the controller's 2 s poll takes each report."""

    def __post_init__(self) -> None:
        if self.report_interval_s != 5.0:
            warnings.warn("config field 'train.report_interval_s' is read by nothing (deprecated): set "
                          "train.report_every (optimizer steps between metric-only Ray Train reports) instead",
                          DeprecationWarning, stacklevel=2)
        _check_range("train.steps", self.steps, 1)
        _check_range("train.budget_gpu_hours", self.budget_gpu_hours, 0.0)
        _check_range("train.global_batch_size", self.global_batch_size, 1)
        _check_range("train.lr", self.lr, 0.0, lo_open=True)
        _check_range("train.min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        _check_range("train.warmup_steps", self.warmup_steps, 0)
        _check_range("train.weight_decay", self.weight_decay, 0.0)
        _check_range("train.grad_clip", self.grad_clip, 0.0)
        if not 0.0 <= self.ema_decay < 1.0:
            _fail("train.ema_decay", self.ema_decay, "must be in [0, 1): 0 = off, e.g. 0.999")
        _check_range("train.num_workers", self.num_workers, 0)
        _check_range("train.cpus_per_worker", self.cpus_per_worker, 0.0, lo_open=True)
        _check_range("train.resource_timeout_s", self.resource_timeout_s, 1.0)
        for key, value in self.resources_per_worker.items():
            if key == "CPU" or float(value) < 0:
                _fail(f"train.resources_per_worker.{key}", value,
                      "use train.cpus_per_worker for CPUs; other amounts must be >= 0")
            if key == "GPU" and not self.use_gpu:
                _fail("train.resources_per_worker.GPU", value, "GPUs need train.use_gpu=true")
        if self.backend == "nccl" and (not self.use_gpu or self.device == "cpu"):
            _fail("train.backend", self.backend, "nccl needs train.use_gpu=true and train.device=auto")
        _check_range("train.max_failures", self.max_failures, 0)
        _check_range("train.keep_checkpoints", self.keep_checkpoints, 1)
        _check_range("train.report_interval_s", self.report_interval_s, 0.0)
        _check_range("train.log_every", self.log_every, 1)
        _check_range("train.report_every", self.report_every, 1)
        if self.ema_decay > 0 and self.parallelism == "fsdp":
            _fail("train.ema_decay", self.ema_decay, "is not supported with train.parallelism=fsdp (the average "
                  "is kept as full weights on every rank); use train.parallelism=ddp or train.ema_decay=0")


@dataclass(frozen=True)
class CostConfig:
    accelerator: str = "auto"
    """Accelerator type for prices/peaks ('auto' = detected: cpu, H100, A100, ...)."""
    price_per_hour: dict[str, float] = field(default_factory=lambda: {
        "cpu": 0.05, "T4": 0.35, "L4": 0.70, "A10G": 1.00, "A100": 3.00, "H100": 4.50, "H200": 5.50})
    """USD per accelerator-hour (per CPU core for 'cpu'), by accelerator type."""
    peak_tflops: dict[str, float] = field(default_factory=lambda: {
        "cpu": 0.1, "T4": 65.0, "L4": 121.0, "A10G": 125.0, "A100": 312.0, "H100": 989.0, "H200": 989.0})
    """Dense bf16 peak TFLOP/s per device (fp32 per core for 'cpu') for MFU."""

    def __post_init__(self) -> None:
        # each table on its own: merged into one dict, a peak hid a negative price under the same key
        for key, value in [*self.price_per_hour.items(), *self.peak_tflops.items()]:
            if float(value) < 0:
                _fail(f"cost table entry '{key}'", value, "prices and peaks must be >= 0")
