"""Reproduce the paper's ablation table (Zhou & Shen 2026, Table "Local Opt. + ReCo") with arvid-ray.

    python experiments/reproduce_paper.py --scale cpu --seeds 0 1 2   # the committed CPU table (~96 min, 2 cores)
    python experiments/reproduce_paper.py --scale cpu --quick         # < 10 min, 1 seed, fewer steps: RATIO lines
    python experiments/reproduce_paper.py --smoke-test                # CI: every row present and numeric
    python experiments/reproduce_paper.py --scale paper --config experiments/configs/ffs.yaml   # GPU cluster

All rows train with the same budget of optimizer steps on the same data as one Tune run (one trial per
row and seed), then evaluate with the same protocol; a broken control (each baseline trial's own model,
sampled again with its latent frames shuffled) shows whether the measures see temporal order at all. The table states N
(videos per evaluation), the seeds, the real-vs-real floor and the reachable floor ``eval/fd_recon``
(tokenizer-reconstructed real clips), every row's FD as a multiple of that floor, and the ground-truth
drift of the built-in data (bounce-physics trajectory error and identity retention per segment of the
4x rollout); it copies itself and a per-row trajectory-error plot to experiments/results/ with the date,
machine and command. Numbers come only from the runs; nothing is typed in.

Row readings (the paper's text is unavailable, see docs/paper.md): "+ first frame" keeps latent frame 0 in
the loss besides the uniformly drawn window (``objective.first_frame_in_loss``); "+ balanced" adds
balanced starts (a window at frame 0 with p = 0.5) to it; "+ ReCo" adds λ = 0.1 to that. Fewer-Frames
trains on 2-latent-frame clips and samples block-wise with a context never longer than those 2 frames.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import os
import platform
import statistics
import sys
from pathlib import Path

from arvid_ray.config import ConfigError, load_config
from arvid_ray.report import compare_seeds

HERE = Path(__file__).resolve().parent

# (row name, overrides) — the paper's ablation rows. Windows count latent frames (2 of 5).
ROWS: list[tuple[str, dict]] = [
    ("Baseline (full)", {"objective.kind": "full", "objective.reco_weight": 0.0, "eval.shuffled_control": True}),
    ("Fewer-Frames", {"objective.kind": "fewer_frames", "fewer_frames.num_frames": 2, "objective.reco_weight": 0.0,
                      "sampling.mode": "blockwise"}),
    ("Local Opt. (uniform)", {"objective.kind": "local", "objective.first_frame_prob": None,
                              "objective.reco_weight": 0.0}),
    ("Local Opt. + first frame", {"objective.kind": "local", "objective.first_frame_prob": None,
                                  "objective.first_frame_in_loss": True, "objective.reco_weight": 0.0}),
    ("Local Opt. + balanced", {"objective.kind": "local", "objective.first_frame_prob": 0.5,
                               "objective.first_frame_in_loss": True, "objective.reco_weight": 0.0}),
    ("+ ReCo (full method)", {"objective.kind": "local", "objective.first_frame_prob": 0.5,
                              "objective.first_frame_in_loss": True, "objective.reco_weight": 0.1}),
]
# the broken control (not a table row): each baseline trial's own model sampled again with its latent frames
# shuffled (eval.shuffled_control logs it as control/<metric>); these overrides are what that evaluation uses
CONTROL = ("Broken control (baseline, frames shuffled at sampling)", {**ROWS[0][1], "sampling.shuffle_frames": True})

SCALES = {
    # 32 px (4x4 tokens per latent frame, 80 per clip: SynthC3D reads 32 px anyway), 4,096 videos (512 overfit:
    # train CE 1.6 vs val 3.1), 6,000 steps at lr 1e-2, CFG 2, two 1-thread trials at once: the regime the
    # 2026-12-01 probes found closest to the reachable floor (~3.5x fd_recon); one micro-batch of 16 per step, a
    # checkpoint every 1,000 steps and a log line every 50: 18 trials + data preparation take 96 min on 2 cores,
    # over the 90 min (RESULTS.md)
    "cpu": ["model.preset=debug", "data.resolution=32", "data.num_frames=17", "data.batch_size=16",
            "train.ckpt_every=1000", "train.log_every=50", "train.steps=6000", "train.lr=1e-2",
            "train.warmup_steps=60", "synth.num_videos=4096", "synth.second_object_prob=0.0",
            "sampling.cfg_scale=2.0", "eval.num_videos=64", "eval.drift_videos=32", "eval.drift_multipliers=[2,4]",
            "sweep.max_concurrent_trials=2"],
    "paper": ["model.preset=B", "data.num_frames=17", "data.resolution=128", "train.use_gpu=true",
              "train.lr=1e-4", "eval.num_videos=2048", "eval.drift_multipliers=[2,4]"],
}
QUICK = ["train.steps=300", "train.warmup_steps=20", "synth.num_videos=256", "eval.num_videos=32",
         "eval.drift_videos=16", "eval.trajectory_videos=8", "eval.num_sample_videos=2"]
SMOKE = ["model.preset=debug", "train.steps=6", "train.log_every=2", "train.ckpt_every=0",
         "train.global_batch_size=4", "data.batch_size=4", "synth.num_videos=48", "eval.num_videos=4",
         "eval.num_sample_videos=1", "eval.drift_multipliers=[2]", "eval.drift_videos=4", "eval.trajectory_videos=2",
         "sweep.name=reproduce-smoke", "sweep.max_concurrent_trials=2"]  # synth.num_videos=48: tune_window --smoke-test's dataset, one cache

COLUMNS = [  # (header, metric key, format)
    ("quality FD-SynthC3D ↓", "eval/fd_synthc3d", "{:.2f}"),
    ("FVD ↓", "eval/fvd", "{:.1f}"),
    ("drift 2x ↓", "eval/drift_2x", "{:.2f}"),
    ("drift 4x ↓", "eval/drift_4x", "{:.2f}"),
    ("warp error ↓", "eval/warp_error", "{:.4f}"),
    ("val CE ↓", "eval/val_ce", "{:.3f}"),
    ("acc.-hours", "cost/gpu_hours", "{:.4f}"),
    ("FD / fd_recon", "fd_over_recon", "{:.2f}"),
    ("fd_recon (floor a model can reach)", "eval/fd_recon", "{:.2f}"),
    ("real-vs-real floor", "eval/fd_floor", "{:.2f}"),
    ("traj. err. seg 1 (px) ↓", "eval/traj_error_seg1", "{:.2f}"),
    ("traj. err. seg 2 ↓", "eval/traj_error_seg2", "{:.2f}"),
    ("traj. err. seg 4 ↓", "eval/traj_error_seg4", "{:.2f}"),
    ("identity seg 4 ↑", "eval/identity_seg4", "{:.2f}"),
]
SEGMENT_KEY = "eval/traj_error_seg{}"


def _mean_std(values: list[float]) -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "—"
    return f"{statistics.fmean(vals):.4g}" + (f" ± {statistics.stdev(vals):.2g}" if len(vals) > 1 else "")


def _metric_fn(result):
    """metric(row, key) -> finished trials' values; ``fd_over_recon`` is each trial's FD / its fd_recon."""
    by_row: dict[str, list] = {}
    for t in result.trials:
        by_row.setdefault(t.role, []).append(t)

    def value(t, key: str, prefix: str = "eval/") -> float:
        if key == "fd_over_recon":
            fd = t.metrics.get(prefix + COLUMNS[0][1].split("/", 1)[1], math.nan)
            recon = t.metrics.get("eval/fd_recon", math.nan)
            return fd / recon if recon and math.isfinite(recon) and recon > 0 else math.nan
        if prefix != "eval/" and key.startswith("eval/"):
            key = prefix + key.split("/", 1)[1]
        return t.metrics.get(key, math.nan)

    def metric(row: str, key: str) -> list[float]:
        if row == CONTROL[0]:  # the baseline trials' own models, frames shuffled (control/<metric>)
            return [value(t, key, "control/") for t in by_row.get(ROWS[0][0], []) if t.status != "ERROR"]
        return [value(t, key) for t in by_row.get(row, []) if t.status != "ERROR"]

    return by_row, metric


def _mean(values: list[float]) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(vals) if vals else math.nan


def ratios(result) -> dict[str, float]:
    """The benchmark's RATIO lines: cost and quality of the full method and drift of Fewer-Frames, each over
    the baseline (means over seeds), and the baseline's FD over the reachable floor."""
    _, metric = _metric_fn(result)
    base, fewer, full = ROWS[0][0], ROWS[1][0], ROWS[-1][0]
    over = lambda row, key: _mean(metric(row, key)) / _mean(metric(base, key))  # noqa: E731
    return {"full_method_cost_over_baseline": over(full, "cost/gpu_hours"),
            "full_method_flops_over_baseline": over(full, "cost/train_flops"),  # load-independent
            "full_method_fd_over_baseline": over(full, COLUMNS[0][1]),
            "fewer_frames_seg4_traj_over_baseline": over(fewer, "eval/traj_error_seg4"),
            "baseline_fd_over_recon": _mean(metric(base, "fd_over_recon"))}


