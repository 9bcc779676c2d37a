"""Reproduce the paper's ablation table (Zhou & Shen 2026, Table "Local Opt. + ReCo") with arvid-ray.

    python experiments/reproduce_paper.py --scale cpu --seeds 0 1   # committed CPU table, <= 60 min on 2 cores
    python experiments/reproduce_paper.py --smoke-test           # CI: every row present and numeric
    python experiments/reproduce_paper.py --scale paper --config experiments/configs/ffs.yaml   # GPU cluster

All rows train with the same budget of steps on the same data as one Tune run (one trial per row and
seed), then evaluate with the same protocol. The table states N (videos per evaluation) and the seeds,
and copies itself to experiments/results/ with the date, machine and command. Numbers come only from
the runs; nothing is typed in.
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

HERE = Path(__file__).resolve().parent

# (row name, overrides) — the paper's ablation rows. Windows count latent frames (2 of 5).
ROWS: list[tuple[str, dict]] = [
    ("Baseline (full)", {"objective.kind": "full", "objective.reco_weight": 0.0}),
    ("Fewer-Frames", {"objective.kind": "fewer_frames", "fewer_frames.num_frames": 2, "objective.reco_weight": 0.0,
                      "sampling.mode": "blockwise"}),
    ("Local Opt. (uniform)", {"objective.kind": "local", "objective.first_frame_prob": None,
                              "objective.reco_weight": 0.0}),
    ("Local Opt. + first frame", {"objective.kind": "local", "objective.first_frame_prob": 1.0,
                                  "objective.reco_weight": 0.0}),
    ("Local Opt. + balanced", {"objective.kind": "local", "objective.first_frame_prob": 0.5,
                               "objective.reco_weight": 0.0}),
    ("+ ReCo (full method)", {"objective.kind": "local", "objective.first_frame_prob": 0.5,
                              "objective.reco_weight": 0.1}),
]

SCALES = {
    "cpu": ["model.preset=debug", "data.resolution=64", "data.num_frames=17", "train.steps=800", "train.lr=1e-3",
            "train.warmup_steps=40",
            "synth.num_videos=512", "eval.num_videos=64", "eval.drift_multipliers=[2,4]"],
    "paper": ["model.preset=B", "data.num_frames=17", "data.resolution=128", "train.use_gpu=true",
              "train.lr=1e-4", "eval.num_videos=2048", "eval.drift_multipliers=[2,4]"],
}
SMOKE = ["model.preset=debug", "train.steps=6", "train.log_every=2", "train.ckpt_every=0",
         "train.global_batch_size=4", "data.batch_size=4", "synth.num_videos=32", "eval.num_videos=4",
         "eval.num_sample_videos=1", "eval.drift_multipliers=[2]", "sweep.name=reproduce-smoke"]

COLUMNS = [  # (header, metric key, format)
    ("quality FD-SynthC3D ↓", "eval/fd_synthc3d", "{:.2f}"),
    ("FVD ↓", "eval/fvd", "{:.1f}"),
    ("drift 2x ↓", "eval/drift_2x", "{:.2f}"),
    ("drift 4x ↓", "eval/drift_4x", "{:.2f}"),
    ("warp error ↓", "eval/warp_error", "{:.4f}"),
    ("val CE ↓", "eval/val_ce", "{:.3f}"),
    ("acc.-hours", "cost/gpu_hours", "{:.4f}"),
]


def _mean_std(values: list[float]) -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "—"
    return f"{statistics.fmean(vals):.4g}" + (f" ± {statistics.stdev(vals):.2g}" if len(vals) > 1 else "")


def build_table(result, seeds: list[int], cfg, command: str) -> str:
    by_row: dict[str, list] = {}
    for t in result.trials:
        by_row.setdefault(t.role, []).append(t)

    def metric(row: str, key: str) -> list[float]:
        return [t.metrics.get(key, math.nan) for t in by_row.get(row, []) if t.status != "ERROR"]

    base_step = statistics.fmean(metric(ROWS[0][0], "train/step_time_s") or [math.nan])
    base_mem = statistics.fmean(metric(ROWS[0][0], "train/peak_mem_gb") or [math.nan])
    lines = [
        f"# Paper ablation reproduced with arvid-ray — {dt.date.today().isoformat()}",
        "",
        f"- command: `{command}`",
        f"- machine: {platform.node()} ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs)",
        f"- data: {cfg.data.source} at {cfg.data.resolution}px, {cfg.data.num_frames} frames; "
        f"model preset {cfg.model.preset}; {cfg.train.steps} steps × global batch {cfg.train.global_batch_size} per row",
        f"- N = {cfg.eval.num_videos} generated videos per evaluation; seeds = {seeds}; mean ± std over seeds",
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
    lines += ["", f"What the runs say about the full method ({ROWS[-1][0]}), lower is better:"]
    for key in (COLUMNS[0][1], "eval/fvd", "eval/drift_4x", "eval/val_ce"):
        if any(math.isfinite(v) for row, _ in ROWS for v in metric(row, key)):
            lines += verdict(ROWS[-1][0], [ROWS[0][0], ROWS[1][0]], metric, key)
    lines += ["", "Quality is the Fréchet distance on the project's SynthC3D features (not FVD); FVD appears only "
              "when a real I3D TorchScript is given (eval.i3d_path). Speed-up = baseline step time / row step "
              "time; peak memory is the training process's peak (device memory on GPU)."]
    return "\n".join(lines) + "\n"


def verdict(method: str, references: list[str], metric, key: str) -> list[str]:
    """One line per reference row: does ``method`` beat it on ``key`` (lower is better) by more than
    the seed spread, lose by more, or tie within it? Computed from the runs, so the table says it."""
    out = []
    m = [v for v in metric(method, key) if math.isfinite(v)]
    for ref in references:
        r = [v for v in metric(ref, key) if math.isfinite(v)]
        if not m or not r:
            out.append(f"- {method} vs {ref} on {key}: not enough finished trials to compare.")
            continue
        diff = statistics.fmean(m) - statistics.fmean(r)
        spread = max((statistics.stdev(x) for x in (m, r) if len(x) > 1), default=0.0)
        if len(m) < 2 or len(r) < 2:
            word = "better" if diff < 0 else "worse"
            text = f"{word} by {abs(diff):.3g} (one seed each: no spread to judge it against)"
        elif abs(diff) <= spread:
            text = f"within the seed spread ({diff:+.3g} vs ±{spread:.2g}): no difference shown"
        else:
            text = f"{'better' if diff < 0 else 'worse'} by {abs(diff):.3g}, more than the seed spread ±{spread:.2g}"
        out.append(f"- {method} vs {ref} on {key}: {text}.")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    parser.add_argument("--config", type=Path, default=None, help="dataset config (default: built-in synthetic)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--smoke-test", action="store_true")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--out-dir", type=Path, default=HERE / "results", help="where the table's copy goes")
    parser.add_argument("--table-from-run", metavar="PARENT_RUN_ID", default=None,
                        help="rebuild the table from a finished run's MLflow child runs (no training)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    extra = SMOKE if args.smoke_test else SCALES[args.scale]
    try:
        cfg = load_config(args.config, [f"sweep.name=reproduce-{args.scale}", *extra, *args.overrides])
    except ConfigError as exc:
        print(f"reproduce_paper: {exc}", file=sys.stderr)
        return 2
    if args.table_from_run:
        return _table_from_run(args, cfg, argv)
    rows = [{**overrides, "experiment.seed": seed, "sweep_role": name} for name, overrides in ROWS for seed in args.seeds]

    import ray

    from arvid_ray.sweep import fresh_sweep_name, prepare_inputs, run_sweep

    if not ray.is_initialized():
        ray.init(num_cpus=None if os.environ.get("RAY_ADDRESS") else max(4, os.cpu_count() or 1))
    storage = cfg.train.storage_path or str(cfg.experiment.workdir_path() / "sweeps")
    if not args.resume:
        cfg = fresh_sweep_name(cfg, storage)
    cfg = prepare_inputs(cfg)
    result = run_sweep(cfg, storage_path=storage, restore=args.resume, rows=rows)

    command = "python experiments/reproduce_paper.py " + " ".join(argv if argv is not None else sys.argv[1:])
    table = build_table(result, args.seeds, cfg, command.strip())
    out_dir = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = "smoke" if args.smoke_test else args.scale
    out = out_dir / f"paper_ablation_{tag}_{dt.date.today().isoformat()}.md"
    out.write_text(table)
    _log_table(result, out, command.strip())
    print(table)
    print(f"table written to {out}; MLflow parent run {result.parent_run_id} at {result.tracking_uri}")
    return 0


def _table_from_run(args, cfg, argv) -> int:
    """The table of an earlier run, from its parent MLflow run's child runs (roles, metrics, params)."""
    from mlflow.tracking import MlflowClient

    from arvid_ray.sweep import SweepResult, TrialSummary
    from arvid_ray.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(cfg)
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(args.table_from_run)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{args.table_from_run}'")
    if not children:
        print(f"reproduce_paper: run {args.table_from_run} at {uri} has no child runs; pass the parent run id "
              f"printed at the end of reproduce_paper.py", file=sys.stderr)
        return 2
    trials = [TrialSummary(trial_id=r.info.run_name or r.info.run_id, role=r.data.tags.get("arvid.role", "?"),
                           status="ERROR" if r.info.status == "FAILED" else "TERMINATED", params=r.data.params,
                           metrics=dict(r.data.metrics)) for r in children]
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
    table = build_table(result, seeds, run_cfg, command)
    table += f"\n(Rebuilt from MLflow parent run {args.table_from_run} by `python experiments/reproduce_paper.py " \
             f"{' '.join(argv if argv is not None else sys.argv[1:])}`.)\n"
    tag = "smoke" if args.smoke_test else args.scale
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"paper_ablation_{tag}_{dt.datetime.fromtimestamp(parent.info.start_time / 1000).date()}.md"
    out.write_text(table)
    print(table)
    print(f"table written to {out}")
    return 0


def _log_table(result, path: Path, command: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=result.tracking_uri)
    client.set_tag(result.parent_run_id, "arvid.command", command)  # --table-from-run quotes it
    client.log_artifact(result.parent_run_id, str(path))


if __name__ == "__main__":
    sys.exit(main())
