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
        for cond_key, cond_value in when.items():
            _check_condition(where, cond_key, cond_value, {d.key: d for d in dims}, space, known)
        dims.append(Dimension(dim.key, dim.type, dim.low, dim.high, dim.values, tuple(when.items())))
    return dims


def _check_condition(where: str, key: str, value: Any, earlier: Mapping[str, Dimension],
                     space: Mapping[str, Any], known: set[str]) -> None:
    """A `when:` is only ever true on a dimension sampled before it; on anything else the dimension it
    guards would silently never be sampled."""
    if key not in known:
        raise ConfigError(f"{where}.when: '{key}' is not a config key, so this dimension would never be "
                          f"sampled; name a search-space dimension declared above it")
    if key not in space:
        raise ConfigError(f"{where}.when: '{key}' is fixed (not in sweep.search_space), so this dimension "
                          f"would never be sampled; drop the when:, or add '{key}' to the search space above it")
    if key not in earlier:
        raise ConfigError(f"{where}.when: '{key}' is declared after this dimension, so this dimension would "
                          f"never be sampled; move sweep.search_space.{key} above it")
    cond = earlier[key]
    if cond.type == "choice" and value not in cond.values:
        raise ConfigError(f"{where}.when: {key}={value!r} is not among its values {list(cond.values)}, so this "
                          f"dimension would never be sampled; use one of them")


_NAMESPACES = ("eval/", "control/", "cost/", "train/")
_NOT_EXTRACTOR = ("eval/fd_floor", "eval/fd_floor_n", "eval/fd_recon")


def _extractor_keyed(metric: str) -> bool:
    """A Fréchet/KVD key whose name depends on eval.extractor (eval/fvd, eval/fd_<proxy>, ...)."""
    name = "eval/" + metric.split("/", 1)[1] if metric.startswith("control/") else metric
    return name not in _NOT_EXTRACTOR and (name in ("eval/fvd", "eval/kvd")
                                           or name.startswith(("eval/fd_", "eval/kvd_")))


def check_metrics(cfg: ExperimentConfig) -> None:
    """sweep.metric (and the cost metric in multi mode) must be something a trial logs: a Fréchet/KVD key
    must be the one eval.extractor produces (eval/fvd only comes from i3d)."""
    from arvid_ray.evaluate import metric_names

    fd, kvd = metric_names(cfg.eval.extractor)
    fields = [("sweep.metric", cfg.sweep.metric)]
    if cfg.sweep.mode == "multi":
        fields.append(("sweep.cost_metric", cfg.sweep.cost_metric))
    for name, metric in fields:
        if not metric.startswith(_NAMESPACES):
            raise ConfigError(f"{name} = {metric!r} is never logged: trial metrics start with "
                              f"{', '.join(_NAMESPACES)} (e.g. {fd}, cost/gpu_hours)")
        if _extractor_keyed(metric) and metric.split("/", 1)[1] not in (fd.split("/")[1], kvd.split("/")[1]):
            raise ConfigError(f"{name} = {metric!r} is never logged with eval.extractor={cfg.eval.extractor} "
                              f"(it logs {fd} and {kvd}); set {name}={fd}, or choose the extractor that logs "
                              f"{metric}")


def _batch_values(dims: list[Dimension], key: str, base: Any) -> list[Any]:
    for dim in dims:
        if dim.key == key:
            if dim.type == "choice":
                return list(dim.values)
            if dim.type == "int":
                return list(range(int(dim.low), int(dim.high) + 1))
    return [base]


def check_batch(cfg: ExperimentConfig, dims: list[Dimension] = ()) -> None:
    """train.global_batch_size must split into workers x data.batch_size micro-batches, for the base
    config and every value the search space can give those three keys — before any worker starts."""
    import itertools

    combos = itertools.product(_batch_values(list(dims), "train.global_batch_size", cfg.train.global_batch_size),
                               _batch_values(list(dims), "train.num_workers", cfg.train.num_workers),
                               _batch_values(list(dims), "data.batch_size", cfg.data.batch_size))
    for batch, workers, micro in combos:
        per_step = max(int(workers), 1) * int(micro)
        if int(batch) % per_step:
            raise ConfigError(
                f"train.global_batch_size = {batch} is not a multiple of train.num_workers ({max(int(workers), 1)}) "
                f"x data.batch_size ({micro}) = {per_step}; set train.global_batch_size to a multiple of "
                f"{per_step} (e.g. {per_step * max(1, round(int(batch) / per_step))}) or change the micro-batch")