def build_table(result, seeds: list[int], cfg, command: str) -> str:
    by_row, metric = _metric_fn(result)
    base_step = statistics.fmean(metric(ROWS[0][0], "train/step_time_s") or [math.nan])
    base_mem = statistics.fmean(metric(ROWS[0][0], "train/peak_mem_gb") or [math.nan])
    lines = [
        f"# Paper ablation reproduced with arvid-ray — {dt.date.today().isoformat()}",
        "",
        f"- command: `{command}`",
        f"- machine: {platform.node()} ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)",
        f"- data: {cfg.data.source} at {cfg.data.resolution}px, {cfg.data.num_frames} frames; "
        f"model preset {cfg.model.preset}; {cfg.train.steps} steps × global batch {cfg.train.global_batch_size} per row",
        f"- N = {cfg.eval.num_videos} generated videos per evaluation ({cfg.eval.drift_videos or cfg.eval.num_videos} "
        f"per long rollout); seeds = {seeds}; mean ± std over seeds",
        "",
        "| row | " + " | ".join(h for h, _, _ in COLUMNS) + " | speed-up vs baseline | peak mem vs baseline | trials |",
        "|---|" + "---|" * (len(COLUMNS) + 3),
    ]
    for name, _ in ROWS:
        cells = [_mean_std(metric(name, key)) for _, key, _ in COLUMNS]
        step = statistics.fmean(metric(name, "train/step_time_s") or [math.nan])
        mem = statistics.fmean(metric(name, "train/peak_mem_gb") or [math.nan])
        speed = f"{base_step / step:.2f}×" if math.isfinite(step) and step > 0 else "—"
        memr = f"{mem / base_mem:.2f}×" if math.isfinite(mem) and base_mem > 0 else "—"
        failed = sum(t.status == "ERROR" for t in by_row.get(name, []))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {speed} | {memr} | {len(by_row.get(name, []))}"
                     + (f" ({failed} failed)" if failed else "") + " |")
    lines += ["", "Controls (not rows of the paper):"] + control_lines(metric)
    lines += ["", "Verdicts, from the numbers (lower is better):"] + paper_verdicts(metric)
    lines += ["", f"What the runs say about the full method ({ROWS[-1][0]}), lower is better:"]
    for key in (COLUMNS[0][1], "eval/fvd", "eval/drift_4x", "eval/traj_error_seg4", "eval/val_ce"):
        if any(math.isfinite(v) for row, _ in ROWS for v in metric(row, key)):
            lines += verdict(ROWS[-1][0], [ROWS[0][0], ROWS[1][0]], metric, key)
    lines += ["", "RATIO lines (means over seeds):"] + [f"- RATIO {k} {v:.3f}" for k, v in ratios(result).items()]
    lines += ["", "Quality is the Fréchet distance on the project's SynthC3D features (not FVD); FVD appears only "
              "when a real I3D TorchScript is given (eval.i3d_path). fd_recon is the same distance for the "
              "tokenizer's reconstructions of real clips at the same N: no model over these tokens can beat it. "
              "Trajectory error: pixels between the tracked primary object and the bounce physics fitted to the "
              "rollout's own first segment (segment 1 is the fit residual; segments 2-4 of the 4x rollout measure "
              "drift); identity: fraction of frames whose object keeps frame 0's colour and shape. Speed-up = "
              "baseline step time / row step time; peak memory is the training process's peak (device memory on "
              "GPU).",
              "", "Row readings (the paper's text is unavailable): \"+ first frame\" = latent frame 0 always in the "
              "loss besides a uniformly drawn window (objective.first_frame_in_loss), the reading that lets it beat "
              "plain Local Opt. as the paper's 134.7 vs 190.5 FVD does (first_frame_prob = 1.0 would train frames "
              "0..W-1 only); \"+ balanced\" adds starts at frame 0 with p = 0.5 to it and \"+ ReCo\" adds λ = 0.1 "
              "to that (cumulative rows). Whether the paper's rows are cumulative, and whether its first-frame "
              "loss reads frame 0 with or without gradient through the window's attention (here: without, like "
              "the rest of the prefix), is not known. Fewer-Frames trains on fewer_frames.num_frames latent frames "
              "and samples block-wise, each block conditioned only on the previous one, from the first block on."]
    return "\n".join(lines) + "\n"


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def control_lines(metric) -> list[str]:
    """Does each measure tell the broken control from the baseline by more than the seed spread?"""
    out = []
    for key, name in ((COLUMNS[0][1], "FD"), ("eval/traj_error_seg1", "traj. err. seg 1"),
                      ("eval/traj_error_seg4", "traj. err. seg 4"), ("eval/identity_seg4", "identity seg 4")):
        c, b = _finite(metric(CONTROL[0], key)), _finite(metric(ROWS[0][0], key))
        if not c or not b:
            out.append(f"- {CONTROL[0]} on {name}: not measured.")
            continue
        diff, spread, _ = compare_seeds(c, b)
        judged = (f"{abs(diff) / spread:.1f}× the seed spread ±{spread:.2g}" if math.isfinite(spread) and spread > 0
                  else "one seed: no spread to judge it against")
        out.append(f"- {CONTROL[0]} on {name}: {_mean(c):.4g} vs baseline {_mean(b):.4g} ({diff:+.3g}; {judged}).")
    return out


