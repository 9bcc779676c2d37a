"""Time to target: what training cost each method pays to reach the baseline's final quality.

The paper's claim is a time-to-quality claim (MLPerf Training's measure: the cost to reach a target
quality), so the comparison is made on quality-versus-cost curves, not on end points at equal steps.
A curve is one training run's evaluations during training: ``(cost, quality)`` points in the order they
were taken (training cost — accelerator-hours or USD — at the evaluated checkpoint; quality a distance
such as FVD or FD, lower is better). Seeds of one method are averaged evaluation by evaluation (their
checkpoints sit at the same steps), with the seed spread kept as a band.

Between two evaluations the curve is taken as the straight line joining them: the cost at which a curve
first reaches a quality between two evaluations is interpolated (and flagged so), never read off a
later evaluation. A curve that reaches the target at its first evaluation says so: the true crossing
lies somewhere before it and is not known. A curve that never reaches the target reports its best
quality and that quality's cost instead of a ratio.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Point", "Crossing", "MeanCurve", "TargetRow", "first_reach", "quality_at", "mean_curve", "align_final",
           "time_to_target", "ratio_lines"]

Point = tuple[float, float]  # (training cost, quality); quality lower is better


@dataclass(frozen=True)
class Crossing:
    """Where a curve first reaches a quality: its cost, and how that cost was found."""

    cost: float
    how: str  # "interpolated" (between evaluations before/after), "exact" (an evaluation equals it),
    #           or "at_first" (already reached at the first evaluation: the crossing lies before it)
    between: tuple[int, int]  # indices of the evaluations that bracket it (equal when not interpolated)


@dataclass(frozen=True)
class MeanCurve:
    """Seeds of one method averaged evaluation by evaluation."""

    cost: tuple[float, ...]  # mean training cost at each evaluation
    quality: tuple[float, ...]  # mean quality
    spread: tuple[float, ...]  # sample standard deviation of the quality across seeds (0 for one seed)
    seeds: int

    @property
    def points(self) -> list[Point]:
        return list(zip(self.cost, self.quality, strict=True))


@dataclass(frozen=True)
class TargetRow:
    """One method against the target (the baseline's final mean quality)."""

    name: str
    crossing: Crossing | None  # None: never reached within its evaluations
    ratio: float | None  # crossing cost over the baseline's crossing cost
    best_quality: float
    best_cost: float
    quality_at_budget: float | None  # the method's quality at the baseline's final cost (None: not evaluated that far)
    final_cost: float

    def line(self, target: float) -> str:
        if self.crossing is None:
            return (f"{self.name}: never reached the target {target:.4g} within {self.final_cost:.4g} "
                    f"(best {self.best_quality:.4g} at {self.best_cost:.4g})")
        note = {"interpolated": f"interpolated between evaluations {self.crossing.between[0]} and "
                                f"{self.crossing.between[1]}",
                "exact": f"at evaluation {self.crossing.between[0]}",
                "at_first": "already at the first evaluation; the crossing is earlier, not measured"}
        ratio = f"{self.ratio:.3f}x the baseline's" if self.ratio is not None else "no ratio (a first-evaluation bound)"
        return (f"{self.name}: reaches the target {target:.4g} at cost {self.crossing.cost:.4g} "
                f"({note[self.crossing.how]}); {ratio}")


def _check(curve: Sequence[Point], what: str) -> None:
    if not curve:
        raise ValueError(f"{what}: no evaluations (set eval.quality_every > 0 to evaluate during training)")
    costs = [c for c, _ in curve]
    if any(not math.isfinite(c) or not math.isfinite(q) for c, q in curve):
        raise ValueError(f"{what}: a cost or quality is not finite: {list(curve)}")
    if any(b < a for a, b in zip(costs, costs[1:], strict=False)):
        raise ValueError(f"{what}: training cost decreases between evaluations: {costs}")


def first_reach(curve: Sequence[Point], target: float) -> Crossing | None:
    """Cost at which ``curve`` first has quality <= ``target`` (linear between evaluations), or None."""
    _check(curve, "curve")
    for i, (cost, quality) in enumerate(curve):
        if quality > target:
            continue
        if i == 0:
            return Crossing(cost, "exact" if quality == target else "at_first", (0, 0))
        if quality == target:
            return Crossing(cost, "exact", (i, i))
        (c0, q0) = curve[i - 1]
        cost_at = c0 + (q0 - target) / (q0 - quality) * (cost - c0)  # q0 > target > quality here
        return Crossing(cost_at, "interpolated", (i - 1, i))
    return None


def quality_at(curve: Sequence[Point], budget: float) -> float | None:
    """The curve's quality at training cost ``budget`` (linear between evaluations); None when the budget
    lies before the first evaluation or beyond the last (not measured: no extrapolation)."""
    _check(curve, "curve")
    if budget < curve[0][0] or budget > curve[-1][0]:
        return None
    for (c0, q0), (c1, q1) in zip(curve, curve[1:], strict=False):
        if c0 <= budget <= c1:
            return q0 if c1 == c0 else q0 + (budget - c0) / (c1 - c0) * (q1 - q0)
    return curve[-1][1]  # a single evaluation at exactly the budget


def mean_curve(seeds: Sequence[Sequence[Point]]) -> MeanCurve:
    """Average several seeds' curves evaluation by evaluation (truncated to the shortest: a seed whose
    later evaluations are missing does not bias the later means)."""
    if not seeds:
        raise ValueError("mean_curve: no seeds")
    for i, curve in enumerate(seeds):
        _check(curve, f"seed {i}")
    n = min(len(c) for c in seeds)
    cost = tuple(statistics.fmean(c[k][0] for c in seeds) for k in range(n))
    quality = tuple(statistics.fmean(c[k][1] for c in seeds) for k in range(n))
    spread = tuple(statistics.stdev([c[k][1] for c in seeds]) if len(seeds) > 1 else 0.0 for k in range(n))
    return MeanCurve(cost, quality, spread, len(seeds))


def align_final(seeds: Sequence[Sequence[Point]]) -> list[list[Point]]:
    """Seeds of a run stopped by its training budget (train.budget_gpu_hours): each ends with an evaluation at
    the step where its budget ran out, which differs by seed, so one seed may have one more regular
    evaluation before it. Keep the regular evaluations every seed has, then each seed's final one, so that
    :func:`mean_curve` averages the final evaluations with each other (each at the end of the budget)."""
    if not seeds:
        return []
    regular = min(len(c) for c in seeds) - 1
    return [list(c[:regular]) + [c[-1]] for c in seeds]


def time_to_target(methods: Mapping[str, Sequence[Sequence[Point]]], baseline: str) -> tuple[float, list[TargetRow]]:
    """The target (the baseline's final mean quality) and, per method, the cost at which its mean curve
    first reaches it, as a ratio to the baseline's own crossing; each method's quality at the baseline's
    final cost (the same budget) beside it."""
    if baseline not in methods:
        raise ValueError(f"time_to_target: baseline {baseline!r} is not among the methods {sorted(methods)}")
    curves = {name: mean_curve(seeds) for name, seeds in methods.items()}
    base = curves[baseline]
    target, budget = base.quality[-1], base.cost[-1]
    base_cross = first_reach(base.points, target)
    assert base_cross is not None  # its last evaluation is the target
    rows = []
    for name, curve in curves.items():
        points = curve.points
        crossing = first_reach(points, target)
        best = min(range(len(points)), key=lambda k: (points[k][1], points[k][0]))
        rows.append(TargetRow(
            name=name, crossing=crossing,
            ratio=(crossing.cost / base_cross.cost if crossing is not None and base_cross.cost > 0
                   and "at_first" not in (crossing.how, base_cross.how) else None),  # a bound is not a ratio
            best_quality=points[best][1], best_cost=points[best][0],
            quality_at_budget=quality_at(points, budget), final_cost=points[-1][0]))
    return target, rows


def ratio_lines(rows: Sequence[TargetRow], baseline: str) -> list[str]:
    """``RATIO cost_to_target_<row>_over_baseline <value>`` per row that reaches the target; a row that
    never does gets a plain line with its best quality instead (a ratio would be a made-up number)."""
    out = []
    for row in rows:
        if row.name == baseline:
            continue
        key = re.sub(r"[^a-z0-9]+", "_", row.name.lower()).strip("_")
        if row.ratio is None and row.crossing is not None:
            out.append(f"cost_to_target_{key}_over_baseline: not measured (the target was reached at the first "
                       f"evaluation of this row or of the baseline: evaluate earlier, eval.quality_every)")
        elif row.ratio is None:
            out.append(f"cost_to_target_{key}_over_baseline: never reached "
                       f"(best {row.best_quality:.4g} at {row.best_cost:.4g})")
        else:
            out.append(f"RATIO cost_to_target_{key}_over_baseline {row.ratio:.4f}")
    return out
