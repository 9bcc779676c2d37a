"""Cost-vs-quality reports: the sweep's Pareto plot, the long-horizon drift curve, markdown tables.

Design trade-off: plots are written as PNG files with matplotlib's non-interactive Agg backend and then
logged as MLflow artifacts by the caller, rather than drawn into MLflow directly, so the same files work
with tracking off, in CI and in a report directory; the sweep's cost-vs-quality chart is also written as one
self-contained HTML file (inline SVG, no CDN) that MLflow's artifact viewer shows interactively. Inputs are plain numbers and mappings (duck-typed
sweep results), which keeps this module below the sweep in the import layering.
"""

from __future__ import annotations

import html
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["pareto_plot", "drift_plot", "segment_curve_plot", "quality_cost_plot", "time_to_target_report", "markdown_table", "cost_quality_html",
           "sweep_report", "seed_spread", "compare_seeds", "SeedComparison"]


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


# ------------------------------------------------------------------------------------ interactive chart
# One self-contained HTML file (inline SVG, CSS and a few lines of JS; no CDN: clusters and CI have no
# internet). The SVG is drawn here, so the chart reads even where scripts are blocked; the script only adds
# hover/click highlighting between the points and the table. MLflow's artifact viewer shows it in a
# sandboxed iframe (scripts allowed).
_W, _H, _ML, _MR, _MT, _MB = 760, 430, 78, 24, 16, 52  # SVG size and margins (px)
_CSS = """body{font:13px system-ui,sans-serif;margin:12px;color:#222}h1{font-size:16px;margin:0 0 4px}
p.sub{margin:0 0 8px;color:#555}svg{background:#fff;border:1px solid #ddd}.grid{stroke:#eee}
.axis text,.tick{font-size:11px;fill:#555}.front{fill:none;stroke:#d1495b;stroke-width:2}
.trial circle{fill:#6c7a89;stroke:#fff;stroke-width:1.5}.trial.pareto circle{fill:#d1495b}
.trial path{fill:#edae49;stroke:#000}.trial text{font-size:10px;fill:#333}.trial.hl circle,.trial.hl path{stroke:#000;stroke-width:3}
table{border-collapse:collapse;margin-top:10px}td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;white-space:nowrap}
th{background:#f6f6f6}tr.hl td{background:#fff3c4}td.num{text-align:right;font-variant-numeric:tabular-nums}
#detail{margin-top:8px;min-height:1.4em;color:#333}"""
_JS = """const pick=id=>document.querySelectorAll('[data-trial="'+id+'"]');
const detail=document.getElementById('detail');
document.querySelectorAll('[data-trial]').forEach(el=>{
 el.addEventListener('mouseenter',()=>pick(el.dataset.trial).forEach(e=>e.classList.add('hl')));
 el.addEventListener('mouseleave',()=>pick(el.dataset.trial).forEach(e=>e.classList.remove('hl')));
 el.addEventListener('click',()=>{detail.textContent=el.dataset.info||'';});});"""


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2, 5 x 10^k steps)."""
    span = hi - lo
    raw = span / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _tick(value: float, ticks: Sequence[float]) -> str:
    """A tick label with as many decimals as the tick step needs (205.05 and 205.10, not 205 and 205)."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else abs(value) or 1.0
    if step >= 1 or abs(value) >= 1e5 or (value and abs(value) < 1e-4):
        return f"{value:.4g}"
    return f"{value:.{max(0, -math.floor(math.log10(step)))}f}"