def regime_verdict(metric) -> str:
    """(0) does the regime discriminate: the baseline's FD within 3x of fd_recon, and the shuffled control
    (the baseline trials' own models, frames shuffled) worse than the baseline by more than 3x the seed spread?"""
    base = ROWS[0][0]
    ratio = _mean(metric(base, "fd_over_recon"))
    c, b = _finite(metric(CONTROL[0], COLUMNS[0][1])), _finite(metric(base, COLUMNS[0][1]))
    if not (c and b):
        return f"- (0) regime: baseline FD = {ratio:.2f}× fd_recon; shuffled control not measured."
    diff, spread, _ = compare_seeds(c, b)
    sep = diff / spread if math.isfinite(spread) and spread > 0 else math.nan
    ok = ratio <= 3 and math.isfinite(sep) and sep > 3
    return (f"- (0) regime: baseline FD = {ratio:.2f}× fd_recon (bar ≤ 3×: {'met' if ratio <= 3 else 'not met'}); "
            f"shuffled control FD {_mean(c):.4g} vs baseline {_mean(b):.4g} ({diff:+.3g}"
            + (f" = {sep:+.1f}× the seed spread ±{spread:.2g}" if math.isfinite(sep) else "; one seed")
            + f"; bar > +3×: {'met' if math.isfinite(sep) and sep > 3 else 'not met'}) → the measure "
            + ("discriminates here." if ok else "does not discriminate at the issue's bar here."))


