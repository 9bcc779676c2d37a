"""Cost-vs-quality reports: the sweep's Pareto plot, the long-horizon drift curve, markdown tables.

Design trade-off: plots are written as PNG files with matplotlib's non-interactive Agg backend and then
logged as MLflow artifacts by the caller, rather than drawn into MLflow directly, so the same files work
with tracking off, in CI and in a report directory. Inputs are plain numbers and mappings (duck-typed
sweep results), which keeps this module below the sweep in the import layering.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["pareto_plot", "drift_plot", "segment_curve_plot", "markdown_table", "sweep_report"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display; called only when a plot is made, never at import
    import matplotlib.pyplot as plt

    return plt


def pareto_plot(points: Sequence[tuple[float, float]], path: str | Path, *, pareto: Sequence[int] = (),
                baseline: int | None = None, labels: Sequence[str] | None = None, quality_key: str = "quality",
                cost_key: str = "cost", n: int | None = None, title: str | None = None) -> Path:
    """Scatter of (quality, cost) per trial with the Pareto front joined and the baseline marked.

    ``points[i] = (quality, cost)`` (both minimised); ``pareto`` are indices on the front; ``n`` is the
    number of generated videos behind each quality number, shown on the axis label.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=120)
    finite = [i for i, (q, c) in enumerate(points) if math.isfinite(q) and math.isfinite(c)]
    ax.scatter([points[i][1] for i in finite], [points[i][0] for i in finite], c="#9aa5b1", s=30,
               label="trials", zorder=2)
    front = sorted((i for i in pareto if i in finite), key=lambda i: points[i][1])
    if front:
        ax.plot([points[i][1] for i in front], [points[i][0] for i in front], "-o", c="#d1495b", ms=7,
                label="Pareto front", zorder=3)
    if baseline is not None and baseline in finite:
        ax.scatter([points[baseline][1]], [points[baseline][0]], marker="*", s=220, c="#edae49",
                   edgecolors="k", label="baseline (full)", zorder=4)
    for i in finite if labels else ():
        ax.annotate(labels[i], (points[i][1], points[i][0]), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    ax.set_xlabel(f"{cost_key} (lower is better)")
    ax.set_ylabel(f"{quality_key}" + (f" (N={n})" if n else "") + " (lower is better)")
    ax.set_title(title or "cost vs quality")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return _save(fig, plt, path)


def drift_plot(curves: Mapping[str, Sequence[float]], path: str | Path, *, metric: str = "FD",
               n: int | None = None, floor: float | None = None, segment_frames: int | None = None) -> Path:
    """Per-segment quality of long rollouts: one line per rollout (e.g. '2x', '4x'), x = segment index."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, values in curves.items():
        ax.plot(range(1, len(values) + 1), list(values), "-o", label=f"rollout {name}")
    if floor is not None and math.isfinite(floor):
        ax.axhline(floor, ls="--", c="gray", label="real-vs-real floor")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    unit = f" ({segment_frames} frames each)" if segment_frames else ""
    ax.set_xlabel(f"temporal segment{unit}; 1 = training length")
    ax.set_ylabel(metric + (f" (N={n})" if n else ""))
    ax.set_title("long-horizon drift")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return _save(fig, plt, path)


def segment_curve_plot(curves: Mapping[str, Sequence[float]], path: str | Path, *, metric: str,
                       n: int | None = None, segment_frames: int | None = None,
                       references: Mapping[str, float] | None = None, title: str | None = None) -> Path:
    """One line per curve (a rollout such as '4x', or an ablation row) of a per-segment number — e.g. the
    ground-truth trajectory error — with optional horizontal reference lines (name → value)."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, values in curves.items():
        ax.plot(range(1, len(values) + 1), list(values), "-o", ms=4, label=str(name))
    for name, value in (references or {}).items():
        if value is not None and math.isfinite(value):
            ax.axhline(value, ls="--", c="gray", lw=1)
            ax.annotate(name, (1, value), fontsize=7, xytext=(2, 2), textcoords="offset points", color="gray")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    unit = f" ({segment_frames} frames each)" if segment_frames else ""
    ax.set_xlabel(f"temporal segment{unit}; 1 = training length")
    ax.set_ylabel(metric + (f" (N={n})" if n else ""))
    ax.set_title(title or "per-segment drift")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, plt, path)


def _save(fig, plt, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


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
    """Write ``plots/pareto.png`` and ``report.md`` for a sweep result; returns the files written.

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
    rows = []
    for t in sorted(trials, key=lambda t: t.metrics.get(result.quality_key, math.inf)):
        rows.append({"trial": t.trial_id, "role": t.role, "status": t.status,
                     "pareto": "yes" if t.trial_id in set(result.pareto) else "",
                     result.quality_key: float(t.metrics.get(result.quality_key, math.nan)),
                     result.cost_key: float(t.metrics.get(result.cost_key, math.nan)),
                     **{k: v for k, v in t.params.items() if k.startswith("objective.")}})
    text = (f"# Sweep {result.name}\n\nQuality `{result.quality_key}` and cost `{result.cost_key}` (both lower is "
            f"better); {len(result.pareto)} trial(s) on the Pareto front.\n\n![pareto](plots/pareto.png)\n\n"
            + markdown_table(rows))
    md = out / "report.md"
    md.write_text(text)
    return [plot, md]
