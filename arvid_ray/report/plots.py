"""The report's PNG plots (matplotlib, non-interactive Agg backend, imported only when a plot is made):
the sweep's Pareto plot, drift curves, per-segment curves and quality against training cost."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["pareto_plot", "drift_plot", "segment_curve_plot", "quality_cost_plot"]


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


def quality_cost_plot(curves: Mapping[str, Any], path: str | Path, *, metric: str, cost: str,
                      target: float | None = None, crossings: Mapping[str, float] | None = None,
                      n: int | None = None, title: str | None = None) -> Path:
    """Quality against training cost, one line per method (``metrics.time_to_target.MeanCurve``: mean
    over seeds with a ±1 s.d. band when there are several), the target as a horizontal line and each
    method's crossing cost marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, curve in curves.items():
        line, = ax.plot(curve.cost, curve.quality, "-o", ms=3, label=f"{name} ({curve.seeds} seed{'s' * (curve.seeds > 1)})")
        if curve.seeds > 1:
            lo = [q - s for q, s in zip(curve.quality, curve.spread, strict=True)]
            hi = [q + s for q, s in zip(curve.quality, curve.spread, strict=True)]
            ax.fill_between(curve.cost, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
        at = (crossings or {}).get(name)
        if at is not None and target is not None:
            ax.plot([at], [target], marker="v", ms=8, color=line.get_color())
    if target is not None and math.isfinite(target):
        ax.axhline(target, ls="--", c="gray", lw=1)
        ax.annotate("target: the baseline's final quality", (ax.get_xlim()[0], target), fontsize=7,
                    xytext=(2, 2), textcoords="offset points", color="gray")
    ax.set_xlabel(f"training cost ({cost})")
    ax.set_ylabel(metric + (f" (N={n})" if n else "") + " — lower is better")
    ax.set_title(title or "quality against training cost (▼: first reaches the target)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    return _save(fig, plt, path)


def _save(fig, plt, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