def paper_verdicts(metric) -> list[str]:
    """(0) does the regime discriminate (baseline FD within 3x of fd_recon, the shuffled control worse by more
    than 3x the seed spread)? (a) the full method within the baseline's spread (or better) on FD and
    segment-4 trajectory error at <= 0.55x its cost; (b) Fewer-Frames worse than the baseline beyond the
    spread by segment 4. Said from the numbers, whichever way they fall."""
    base, fewer, full = ROWS[0][0], ROWS[1][0], ROWS[-1][0]
    out = [regime_verdict(metric)]
    cost = _mean(metric(full, "cost/gpu_hours")) / _mean(metric(base, "cost/gpu_hours"))
    flops = _mean(metric(full, "cost/train_flops")) / _mean(metric(base, "cost/train_flops"))
    parts, fails, undecided = [], [], False
    if not math.isfinite(cost):
        undecided = True
    elif cost > 0.55:
        fails.append(f"cost {cost:.2f}× > 0.55×")
    for key, name in ((COLUMNS[0][1], "FD"), ("eval/traj_error_seg4", "segment-4 trajectory error")):
        m, b = _finite(metric(full, key)), _finite(metric(base, key))
        if not m or not b:
            parts.append(f"{name}: not measured")
            undecided = True
            continue
        diff, spread, word = compare_seeds(m, b)
        if word == "one seed":
            parts.append(f"{name} {diff:+.3g} (one seed: no spread)")
            undecided = True
        else:
            parts.append(f"{name} {diff:+.3g} " + ("within" if word == "within" else f"{word} beyond") + f" ±{spread:.2g}")
            if word == "worse":
                fails.append(f"{name} worse beyond the spread")
    conclusion = (f"does not hold ({'; '.join(fails)})" if fails else
                  "undecided (no seed spread)" if undecided else "holds")
    out.append(f"- (a) full method vs baseline at {cost:.2f}× its cost in acc.-hours ({'≤' if cost <= 0.55 else '>'} "
               f"0.55×; {flops:.2f}× its train FLOPs): " + "; ".join(parts) + f" → (a) {conclusion}.")
    f, b = _finite(metric(fewer, "eval/traj_error_seg4")), _finite(metric(base, "eval/traj_error_seg4"))
    if f and b:
        diff, spread, word = compare_seeds(f, b)
        text = {"one seed": "one seed: no spread, (b) undecided",
                "worse": f"Fewer-Frames drifts beyond the spread ±{spread:.2g} → (b) holds",
                "within": f"within the spread ±{spread:.2g} → (b) does not hold",
                "better": f"Fewer-Frames drifts less than the baseline beyond the spread ±{spread:.2g} → (b) does not hold"}
        out.append(f"- (b) Fewer-Frames segment-4 trajectory error {_mean(f):.3g} vs baseline {_mean(b):.3g} "
                   f"({diff:+.3g}): {text[word]}.")
    else:
        out.append("- (b) Fewer-Frames segment-4 trajectory error: not measured.")
    return out


