"""The sweep's interactive cost-versus-quality chart: one self-contained HTML file."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["cost_quality_html"]


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
