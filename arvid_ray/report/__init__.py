"""Cost-vs-quality reports: the sweep's Pareto plot, the long-horizon drift curve, markdown tables.

Design trade-off: plots are written as PNG files with matplotlib's non-interactive Agg backend and then
logged as MLflow artifacts by the caller, rather than drawn into MLflow directly, so the same files work
with tracking off, in CI and in a report directory; the sweep's cost-vs-quality chart is also written as one
self-contained HTML file (inline SVG, no CDN) that MLflow's artifact viewer shows interactively. Inputs are plain numbers and mappings (duck-typed
sweep results), which keeps this package below the sweep in the import layering.

One job per module: ``plots`` (the PNGs), ``chart`` (the interactive HTML chart), ``documents`` (markdown
tables, ``report.md`` and ``time_to_target.md``), ``seeds`` (the one seed-spread judge of every results
table). Every name is importable from ``arvid_ray.report``.
"""

from arvid_ray.report.chart import cost_quality_html
from arvid_ray.report.documents import markdown_table, sweep_report, time_to_target_report
from arvid_ray.report.plots import drift_plot, pareto_plot, quality_cost_plot, segment_curve_plot
from arvid_ray.report.seeds import SeedComparison, compare_seeds, seed_spread

__all__ = ["pareto_plot", "drift_plot", "segment_curve_plot", "quality_cost_plot", "time_to_target_report", "markdown_table", "cost_quality_html",
           "sweep_report", "seed_spread", "compare_seeds", "SeedComparison"]