def trajectory_plot(result, path: Path, n: int | None = None) -> Path | None:
    """The per-row curve of the ground-truth trajectory error over the 4x rollout's segments."""
    from arvid_ray.report import segment_curve_plot

    _, metric = _metric_fn(result)
    curves = {}
    for name, _ in [*ROWS, CONTROL]:
        curve = []
        for k in range(1, 9):
            v = _mean(metric(name, SEGMENT_KEY.format(k)))
            if not math.isfinite(v):
                break
            curve.append(v)
        if curve:
            curves[name] = curve
    if not curves:
        return None
    return segment_curve_plot(curves, path, metric="trajectory error vs bounce physics (px)", n=n,
                              title="ground-truth drift per ablation row (4x rollout)")


def verdict(method: str, references: list[str], metric, key: str) -> list[str]:
    """One line per reference row: does ``method`` beat it on ``key`` (lower is better) by more than
    the seed spread, lose by more, or tie within it? Computed from the runs, so the table says it."""
    out = []
    m = _finite(metric(method, key))
    for ref in references:
        r = _finite(metric(ref, key))
        if not m or not r:
            out.append(f"- {method} vs {ref} on {key}: not enough finished trials to compare.")
            continue
        diff, spread, word = compare_seeds(m, r)
        if word == "one seed":
            text = f"{'better' if diff < 0 else 'worse'} by {abs(diff):.3g} (one seed each: no spread to judge it against)"
        elif word == "within":
            text = f"within the seed spread ({diff:+.3g} vs ±{spread:.2g}): no difference shown"
        else:
            text = f"{word} by {abs(diff):.3g}, more than the seed spread ±{spread:.2g}"
        out.append(f"- {method} vs {ref} on {key}: {text}.")
    return out


