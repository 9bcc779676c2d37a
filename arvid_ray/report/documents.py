"""The report's documents: markdown tables, a sweep's ``report.md`` (with its Pareto plot and interactive
chart) and ``time_to_target.md`` (with the quality-versus-cost plot)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from arvid_ray.report.chart import cost_quality_html
from arvid_ray.report.plots import pareto_plot, quality_cost_plot

__all__ = ["markdown_table", "sweep_report", "time_to_target_report"]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub markdown table; columns default to the union of keys in first-seen order."""
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def sweep_report(result: Any, out: str | Path) -> list[Path]:
    """Write ``plots/pareto.png``, ``plots/cost_quality.html`` (interactive) and ``report.md`` for a sweep
    result; returns the files written.

    ``result`` needs ``name``, ``quality_key``, ``cost_key``, ``trials`` (each with ``trial_id``, ``role``,
    ``status``, ``params``, ``metrics``) and ``pareto`` (trial ids) — the sweep's SweepResult.
    """
    out = Path(out)
    trials = list(result.trials)
    points = [(float(t.metrics.get(result.quality_key, math.nan)), float(t.metrics.get(result.cost_key, math.nan)))
              for t in trials]
    front = [i for i, t in enumerate(trials) if t.trial_id in set(result.pareto)]
    base = next((i for i, t in enumerate(trials) if t.role == "baseline"), None)
    ns = {t.metrics.get("eval/num_videos") for t in trials if t.metrics.get("eval/num_videos")}
    plot = pareto_plot(points, out / "plots" / "pareto.png", pareto=front, baseline=base,
                       labels=[t.trial_id[-5:] for t in trials], quality_key=result.quality_key,
                       cost_key=result.cost_key, n=int(next(iter(ns))) if len(ns) == 1 else None,
                       title=f"sweep {result.name}")
    chart = cost_quality_html(
        [{"id": t.trial_id, "name": f"{result.name}-{t.trial_id}", "role": t.role, "status": t.status,
          "quality": q, "cost": c, "pareto": t.trial_id in set(result.pareto), "params": t.params,
          "note": getattr(t, "error", None)} for t, (q, c) in zip(trials, points)],
        out / "plots" / "cost_quality.html", quality_key=result.quality_key, cost_key=result.cost_key,
        n=int(next(iter(ns))) if len(ns) == 1 else None, title=f"sweep {result.name}: cost vs quality")
    rows = []
    for t in sorted(trials, key=lambda t: t.metrics.get(result.quality_key, math.inf)):
        rows.append({"trial": t.trial_id, "role": t.role, "status": t.status,
                     "pareto": "yes" if t.trial_id in set(result.pareto) else "",
                     result.quality_key: float(t.metrics.get(result.quality_key, math.nan)),
                     result.cost_key: float(t.metrics.get(result.cost_key, math.nan)),
                     **{k: v for k, v in t.params.items() if k.startswith("objective.")}})
    text = (f"# Sweep {result.name}\n\nQuality `{result.quality_key}` and cost `{result.cost_key}` (both lower is "
            f"better); {len(result.pareto)} trial(s) on the Pareto front.\n\n![pareto](plots/pareto.png)\n\n"
            "Interactive version (trial names, params): `plots/cost_quality.html`.\n\n"
            + markdown_table(rows))
    md = out / "report.md"
    md.write_text(text)
    return [plot, chart, md]


def time_to_target_report(curves: Mapping[str, Sequence[Sequence[tuple[float, float]]]], out: str | Path, *,
                          baseline: str | None, quality_key: str, cost_key: str, title: str = "") -> tuple[list[Path], list[str]]:
    """``plots/quality_vs_cost.png`` and ``time_to_target.md`` from evaluations during training.

    ``curves``: per method (or trial), its seeds' curves of (training cost, quality). With a ``baseline``
    among them the target is its final mean quality, and each method gets the cost at which it first
    reaches it (``metrics.time_to_target``) and its quality at the baseline's final cost. Returns the files
    and the verdict lines (``RATIO cost_to_target_<row>_over_baseline`` or "never reached")."""
    from arvid_ray.metrics.time_to_target import mean_curve, ratio_lines, time_to_target

    out = Path(out)
    means = {name: mean_curve(seeds) for name, seeds in curves.items()}
    target, rows, lines = None, [], []
    if baseline is not None and baseline in curves:
        target, rows = time_to_target(curves, baseline)
        lines = [r.line(target) for r in rows] + ratio_lines(rows, baseline)
    plot = quality_cost_plot(means, out / "plots" / "quality_vs_cost.png", metric=quality_key, cost=cost_key,
                             target=target, crossings={r.name: r.crossing.cost for r in rows if r.crossing},
                             title=title or None)
    table = [{"method": r.name, "reaches target at": r.crossing.cost if r.crossing else math.nan,
              "how": r.crossing.how if r.crossing else "never", "x baseline": r.ratio if r.ratio is not None else math.nan,
              "quality at the baseline's final cost": r.quality_at_budget if r.quality_at_budget is not None else math.nan,
              "best quality": r.best_quality, "at cost": r.best_cost} for r in rows]
    text = (f"# Time to target{': ' + title if title else ''}\n\nQuality `{quality_key}` (lower is better) against "
            f"training cost `{cost_key}`, evaluated during training; between two evaluations the curve is the "
            f"straight line joining them (interpolated crossings say so).\n\n![quality vs cost](plots/quality_vs_cost.png)\n\n")
    if target is None:
        text += "No baseline curve: no target, no ratios.\n"
    else:
        text += f"Target: the baseline's final quality, {target:.4g}.\n\n" + markdown_table(table) + "\n\n```\n"
        text += "\n".join(lines) + "\n```\n"
    md = out / "time_to_target.md"
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text)
    return [plot, md], lines