QUALITY_STEP = "quality/step"  # the checkpoint step of the quality point a Tune result carries


def asha_target(cfg: ExperimentConfig) -> tuple[str, str, int]:
    """(metric, time_attr, grace period) ASHA prunes on in single mode. ``sweep.prune_on=val_ce``:
    eval/val_ce at its step. ``quality``: quality/<sweep.metric's name> (what the evaluation during training
    logs) at the step of the checkpoint it was measured on (``quality/step``); the grace period is
    sweep.asha_grace_steps rounded up to a multiple of eval.quality_every, so every rung (grace x 2^k) is a
    step with an evaluation and compares the trials' quality at that same step (results without a quality
    point are ignored by ASHA: it skips a result that lacks its metric or time_attr)."""
    sw, steps = cfg.sweep, cfg.train.steps
    if sw.prune_on == "quality":
        every = cfg.eval.quality_every
        grace = -(-max(sw.asha_grace_steps, 1) // every) * every if every > 0 else sw.asha_grace_steps
        return "quality/" + sw.metric.split("/", 1)[-1], QUALITY_STEP, min(grace, steps)
    return "eval/val_ce", "step", min(sw.asha_grace_steps, steps)


def check_pruning(cfg: ExperimentConfig) -> None:
    """sweep.prune_on=quality needs single mode (multi mode has no ASHA: its Pareto front reads the final
    values), evaluations during training (eval.quality_every > 0) whose first rung comes before the last
    step, and a sweep.metric those evaluations log."""
    sw = cfg.sweep
    if sw.prune_on != "quality":
        return
    if sw.mode != "single":
        raise ConfigError(f"sweep.prune_on = 'quality' with sweep.mode = {sw.mode!r}: only single mode prunes "
                          f"(multi mode's Pareto front reads the final values, with no ASHA); set sweep.mode=single "
                          f"or sweep.prune_on=val_ce")
    if cfg.eval.quality_every <= 0:
        raise ConfigError("sweep.prune_on = 'quality' needs the quality during training, but eval.quality_every = 0 "
                          "(final evaluation only); set eval.quality_every to a multiple of train.ckpt_every "
                          f"(={cfg.train.ckpt_every}) below train.steps, or sweep.prune_on=val_ce")
    fd, kvd = _metric_names(cfg)
    logged = [fd, kvd] + (["eval/traj_error"] if cfg.data.source == "synthetic" and cfg.eval.trajectory_videos else [])
    if sw.metric not in logged:
        raise ConfigError(f"sweep.prune_on = 'quality' prunes on quality/<name of sweep.metric>, but the evaluation "
                          f"during training does not log {sw.metric!r} (it logs {', '.join(logged)} under quality/); "
                          f"set sweep.metric={fd}, or sweep.prune_on=val_ce")
    _, _, grace = asha_target(cfg)
    if grace >= cfg.train.steps:
        raise ConfigError(f"sweep.prune_on = 'quality': ASHA's first rung (sweep.asha_grace_steps="
                          f"{sw.asha_grace_steps} rounded up to a multiple of eval.quality_every={cfg.eval.quality_every}"
                          f") is step {grace}, not before train.steps={cfg.train.steps}, so no trial could ever be "
                          f"pruned (the last checkpoint's quality comes after the last report); lower "
                          f"eval.quality_every or sweep.asha_grace_steps")


def _metric_names(cfg: ExperimentConfig) -> tuple[str, str]:
    from arvid_ray.evaluate import metric_names

    return metric_names(cfg.eval.extractor)


def check_sweep(cfg: ExperimentConfig) -> list[Dimension]:
    """Every sweep mistake that can be found before launch: the search space (non-empty, real keys,
    `when:` that can be true), the metrics a trial logs, what ASHA prunes on, batch divisibility. Returns
    the dimensions."""
    if not cfg.sweep.search_space:
        raise ConfigError("sweep.search_space is empty: every trial would repeat the base config; add at least "
                          "one dimension (e.g. objective.window_frames: {type: int, low: 1, high: 4})")
    dims = parse_space(cfg.sweep.search_space, cfg)
    check_metrics(cfg)
    check_pruning(cfg)
    check_batch(cfg, dims)
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