def select_rows(wanted: list[str] | None, rows: list[tuple[str, dict]] | None = None) -> list[tuple[str, dict]]:
    """The table rows to run (of ``rows``, default the ablation's): all, or those named by index or exact
    name (in table order)."""
    rows = ROWS if rows is None else rows
    if not wanted:
        return list(rows)
    names = [name for name, _ in rows]
    picked = set()
    for item in wanted:
        if item.isdigit() and int(item) < len(rows):
            picked.add(int(item))
        elif item in names:
            picked.add(names.index(item))
        else:
            raise ValueError(f"--rows {item!r} is not a row: give an index 0-{len(rows) - 1} or one of "
                             + ", ".join(repr(n) for n in names))
    return [rows[i] for i in sorted(picked)]


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 table written, 2 refused before launch (config, rows, pre-flight, checkpoint), 130 / 143
    interrupted by SIGINT / SIGTERM (the runs end KILLED; --resume finishes)."""
    from arvid_ray.sweep.startup import interruptible

    return interruptible("reproduce_paper", _main, argv)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--study", choices=("ablation", "cost"), default="ablation",
                        help="ablation: the six rows at equal steps (default); cost: baseline, Fewer-Frames and the "
                             "full method at an equal training-cost budget, evaluated during training — the cost to "
                             "reach the baseline's final quality (experiments/cost_study.py)")
    parser.add_argument("--config", type=Path, default=None, help="dataset config (default: built-in synthetic)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--smoke-test", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="the benchmark: one seed, fewer steps, smaller N (< 10 min on 2 cores); RATIO lines")
    parser.add_argument("--rows", nargs="+", default=None, metavar="ROW",
                        help="run only these table rows, by index (0 = baseline) or exact name; default all")
    parser.add_argument("--resume", action="store_true", help="finish the interrupted run named sweep.name")
    parser.add_argument("--dry-run", action="store_true",
                        help="run every pre-flight check, print what would be launched, start nothing (exit 0 or 2)")
    parser.add_argument("--out-dir", type=Path, default=HERE / "results", help="where the table's copy goes")
    parser.add_argument("--table-from-run", metavar="PARENT_RUN_ID", default=None,
                        help="rebuild the table from a finished run's MLflow child runs (no training)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    study = None
    if args.study == "cost":
        import cost_study as study

        extra = study.overrides(args.scale, quick=args.quick, smoke=args.smoke_test)
    else:
        extra = SMOKE if args.smoke_test else SCALES[args.scale] + (QUICK if args.quick else [])
    name = f"sweep.name=reproduce-{'cost-' if study else ''}{args.scale}"
    try:
        cfg = load_config(args.config, [name, *extra, *args.overrides])
    except ConfigError as exc:
        print(f"reproduce_paper: {exc}", file=sys.stderr)
        return 2
    if args.table_from_run:
        return _table_from_run(args, cfg, argv, study)
    try:
        chosen = select_rows(args.rows, study.ROWS if study else None)
    except ValueError as exc:
        print(f"reproduce_paper: {exc}", file=sys.stderr)
        return 2
    rows = [{**overrides, "experiment.seed": seed, "sweep_role": name} for name, overrides in chosen
            for seed in args.seeds]  # the control is evaluated inside each baseline trial, not trained again
    if study:  # one seed's rows side by side: trials launch in this order, so each wave of the cost study
        # trains every row at once and the rows share the machine alike (wall-clock cost, see cost_study.py)
        rows = sorted(rows, key=lambda r: args.seeds.index(r["experiment.seed"]))

    from arvid_ray.sweep.startup import SweepStart, start_sweep

    # the sweep start-up every entry point shares: storage pinned, pre-flight, --resume, Ray, inputs
    start = SweepStart(prog="reproduce_paper", command="python experiments/reproduce_paper.py", resume=args.resume,
                       dry_run=args.dry_run, overrides=(*extra, *args.overrides), rows=rows,
                       num_cpus=study.local_cpus(args.scale, args.smoke_test) if study else None)
    outcome = start_sweep(cfg, start)
    if outcome.result is None:  # a dry run, or refused (exit 2)
        return outcome.code
    cfg, result = outcome.cfg, outcome.result

    command = "python experiments/reproduce_paper.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if study:
        return study.write_study(result, args, cfg, command.strip(), dt.date.today())
    table = build_table(result, args.seeds, cfg, command.strip())
    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = "smoke" if args.smoke_test else args.scale + ("-quick" if args.quick else "")
    out = out_dir / f"paper_ablation_{tag}_{dt.date.today().isoformat()}.md"
    out.write_text(table)
    plot = trajectory_plot(result, out.with_suffix(".traj.png"), n=cfg.eval.drift_videos or cfg.eval.num_videos)
    _log_table(result, out, command.strip(), plot)
    print(table)
    for key, value in ratios(result).items():
        print(f"RATIO {key} {value:.3f}")
    print(f"table written to {out}; MLflow parent run {result.parent_run_id} at {result.tracking_uri}")
    return 0


def _table_from_run(args, cfg, argv, study=None) -> int:
    """The table of an earlier run, from its parent MLflow run's child runs (roles, metrics, params)."""
    from arvid_ray.sweep.results import SweepResult, TrialSummary
    from arvid_ray.tracking import resolve_tracking_uri
    from arvid_ray.tracking.runs import child_runs

    uri = resolve_tracking_uri(cfg)
    parent, children = child_runs(uri, args.table_from_run)
    if not children:
        print(f"reproduce_paper: run {args.table_from_run} at {uri} has no child runs; pass the parent run id "
              f"printed at the end of reproduce_paper.py", file=sys.stderr)
        return 2
    trials = [TrialSummary(trial_id=r.info.run_name or r.info.run_id, role=r.data.tags.get("arvid.role", "?"),
                           status="ERROR" if r.info.status == "FAILED" else "TERMINATED", params=r.data.params,
                           metrics=_with_last_step(uri, r)) for r in children]
    flat = cfg.to_flat()
    for key in ("model.preset", "data.resolution", "data.num_frames", "train.steps", "train.global_batch_size",
                "eval.num_videos"):
        if key in parent.data.params and parent.data.params[key] != str(flat[key]):
            print(f"reproduce_paper: run {args.table_from_run} used {key}={parent.data.params[key]} but this "
                  f"command resolves {key}={flat[key]}; pass the same --scale/--config/overrides as the run",
                  file=sys.stderr)
            return 2
    run_cfg = cfg.replace(**{"data.source": parent.data.params.get("data.source", cfg.data.source)})
    seeds = sorted({int(r.data.params.get("experiment.seed", 0)) for r in children})
    result = SweepResult(name=parent.info.run_name, quality_key=cfg.sweep.metric, cost_key=cfg.sweep.cost_metric,
                         trials=trials, parent_run_id=args.table_from_run, tracking_uri=uri)
    command = parent.data.tags.get("arvid.command") or " ".join(
        ["python experiments/reproduce_paper.py", f"--scale {args.scale}", "--seeds", *map(str, seeds),
         *(["--config", str(args.config)] if args.config else []), *args.overrides])
    if study:
        args.seeds = seeds
        return study.write_study(result, args, run_cfg, command,
                                 dt.datetime.fromtimestamp(parent.info.start_time / 1000).date(), rebuilt=True)
    table = build_table(result, seeds, run_cfg, command)
    table += f"\n(Rebuilt from MLflow parent run {args.table_from_run} by `python experiments/reproduce_paper.py " \
             f"{' '.join(argv if argv is not None else sys.argv[1:])}`.)\n"
    tag = "smoke" if args.smoke_test else args.scale
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"paper_ablation_{tag}_{dt.datetime.fromtimestamp(parent.info.start_time / 1000).date()}.md"
    out.write_text(table)
    print(table)
    for key, value in ratios(result).items():
        print(f"RATIO {key} {value:.3f}")
    print(f"table written to {out}")
    return 0


def _with_last_step(uri: str, run) -> dict:
    """A child run's metrics plus ``step``: its last logged step (what a live run's final result carries)."""
    from arvid_ray.tracking.runs import client

    history = client(uri).get_metric_history(run.info.run_id, "cost/gpu_hours")
    return {**run.data.metrics, **({"step": float(max(m.step for m in history))} if history else {})}


def _log_table(result, path: Path, command: str, plot: Path | None = None) -> None:
    from arvid_ray.tracking.runs import log_table

    log_table(result.tracking_uri, result.parent_run_id, path, command, plot)  # --table-from-run quotes the command


if __name__ == "__main__":
    sys.exit(main())
