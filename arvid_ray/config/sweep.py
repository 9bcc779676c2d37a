"""The sweep section: what a sweep searches, how it ranks trials, and how it runs them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from arvid_ray.config.base import RESOURCE, SEARCH, _check_range, role


@dataclass(frozen=True)
class SweepConfig:
    name: str = field(default="tune-window", metadata=role(SEARCH))
    """Sweep name; parent MLflow run name and Tune experiment directory."""
    num_samples: int = field(default=6, metadata=role(SEARCH))
    """Optuna trials (the baseline reference trial comes on top)."""
    mode: Literal["single", "multi"] = field(default="multi", metadata=role(SEARCH))
    """single: minimise quality with ASHA; multi: quality and cost/gpu_hours with NSGA-II (Pareto)."""
    metric: str = field(default="eval/fd_synthc3d", metadata=role(SEARCH))
    """Quality metric (lower is better)."""
    cost_metric: str = field(default="cost/gpu_hours", metadata=role(SEARCH))
    """Cost metric for multi-objective mode."""
    search_space: dict[str, Any] = field(default_factory=dict, metadata=role(SEARCH))
    """Dotted key → {type: int|float|loguniform|choice, low, high, values}."""
    include_baseline: bool = field(default=True, metadata=role(SEARCH))
    """Add the `full` objective as a fixed reference trial."""
    max_concurrent_trials: int = field(default=0, metadata=role(RESOURCE, may_differ_on_resume=True))
    """0 = derived from the cluster's declared node types (what it can scale to, not what is up now)."""
    max_failures: int = field(default=2, metadata=role(RESOURCE, may_differ_on_resume=True))
    """Tune retries per trial (a lost trial driver or worker node); each resumes from the trial's last
    checkpoint through its stable Train run name."""
    driver_resource: Optional[str] = field(default=None, metadata=role(RESOURCE))
    """Custom resource pinning trial drivers to non-preemptible nodes; None = 'arvid_driver' when a node
    type declares it, else the head node on a multi-node cluster; '' = no pinning."""
    time_budget_s: float = field(default=0.0, metadata=role(RESOURCE, may_differ_on_resume=True))
    """Stop the sweep after this many seconds (0 = no limit)."""
    asha_grace_steps: int = field(default=50, metadata=role(SEARCH))
    """ASHA grace period in steps (single mode)."""
    prune_on: Literal["val_ce", "quality"] = field(default="val_ce", metadata=role(SEARCH))
    """What ASHA prunes on (single mode): val_ce = eval/val_ce at its step; quality = the quality during
    training (quality/<sweep.metric's name>, eval.quality_every > 0) at the step of the checkpoint it was
    measured on, the grace period rounded up to a multiple of eval.quality_every so every rung compares
    the same step. Multi mode has no ASHA: its Pareto front reads the final values."""
    seed: int = field(default=0, metadata=role(SEARCH))
    """Sampler seed."""

    def __post_init__(self) -> None:
        _check_range("sweep.num_samples", self.num_samples, 1)
        _check_range("sweep.max_concurrent_trials", self.max_concurrent_trials, 0)
        _check_range("sweep.max_failures", self.max_failures, 0)
        _check_range("sweep.time_budget_s", self.time_budget_s, 0.0)