def _domain(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or (abs(lo) * 0.1 or 1.0)
    return lo - pad, hi + pad


def _star(x: float, y: float, r: float = 10.0) -> str:
    pts = [(x + (r if i % 2 == 0 else r * 0.45) * math.sin(i * math.pi / 5),
            y - (r if i % 2 == 0 else r * 0.45) * math.cos(i * math.pi / 5)) for i in range(10)]
    return "M" + "L".join(f"{a:.1f},{b:.1f}" for a, b in pts) + "Z"


def cost_quality_html(rows: Sequence[Mapping[str, Any]], path: str | Path, *, quality_key: str = "quality",
                      cost_key: str = "cost", n: int | None = None, title: str = "cost vs quality") -> Path:
    """An interactive cost-vs-quality chart: one point per trial, Pareto front joined, baseline starred.

    ``rows``: per trial ``id``, ``name`` (the MLflow run name), ``role``, ``status``, ``quality``, ``cost``,
    ``pareto`` (bool), ``params`` (mapping) and optionally ``note`` (e.g. the error of a failed trial).
    Trials without a finite (quality, cost) are listed in the table but not plotted.
    """
    esc = html.escape
    ok = [r for r in rows if math.isfinite(float(r["quality"])) and math.isfinite(float(r["cost"]))]
    svg = [f'<svg id="chart" viewBox="0 0 {_W} {_H}" style="width:100%;max-width:{_W}px;height:auto" role="img" '
           f'aria-label="{esc(title)}">']  # scales down to MLflow's artifact pane
    if ok:
        (x0, x1), (y0, y1) = _domain([r["cost"] for r in ok]), _domain([r["quality"] for r in ok])

        def sx(v: float) -> float:
            return _ML + (v - x0) / (x1 - x0) * (_W - _ML - _MR)

        def sy(v: float) -> float:
            return _H - _MB - (v - y0) / (y1 - y0) * (_H - _MT - _MB)

        xt, yt = _nice_ticks(x0, x1), _nice_ticks(y0, y1)
        for v in xt:
            svg.append(f'<line class="grid" x1="{sx(v):.1f}" x2="{sx(v):.1f}" y1="{_MT}" y2="{_H - _MB}"/>'
                       f'<text class="tick" x="{sx(v):.1f}" y="{_H - _MB + 15}" text-anchor="middle">{_tick(v, xt)}</text>')
        for v in yt:
            svg.append(f'<line class="grid" x1="{_ML}" x2="{_W - _MR}" y1="{sy(v):.1f}" y2="{sy(v):.1f}"/>'
                       f'<text class="tick" x="{_ML - 6}" y="{sy(v) + 4:.1f}" text-anchor="end">{_tick(v, yt)}</text>')
        front = sorted((r for r in ok if r["pareto"]), key=lambda r: r["cost"])
        if len(front) > 1:
            pts = " ".join(f"{sx(r['cost']):.1f},{sy(r['quality']):.1f}" for r in front)
            svg.append(f'<polyline class="front" points="{pts}"/>')
        for r in ok:
            x, y = sx(r["cost"]), sy(r["quality"])
            mark = (f'<path d="{_star(x, y)}"/>' if r["role"] == "baseline" else f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6"/>')
            cls = "trial pareto" if r["pareto"] else "trial"
            svg.append(f'<g class="{cls}" data-trial="{esc(str(r["id"]))}" data-info="{esc(_info(r, quality_key, cost_key))}">'
                       f'<title>{esc(_info(r, quality_key, cost_key))}</title>{mark}'
                       f'{_label(x, y, str(r["name"]))}</g>')
    else:
        svg.append(f'<text x="{_W / 2}" y="{_H / 2}" text-anchor="middle">no trial has both {esc(quality_key)} and '
                   f'{esc(cost_key)}</text>')
    ylabel = f"{quality_key}" + (f" (N={n})" if n else "") + " — lower is better"
    svg.append(f'<g class="axis"><text x="{(_ML + _W - _MR) / 2}" y="{_H - 12}" text-anchor="middle">{esc(cost_key)} '
               f'— lower is better</text><text transform="translate(16,{(_MT + _H - _MB) / 2}) rotate(-90)" '
               f'text-anchor="middle">{esc(ylabel)}</text></g></svg>')
    keys = list(dict.fromkeys(k for r in rows for k in r["params"]))
    head = "".join(f"<th>{esc(h)}</th>" for h in ["trial (MLflow run)", "role", "status", "Pareto", quality_key,
                                                   cost_key, *keys])
    body = []
    for r in sorted(rows, key=lambda r: (not math.isfinite(float(r["quality"])), float(r["quality"]))):
        cells = [esc(str(r["name"])), esc(str(r["role"])), esc(str(r["status"]) + (f": {r['note']}" if r.get("note") else "")),
                 "yes" if r["pareto"] else ""]
        nums = [f'<td class="num">{_fmt(r["quality"])}</td>', f'<td class="num">{_fmt(r["cost"])}</td>']
        body.append(f'<tr data-trial="{esc(str(r["id"]))}" data-info="{esc(_info(r, quality_key, cost_key))}">'
                    + "".join(f"<td>{c}</td>" for c in cells) + "".join(nums)
                    + "".join(f"<td>{esc(_fmt(r['params'].get(k, '')))}</td>" for k in keys) + "</tr>")
    missing = len(rows) - len(ok)
    sub = (f"{len(rows)} trial(s), {sum(bool(r['pareto']) for r in rows)} on the Pareto front (red line); "
           f"★ = baseline (full objective)" + (f"; not plotted (no result): {missing}, listed below" if missing else "")
           + ". Hover or click a point or row.")
    doc = (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{esc(title)}</title><style>{_CSS}</style>'
           f'</head><body><h1>{esc(title)}</h1><p class="sub">{esc(sub)}</p>{"".join(svg)}<div id="detail"></div>'
           f'<table id="trials"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
           f'<script>{_JS}</script></body></html>\n')
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc, encoding="utf-8")
    return path


def _label(x: float, y: float, text: str) -> str:
    """A point's name beside it, to its left in the right half so it stays inside the plot."""
    left = x > (_ML + _W - _MR) / 2
    return (f'<text x="{x - 9 if left else x + 9:.1f}" y="{y - 7:.1f}" text-anchor="{"end" if left else "start"}">'
            f'{html.escape(text)}</text>')


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "–"
    return str(value)


def _info(r: Mapping[str, Any], quality_key: str, cost_key: str) -> str:
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in r["params"].items())
    return (f"{r['name']} [{r['role']}]: {quality_key}={_fmt(float(r['quality']))}, {cost_key}={_fmt(float(r['cost']))}"
            + (f"; {params}" if params else ""))


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


# ------------------------------------------------------------------------------------------ seeds
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
