"""Sweep search spaces: dotted config keys → an Optuna define-by-run function, and Pareto fronts.

Design trade-off: the space is a define-by-run function rather than a static dict of distributions so
that (1) the baseline (`objective.kind=full`) can be trial 0 of the *same* study — a fixed reference
that suggests nothing, so every sweep shows what it saves against — and (2) dimensions can be
conditional (`when:`), e.g. `fewer_frames.num_frames` only when the objective is `fewer_frames`. The
function is a small picklable class because Tune checkpoints the searcher for `Tuner.restore`.

A search-space entry (YAML under `sweep.search_space`)::

    objective.window_frames: {type: int, low: 1, high: 4}
    objective.reco_weight:   {type: loguniform, low: 0.01, high: 1.0}
    objective.first_frame_prob: {type: choice, values: [0.5, null]}
    fewer_frames.num_frames: {type: int, low: 1, high: 3, when: {objective.kind: fewer_frames}}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from arvid_ray.config import ConfigError, ExperimentConfig

ROLE_KEY = "sweep_role"  # trial param naming the trial's role: "baseline" or "search"
_TYPES = ("int", "float", "loguniform", "choice")


@dataclass(frozen=True)
class Dimension:
    key: str
    type: str
    low: float | None = None
    high: float | None = None
    values: tuple[Any, ...] = ()
    when: tuple[tuple[str, Any], ...] = ()

    def suggest(self, trial: Any) -> Any:
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high))
        if self.type == "float":
            return trial.suggest_float(self.key, float(self.low), float(self.high))
        if self.type == "loguniform":
            return trial.suggest_float(self.key, float(self.low), float(self.high), log=True)
        return trial.suggest_categorical(self.key, list(self.values))


def parse_space(space: Mapping[str, Any], base: ExperimentConfig) -> list[Dimension]:
    """Validate `sweep.search_space` against the config's keys; errors name the key and the fix."""
    known = set(base.to_flat())
    dims: list[Dimension] = []
    for key, spec in space.items():
        where = f"sweep.search_space.{key}"
        if key not in known:
            close = sorted(k for k in known if k.split(".")[-1] == key.split(".")[-1])
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"{where}: '{key}' is not a config key{hint}")
        if not isinstance(spec, Mapping) or spec.get("type") not in _TYPES:
            raise ConfigError(f"{where} must be a mapping with type one of {', '.join(_TYPES)}, got {spec!r}")
        kind = spec["type"]
        if kind == "choice":
            values = spec.get("values")
            if not isinstance(values, Sequence) or isinstance(values, str) or not values:
                raise ConfigError(f"{where}: a choice needs a non-empty list 'values'")
            dim = Dimension(key, kind, values=tuple(values))
        else:
            low, high = spec.get("low"), spec.get("high")
            if low is None or high is None or not float(low) <= float(high):
                raise ConfigError(f"{where}: needs numeric low <= high, got low={low!r} high={high!r}")
            if kind == "loguniform" and float(low) <= 0:
                raise ConfigError(f"{where}: loguniform needs low > 0, got {low!r}")
            dim = Dimension(key, kind, low=low, high=high)
        when = spec.get("when") or {}
        if not isinstance(when, Mapping):
            raise ConfigError(f"{where}.when must be a mapping of key: value")
        dims.append(Dimension(dim.key, dim.type, dim.low, dim.high, dim.values, tuple(when.items())))
    return dims


class DefineByRun:
    """Optuna define-by-run space with the baseline as trial 0 (when enabled)."""

    def __init__(self, dims: list[Dimension], include_baseline: bool, baseline_overrides: dict[str, Any]):
        self.dims = dims
        self.include_baseline = include_baseline
        self.baseline_overrides = dict(baseline_overrides)

    def __call__(self, trial: Any) -> dict[str, Any]:
        if self.include_baseline and trial.number == 0:
            return {**self.baseline_overrides, ROLE_KEY: "baseline"}
        chosen: dict[str, Any] = {}
        for dim in self.dims:
            if all(chosen.get(k) == v for k, v in dim.when):
                chosen[dim.key] = dim.suggest(trial)
        return {ROLE_KEY: "search"}  # suggested values reach Tune through the trial's params


def trial_overrides(params: Mapping[str, Any]) -> dict[str, Any]:
    """Tune trial config → dotted config overrides (drops the role marker)."""
    return {k: v for k, v in params.items() if k != ROLE_KEY}


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of non-dominated points (all objectives minimised); NaN/inf points are never on it."""
    finite = [i for i, p in enumerate(points) if all(math.isfinite(float(v)) for v in p)]
    front = []
    for i in finite:
        dominated = any(
            all(b <= a for a, b in zip(points[i], points[j])) and any(b < a for a, b in zip(points[i], points[j]))
            for j in finite
            if j != i
        )
        if not dominated:
            front.append(i)
    return front
