"""The time-to-quality study (``reproduce_paper.py --study cost``): what does each method pay to reach the
baseline's quality?

    python experiments/reproduce_paper.py --study cost --scale cpu --seeds 0 1 2   # the committed CPU study
    python experiments/reproduce_paper.py --study cost --scale cpu --quick         # the benchmark: 1 seed, RATIO lines
    python experiments/reproduce_paper.py --study cost --smoke-test --rows 0 2     # CI

Three rows — the baseline, Fewer-Frames and the full method (the ablation's last row: Local Opt. with the
first frame, balanced starts and ReCo) — each get the same training-cost budget (``train.budget_gpu_hours``,
the baseline's), not the same steps: a cheaper step buys more steps, and each row's learning-rate cosine spans
its budget. Every ``eval.quality_every`` steps, and at the step where the budget runs out, the checkpoint is
evaluated off the training path (``arvid_ray.evaluate.during``) and logged with the training cost at that
checkpoint. The target is the baseline's final quality (mean over seeds); the study reports the cost at which
each row first reaches it (interpolated between evaluations, and said so), each seed's own cost to reach it
(judged against the seed spread), each row's quality when the budget is spent (the final evaluation,
N = eval.num_videos, with the long rollouts), and Fewer-Frames' drift at 4x length. The verdict lines are
computed from those numbers, whichever way they fall.

Cost on one machine: training cost is accelerator-hours = cores x wall time, so a trial slowed by another
job pays more. The CPU scale runs the trials three at a time on the 2-core machine, launched seed by seed
(each wave is one seed's baseline, Fewer-Frames and full method side by side), so the rows compared within
a seed shared the machine alike; the evaluations during training are Ray tasks of one CPU beside them (on a
cluster they get resources of their own).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import reproduce_paper as rp

from arvid_ray.report import compare_seeds

BASELINE, FEWER, FULL = rp.ROWS[0][0], rp.ROWS[1][0], rp.ROWS[-1][0]
ROWS: list[tuple[str, dict]] = [rp.ROWS[0], rp.ROWS[1], rp.ROWS[-1]]
COST_KEY = "quality/cost_gpu_hours"

SCALES = {
    # the ablation's 6,000-step regime, now bounded by cost: 0.3 accelerator-hours per trial is ~6,000 baseline
    # steps at three 1-thread trials on 2 cores (the ablation's baseline: 6,000 steps in 0.21 h at two); steps
    # is only a cap. An evaluation of 32 videos every 500 steps, checkpoints at the same steps.
    "cpu": [*rp.SCALES["cpu"], "train.budget_gpu_hours=0.3", "train.steps=40000", "train.ckpt_every=500",
            "eval.quality_every=500", "eval.quality_videos=32", "sweep.max_concurrent_trials=3"],
    # a GPU cluster: set train.budget_gpu_hours to the baseline's budget on your hardware (GPU-hours per trial)
    "paper": [*rp.SCALES["paper"], "train.budget_gpu_hours=8", "train.steps=400000", "train.ckpt_every=2000",
              "eval.quality_every=2000", "eval.quality_videos=256"],
}
QUICK = [*rp.QUICK, "train.budget_gpu_hours=0.025", "train.steps=20000", "train.ckpt_every=100",
         "eval.quality_every=100", "eval.quality_videos=16"]
SMOKE = [*rp.SMOKE, "train.budget_gpu_hours=0.001", "train.steps=24", "train.ckpt_every=4",
         "eval.quality_every=4", "eval.quality_videos=4", "sweep.name=reproduce-cost-smoke"]
LOCAL_CPUS = {"cpu": 6}  # three trials (1 + 0.25 each), an evaluation task of 1 CPU, Ray Data


def overrides(scale: str, *, quick: bool = False, smoke: bool = False) -> list[str]:
    if smoke:
        return list(SMOKE)
    return [*SCALES[scale], *(QUICK if quick else [])]


def local_cpus(scale: str, smoke: bool = False) -> int | None:
    """Logical CPUs of the local Ray the study starts (None: the default; a cluster decides its own)."""
    return None if smoke else LOCAL_CPUS.get(scale)


def quality_key(cfg) -> str:
    return "quality/" + ("fvd" if cfg.eval.extractor == "i3d" else "fd_synthc3d")


def curves_by_row(uri: str, parent_run_id: str, key: str):
    """(the parent run, per row its seeds' quality-against-cost curves) from the trials' MLflow runs (the
    evaluations during training), aligned so that the final evaluations — each at the end of its budget —
    average together."""
    from arvid_ray.metrics.time_to_target import align_final
    from arvid_ray.tracking.runs import ROLE_TAG, TRIAL_TAG, child_runs, quality_curves

    parent, children = child_runs(uri, parent_run_id)
    role = {r.data.tags.get(TRIAL_TAG, r.info.run_id): r.data.tags.get(ROLE_TAG, "?") for r in children}
    out: dict[str, list] = {}
    for trial, points in sorted(quality_curves(uri, parent_run_id, key, COST_KEY).items()):
        out.setdefault(role.get(trial, "?"), []).append(points)
    return parent, {name: align_final(out[name]) for name, _ in ROWS if name in out}


def _judge(values, reference, what: str, unit: str = "") -> str:
    diff, spread, word = compare_seeds(values, reference)
    if not math.isfinite(diff):
        return f"{what}: not measured"
    if word == "one seed":
        return f"{what} {diff:+.3g}{unit} (one seed: no spread to judge it against)"
    if word == "within":
        return f"{what} {diff:+.3g}{unit}, within the seed spread ±{spread:.2g}"
    return f"{what} {diff:+.3g}{unit}: {word}, beyond the seed spread ±{spread:.2g}"


def seed_costs_to_target(curves: list[list[tuple[float, float]]], target: float) -> list[float]:
    """Each seed's own cost to first reach ``target`` (NaN for a seed that never does)."""
    from arvid_ray.metrics.time_to_target import first_reach

    out = []
    for curve in curves:
        crossing = first_reach(curve, target)
        out.append(crossing.cost if crossing is not None else math.nan)
    return out


def verdicts(metric, curves, target: float, rows) -> list[str]:
    """(0) the regime discriminates; (1) does the full method reach the baseline's final quality, at what
    fraction of its cost, and is that beyond the seed spread; is its quality at the end of the same budget
    better or worse; (2) the same for Fewer-Frames, and does it drift more at 4x length."""
    by_name = {r.name: r for r in rows}
    out = [rp.regime_verdict(metric)]
    fd = rp.COLUMNS[0][1]
    for tag, name in (("(1)", FULL), ("(2)", FEWER)):
        row = by_name.get(name)
        if row is None:
            out.append(f"- {tag} {name}: not run.")
            continue
        if row.crossing is None:
            reach = (f"never reaches the baseline's final quality {target:.4g} within the budget (best "
                     f"{row.best_quality:.4g} at {row.best_cost:.4g} acc.-h)")
        elif row.ratio is None:
            reach = (f"reaches the baseline's final quality {target:.4g} already at its first evaluation "
                     f"(a bound, not a measured cost: evaluate earlier)")
        else:
            reach = (f"reaches the baseline's final quality {target:.4g} at {row.crossing.cost:.4g} acc.-h = "
                     f"**{row.ratio:.2f}× the baseline's cost** to reach it ({row.crossing.how})")
        own = seed_costs_to_target(curves.get(name, []), target)
        base = seed_costs_to_target(curves.get(BASELINE, []), target)
        never = sum(not math.isfinite(c) for c in own)
        seeds = (f"{never} of {len(own)} seeds never reach it" if never else
                 _judge(own, base, "per-seed cost to reach it vs the baseline's", " acc.-h"))
        at_budget = _judge(metric(name, fd), metric(BASELINE, fd), f"final {fd} (N at the final evaluation) vs the baseline")
        out.append(f"- {tag} {name} at the baseline's budget: {reach}; {seeds}; {at_budget}.")
    for key, what in (("eval/traj_error_seg4", "segment-4 trajectory error of the 4x rollout"),
                      ("eval/drift_4x", "FD of the 4x rollout")):
        f, b = metric(FEWER, key), metric(BASELINE, key)
        diff, spread, word = compare_seeds(f, b)
        if not math.isfinite(diff):
            out.append(f"- (2b) Fewer-Frames {what}: not measured.")
            continue
        said = {"worse": "drifts more than the baseline, beyond the seed spread",
                "better": "drifts less than the baseline, beyond the seed spread",
                "within": "within the seed spread of the baseline", "one seed": "one seed: no spread"}[word]
        out.append(f"- (2b) Fewer-Frames {what}: {rp._mean(f):.4g} vs baseline {rp._mean(b):.4g} ({diff:+.3g}"
                   + (f", spread ±{spread:.2g}" if math.isfinite(spread) else "") + f") → {said}.")
    return out


def ratio_values(metric, rows) -> dict[str, float]:
    """RATIO lines besides ``cost_to_target_*``: steps bought by the same budget, and quality and drift at its end."""
    over = lambda row, key: rp._mean(metric(row, key)) / rp._mean(metric(BASELINE, key))  # noqa: E731
    return {"full_method_steps_over_baseline": over(FULL, "step"),
            "fewer_frames_steps_over_baseline": over(FEWER, "step"),
            "full_method_cost_over_baseline": over(FULL, "cost/gpu_hours"),
            "full_method_fd_at_budget_over_baseline": over(FULL, rp.COLUMNS[0][1]),
            "fewer_frames_seg4_traj_over_baseline": over(FEWER, "eval/traj_error_seg4")}


def _cell(values, fmt: str = "{:.4g}") -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "—"
    return fmt.format(statistics.fmean(vals)) + (f" ± {statistics.stdev(vals):.2g}" if len(vals) > 1 else "")


def build_study(result, cfg, seeds, command: str, when: dt.date, curves, plot_name: str,
                wall: str = "") -> tuple[str, list[str]]:
    """The study's markdown and its RATIO lines."""
    from arvid_ray.metrics.time_to_target import ratio_lines, time_to_target

    by_row, metric = rp._metric_fn(result)
    qkey, fd = quality_key(cfg), rp.COLUMNS[0][1]
    target, rows = (time_to_target(curves, BASELINE) if BASELINE in curves else (math.nan, []))
    by_name = {r.name: r for r in rows}
    budget = cfg.train.budget_gpu_hours
    lines = [
        f"# Time to quality at equal training budgets, reproduced with arvid-ray — {when.isoformat()}",
        "",
        f"- command: `{command}`",
        f"- machine: {platform.node()} ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)",
        f"- data: {cfg.data.source} at {cfg.data.resolution}px, {cfg.data.num_frames} frames; model preset "
        f"{cfg.model.preset}; global batch {cfg.train.global_batch_size}",
        f"- budget: **{budget:g} accelerator-hours per trial** (train.budget_gpu_hours; CPU cores × wall time here), "
        f"the same for every row; train.steps = {cfg.train.steps} is only a cap; each row's learning-rate cosine "
        f"spans the budget; {cfg.sweep.max_concurrent_trials} trials at a time",
        f"- evaluated during training every {cfg.eval.quality_every} steps and at the budget's last step: "
        f"`{qkey}` of {cfg.eval.quality_videos or cfg.eval.num_videos} videos (the curves); final evaluation at "
        f"the end of the budget: N = {cfg.eval.num_videos} ({cfg.eval.drift_videos or cfg.eval.num_videos} per "
        f"long rollout); seeds = {seeds}; mean ± std over seeds",
        *([f"- wall: {wall}"] if wall else []),
        "",
        f"![quality against training cost]({plot_name})",
        "",
        "| row | steps bought | cost spent (acc.-h) | stopped by the budget | first reaches the target at (acc.-h) "
        "| × baseline's | quality at the baseline's final cost | best in-training quality | "
        f"final {fd} ↓ | drift 4x ↓ | traj. err. seg 4 ↓ | val CE ↓ | trials |",
        "|---|" + "---|" * 12,
    ]
    for name, _ in ROWS:
        trials = by_row.get(name, [])
        stopped = sum(t.metrics.get("train/budget_stop", 0) > 0 for t in trials)
        r = by_name.get(name)
        reach = ("never" if r is None or r.crossing is None else f"{r.crossing.cost:.4g} ({r.crossing.how})")
        ratio = f"{r.ratio:.2f}×" if r is not None and r.ratio is not None else "—"
        at = f"{r.quality_at_budget:.4g}" if r is not None and r.quality_at_budget is not None else "—"
        best = f"{r.best_quality:.4g} at {r.best_cost:.3g}" if r is not None else "—"
        failed = sum(t.status == "ERROR" for t in trials)
        lines.append(" | ".join([
            f"| {name}", _cell(metric(name, "step"), "{:.0f}"), _cell(metric(name, "cost/gpu_hours")),
            f"{stopped} of {len(trials)}", reach if r is not None else "—", ratio, at, best,
            _cell(metric(name, fd)), _cell(metric(name, "eval/drift_4x")), _cell(metric(name, "eval/traj_error_seg4")),
            _cell(metric(name, "eval/val_ce")), f"{len(trials)}" + (f" ({failed} failed)" if failed else "") + " |"]))
    ratios = ratio_lines(rows, BASELINE) if rows else []
    lines += ["", f"Target: the baseline's final in-training quality, {target:.4g} (`{qkey}`, mean over its seeds). "
              "Between two evaluations a curve is the straight line joining them; 'interpolated' crossings say so.",
              "", "Controls (not rows):"] + rp.control_lines(metric)
    lines += ["", "Verdicts, from the numbers (lower is better):"] + verdicts(metric, curves, target, rows)
    extra = {k: v for k, v in ratio_values(metric, rows).items() if math.isfinite(v)}
    ratio_text = list(ratios) + [f"RATIO {k} {v:.3f}" for k, v in extra.items()]
    lines += ["", "RATIO lines (means over seeds):"] + [f"- {x}" for x in ratio_text]
    lines += ["", "Cost is accelerator-hours: CPU cores × wall time here (GPUs × wall time on GPUs), counted from "
              "the start of training to the step where the budget ran out; evaluations during training and the "
              "final evaluation are not counted (`quality/eval_s` records their own cost). The quality curves use "
              f"{cfg.eval.quality_videos or cfg.eval.num_videos} videos per point and the final evaluation "
              f"{cfg.eval.num_videos}: fewer videos, noisier points. Rows as in the ablation table (docs/paper.md): the full "
              "method is Local Opt. with the first frame in the loss, balanced starts (p = 0.5) and ReCo λ = 0.1; "
              "Fewer-Frames trains on 2 latent frames and samples block-wise."]
    return "\n".join(lines) + "\n", ratio_text


def write_study(result, args, cfg, command: str, when: dt.date, rebuilt: bool = False) -> int:
    """Curves from MLflow, time to target, the study table and its plot (experiments/results/ and the
    parent run); prints the table and its RATIO lines. Exit code 0."""
    from arvid_ray.report import time_to_target_report

    tag = "smoke" if args.smoke_test else args.scale + ("-quick" if args.quick else "")
    stem = f"time_to_quality_{tag}_{when.isoformat()}"
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = quality_key(cfg)
    parent, curves = curves_by_row(result.tracking_uri, result.parent_run_id, key)
    end_ms = parent.info.end_time or dt.datetime.now().timestamp() * 1000
    wall = (f"{(end_ms - parent.info.start_time) / 60000:.1f} min for {len(result.trials)} trials "
            f"{cfg.sweep.max_concurrent_trials} at a time (the parent run's span: data preparation before it not "
            "included)")
    plot = None
    with tempfile.TemporaryDirectory() as tmp:
        if curves:
            files, _ = time_to_target_report(curves, tmp, baseline=BASELINE if BASELINE in curves else None,
                                             quality_key=key, cost_key=COST_KEY,
                                             title=f"equal budgets, {len(args.seeds)} seed(s)")
            plot = out_dir / f"{stem}.png"
            shutil.copyfile(files[0], plot)
    text, ratios = build_study(result, cfg, args.seeds, command, when, curves, plot.name if plot else "(no curves)",
                               wall)
    if rebuilt:
        text += f"\n(Rebuilt from MLflow parent run {result.parent_run_id}.)\n"
    out = out_dir / f"{stem}.md"
    out.write_text(text)
    rp._log_table(result, out, command, plot)
    print(text)
    for line in ratios:
        print(line if line.startswith("RATIO") else f"# {line}")
    print(f"study written to {out}; MLflow parent run {result.parent_run_id} at {result.tracking_uri}",
          file=sys.stdout)
    return 0
