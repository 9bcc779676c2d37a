"""Sweep Local Opt. window size, frame count and ReCo weight; compare cost vs quality in MLflow.

    python experiments/tune_window.py                 # local Ray, built-in synthetic data (<= 15 min, 2 cores)
    python experiments/tune_window.py --smoke-test    # <= 3 min, what CI runs
    python experiments/tune_window.py --config experiments/configs/ucf101.yaml            # real data
    RAY_ADDRESS=ray://head:10001 python experiments/tune_window.py --config ...        # a cluster
    python experiments/tune_window.py --resume sweep.name=tune-window                 # finish an interrupted sweep
    python experiments/tune_window.py --dry-run --config ...   # every pre-flight check + the plan; starts nothing

Trailing key=value arguments override the config (e.g. sweep.num_samples=12 train.steps=400).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from arvid_ray.config import ConfigError, load_config

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "configs" / "sweeps" / "tune_window.yaml"
SMOKE_OVERRIDES = [
    "sweep.num_samples=1", "sweep.name=smoke", "train.steps=12", "train.log_every=4", "train.ckpt_every=0",
    "train.global_batch_size=4", "data.batch_size=4", "eval.num_videos=8", "eval.num_sample_videos=2",
    "eval.drift_multipliers=[2]", "eval.drift_videos=4", "eval.trajectory_videos=4", "synth.num_videos=48",
    "model.preset=debug", "sweep.max_concurrent_trials=2",  # both at once: a tiny trial is mostly start-up
]


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 no trial succeeded, 2 refused before launch (config, pre-flight, checkpoint),
    130 interrupted by SIGINT (143 by SIGTERM); the MLflow runs then end KILLED, --resume finishes."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM = Ctrl+C: stop, mark runs KILLED
    try:
        return _main(argv)
    except KeyboardInterrupt as exc:
        name = str(exc) if str(exc) in ("SIGINT", "SIGTERM") else "SIGINT"
        print(f"tune_window: interrupted by {name}; the sweep's runs are marked KILLED; finish it with "
              f"--resume sweep.name=<name>", file=sys.stderr)
        return 128 + int(getattr(signal, name))
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, action="append", default=None,
                        help="experiment YAML with a sweep section; repeat to layer files (later ones override)")
    parser.add_argument("--smoke-test", action="store_true", help="2 tiny trials of the debug preset (CI)")
    parser.add_argument("--resume", action="store_true", help="restore the sweep named sweep.name and finish it")
    parser.add_argument("--dry-run", action="store_true",
                        help="run every pre-flight check, print what would be launched, start nothing (exit 0 or 2)")
    parser.add_argument("--num-cpus", type=int, default=None, help="logical CPUs for a local Ray instance")
    parser.add_argument("--verbose", action="store_true",
                        help="also show Ray's own per-operator progress and INFO lines (= experiment.verbose=true)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args(argv)  # key=value overrides before or after the flags
    try:
        cfg = load_config(args.config or [DEFAULT_CONFIG], (SMOKE_OVERRIDES if args.smoke_test else []) + list(args.overrides))
    except ConfigError as exc:
        print(f"tune_window: {exc}", file=sys.stderr)
        return 2
    from arvid_ray import console

    verbose = args.verbose or cfg.experiment.verbose
    console.setup(verbose)  # before Ray starts: the job's workers get the same console settings
    if args.dry_run:
        from arvid_ray.sweep import dry_run, print_dry_run

        plan, refused = dry_run(cfg, cluster=bool(os.environ.get("RAY_ADDRESS")), num_cpus=args.num_cpus)
        return print_dry_run("tune_window", plan, refused)
    from arvid_ray import storage as st
    from arvid_ray.preflight import check_inputs

    # pin the storage root (ARVID_STORAGE is read here, on the driver) and check every input a worker
    # will open before Ray starts and before any MLflow run exists
    cfg = cfg.replace(**{"storage.root": st.storage_root(cfg)})
    try:
        check_inputs(cfg, cluster=bool(os.environ.get("RAY_ADDRESS")))
        if args.resume:  # before Ray: a typo'd or missing sweep is refused, never started afresh
            from arvid_ray.sweep import names_sweep, resume_target, sweep_storage

            overrides = (SMOKE_OVERRIDES if args.smoke_test else []) + list(args.overrides)
            cfg = resume_target(cfg, sweep_storage(cfg), named=names_sweep(overrides))
    except ConfigError as exc:
        print(f"tune_window: {exc}", file=sys.stderr)
        return 2

    import ray

    from arvid_ray.sweep import fresh_sweep_name, prepare_inputs, run_sweep
    from arvid_ray.tracking import ui_hint

    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(runtime_env=console.runtime_env(verbose))
        else:  # more logical CPUs than cores so Tune, Train and Data never starve each other
            ray.init(num_cpus=args.num_cpus or max(4, os.cpu_count() or 1), include_dashboard=True,
                     runtime_env=console.runtime_env(verbose))
    from arvid_ray.sweep import sweep_storage

    storage = sweep_storage(cfg)
    if not args.resume:
        cfg = fresh_sweep_name(cfg, storage)
    from arvid_ray.sweep import refusals, tracking_lines

    try:
        cfg = prepare_inputs(cfg)
        result = run_sweep(cfg, storage_path=storage, restore=args.resume)
    except refusals() as exc:  # deterministic (config, pre-flight, checkpoint): one line, no retry
        print(f"tune_window: {exc}", file=sys.stderr)
        return 2

    print(f"\n{result.headline()}; quality = {result.quality_key}, cost = {result.cost_key}")
    for t in result.trials:
        if t.status != "TERMINATED":
            why = t.error or ("no final quality" if t.status == "INCOMPLETE" else t.status)
            print(f"  {t.status.lower()} {t.trial_id} [{t.role}]: {why}")
    for line in tracking_lines(cfg, result):
        print(f"  {line}")
    for t in result.best(3):
        print(f"  best {t.trial_id} [{t.role}] {result.quality_key}={t.metrics[result.quality_key]:.3f} "
              f"{result.cost_key}={t.metrics.get(result.cost_key, float('nan')):.5f} {t.params}")
    print(f"  Pareto front (quality vs cost): {', '.join(result.pareto) or 'empty'}")
    _print_links(cfg, result, ui_hint(result.tracking_uri))
    if result.interrupted:
        print(f"\nINTERRUPTED by {result.interrupted}: the parent run and unfinished trials are KILLED; finish with"
              f"\n  python experiments/tune_window.py --resume sweep.name={result.name} (same config and overrides)")
    return result.exit_code()


def _print_links(cfg, result, hint: str) -> None:
    """The sweep's last lines: how to open the MLflow UI, then one link per view (compare, Pareto, chart)."""
    from arvid_ray.sweep import ui_links

    try:
        links = ui_links(result)
    except Exception as exc:  # noqa: BLE001 - MLflow unreachable now: say where the runs are instead
        links = {}
        print(f"\n(could not list the sweep's runs in MLflow for direct links: {exc})")
    print(f"\nCompare cost against quality in the MLflow UI:\n  {hint}")
    if links and not str(result.tracking_uri).startswith(("http://", "https://")):
        print("  (it serves http://127.0.0.1:5000, the address in these links)")
    labels = {"compare": "all trial runs, side by side (Compare → Scatter Plot)",
              "chart": "interactive cost-vs-quality chart (trial names, params, baseline)",
              "pareto": "Pareto plot"}
    for key, label in labels.items():
        if key in links:
            print(f"  {label}:\n    {links[key]}")
    if not links:
        print(f"  then open experiment '{cfg.experiment.name}', run '{result.name}' → its child runs; the Pareto "
              f"plot is the parent run's artifact plots/pareto.png")


if __name__ == "__main__":
    sys.exit(main())
