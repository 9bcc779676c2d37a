"""The one seed-spread judge of every results table: a mean difference judged against the seed spread."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import NamedTuple

__all__ = ["SeedComparison", "seed_spread", "compare_seeds"]


class SeedComparison(NamedTuple):
    diff: float  # mean(values) - mean(reference); lower is better, so negative = better
    spread: float  # the seed spread judged against (NaN: no group has two seeds)
    word: str  # "better" / "worse" (beyond the spread), "within" (the spread), "one seed" (no spread)


def _finite(values: Iterable[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def seed_spread(*groups: Iterable[float]) -> float:
    """The seed spread of groups of per-seed values: the largest sample standard deviation among the
    groups with at least two finite values; NaN when none has two (one seed: nothing to judge against)."""
    return max((statistics.stdev(g) for g in map(_finite, groups) if len(g) > 1), default=math.nan)


def compare_seeds(values: Iterable[float], reference: Iterable[float]) -> SeedComparison:
    """The one seed-spread judge of every results table (lower is better): the mean difference of
    ``values`` over ``reference`` (non-finite values dropped), judged against :func:`seed_spread` of
    both groups — "within" when ``|diff| <= spread``, else "better" / "worse"; "one seed" when neither
    group has two finite values. Either group empty gives a NaN difference."""
    m, r = _finite(values), _finite(reference)
    diff = statistics.fmean(m) - statistics.fmean(r) if m and r else math.nan
    spread = seed_spread(m, r)
    if not math.isfinite(spread):
        return SeedComparison(diff, spread, "one seed")
    return SeedComparison(diff, spread, "within" if abs(diff) <= spread else ("better" if diff < 0 else "worse"))
