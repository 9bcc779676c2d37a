"""Time to target on hand-made quality-versus-cost curves (issue 26): reached between two evaluations,
at the first, exactly at one, never; quality at a budget; seeds averaged; the RATIO lines."""

from __future__ import annotations

import pytest

from arvid_ray.metrics.time_to_target import (
    align_final,
    first_reach,
    mean_curve,
    quality_at,
    ratio_lines,
    time_to_target,
)


def test_reached_between_two_evaluations_is_interpolated():
    curve = [(1.0, 300.0), (2.0, 200.0), (4.0, 100.0)]
    hit = first_reach(curve, 150.0)
    assert hit.how == "interpolated" and hit.between == (1, 2)
    assert hit.cost == pytest.approx(3.0)  # halfway from 200 to 100 is halfway from cost 2 to 4


def test_reached_at_the_first_evaluation_says_the_crossing_is_not_measured():
    hit = first_reach([(0.5, 90.0), (1.0, 80.0)], 100.0)
    assert hit.how == "at_first" and hit.cost == 0.5 and hit.between == (0, 0)
    assert first_reach([(0.5, 100.0), (1.0, 80.0)], 100.0).how == "exact"


def test_exact_hit_and_first_crossing_wins_over_a_later_one():
    curve = [(1.0, 300.0), (2.0, 150.0), (3.0, 180.0), (4.0, 120.0)]
    assert first_reach(curve, 150.0).how == "exact" and first_reach(curve, 150.0).cost == 2.0
    # 160 is first crossed between evaluations 0 and 1, not at the later dip
    assert first_reach(curve, 160.0).between == (0, 1)


def test_never_reached_returns_none_and_the_row_gives_its_best_quality():
    assert first_reach([(1.0, 300.0), (2.0, 250.0)], 100.0) is None
    target, rows = time_to_target({"baseline": [[(1.0, 200.0), (2.0, 100.0)]],
                                   "cheap": [[(0.5, 300.0), (1.0, 180.0), (1.5, 140.0)]]}, "baseline")
    cheap = next(r for r in rows if r.name == "cheap")
    assert target == 100.0 and cheap.crossing is None and cheap.ratio is None
    assert (cheap.best_quality, cheap.best_cost) == (140.0, 1.5)
    assert "never reached the target 100 within 1.5 (best 140 at 1.5)" in cheap.line(target)
    assert ratio_lines(rows, "baseline") == ["cost_to_target_cheap_over_baseline: never reached (best 140 at 1.5)"]


def test_ratio_against_the_baseline_and_quality_at_the_same_budget():
    base = [[(1.0, 300.0), (2.0, 200.0), (4.0, 100.0)], [(1.0, 320.0), (2.0, 220.0), (4.0, 120.0)]]
    full = [[(0.5, 250.0), (1.0, 150.0), (2.0, 90.0)], [(0.5, 270.0), (1.0, 170.0), (2.0, 110.0)]]
    target, rows = time_to_target({"baseline": base, "Full method (w=4)": full}, "baseline")
    assert target == pytest.approx(110.0)  # the baseline's final mean quality
    by = {r.name: r for r in rows}
    assert by["baseline"].crossing.cost == pytest.approx(4.0) and by["baseline"].ratio == pytest.approx(1.0)
    method = by["Full method (w=4)"]
    assert method.crossing.how == "interpolated" and method.crossing.cost == pytest.approx(1.0 + 50 / 60)
    assert method.ratio == pytest.approx((1.0 + 50 / 60) / 4.0)
    assert method.quality_at_budget is None  # the method's evaluations stop at cost 2 < the budget 4
    assert by["baseline"].quality_at_budget == pytest.approx(110.0)
    assert ratio_lines(rows, "baseline") == [f"RATIO cost_to_target_full_method_w_4_over_baseline {method.ratio:.4f}"]
    assert "interpolated between evaluations 1 and 2" in method.line(target)


def test_quality_at_a_budget_interpolates_and_never_extrapolates():
    curve = [(1.0, 300.0), (3.0, 100.0)]
    assert quality_at(curve, 2.0) == pytest.approx(200.0)
    assert quality_at(curve, 3.0) == 100.0 and quality_at(curve, 0.5) is None and quality_at(curve, 3.5) is None


def test_mean_curve_truncates_to_the_shortest_seed_and_keeps_the_spread():
    mean = mean_curve([[(1.0, 10.0), (2.0, 6.0), (3.0, 5.0)], [(1.2, 14.0), (2.2, 8.0)]])
    assert mean.seeds == 2 and len(mean.cost) == 2
    assert mean.cost == pytest.approx((1.1, 2.1)) and mean.quality == pytest.approx((12.0, 7.0))
    assert mean.spread[0] == pytest.approx(2.8284, rel=1e-4)


def test_bad_curves_are_refused_naming_the_problem():
    with pytest.raises(ValueError, match="no evaluations"):
        first_reach([], 1.0)
    with pytest.raises(ValueError, match="cost decreases"):
        first_reach([(2.0, 1.0), (1.0, 0.5)], 1.0)
    with pytest.raises(ValueError, match="not among the methods"):
        time_to_target({"a": [[(1.0, 1.0)]]}, "baseline")


def test_a_crossing_at_the_first_evaluation_gives_no_ratio():
    """A first evaluation already at the target bounds the crossing from above only: no RATIO line."""
    target, rows = time_to_target({"baseline": [[(1.0, 90.0), (2.0, 100.0)]],  # noisy: final worse than first
                                   "cheap": [[(0.5, 95.0), (1.0, 80.0)]]}, "baseline")
    assert target == 100.0 and all(r.ratio is None and r.crossing.how == "at_first" for r in rows)
    assert ratio_lines(rows, "baseline") == ["cost_to_target_cheap_over_baseline: not measured (the target was "
                                             "reached at the first evaluation of this row or of the baseline: "
                                             "evaluate earlier, eval.quality_every)"]
    assert "no ratio (a first-evaluation bound)" in rows[1].line(target)


def test_budget_stopped_seeds_average_their_final_evaluations_with_each_other():
    """Seed b stopped at its budget after one more regular evaluation than seed a: the regular evaluation
    only b has is dropped, and the two final evaluations (both at the end of the budget) are averaged."""
    a = [(1.0, 50.0), (2.0, 40.0), (2.9, 35.0)]  # evaluations at steps 500, 1000, then its budget stop
    b = [(1.0, 52.0), (2.0, 42.0), (2.95, 37.0), (3.02, 36.0)]  # one more at step 1500, stop at 1510
    aligned = align_final([a, b])
    assert aligned == [a, [(1.0, 52.0), (2.0, 42.0), (3.02, 36.0)]]
    curve = mean_curve(aligned)
    assert curve.quality[-1] == pytest.approx(35.5) and curve.cost[-1] == pytest.approx(2.96)
    assert align_final([a, a]) == [a, a] and align_final([]) == []
