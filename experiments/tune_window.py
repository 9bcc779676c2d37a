"""Sweep Local Opt. window size, frame count and ReCo weight; compare cost vs quality in MLflow.

    python experiments/tune_window.py                 # local Ray, built-in synthetic data (<= 15 min, 2 cores)
    python experiments/tune_window.py --smoke-test    # <= 3 min, what CI runs
    python experiments/tune_window.py --config experiments/configs/ucf101.yaml            # real data
    RAY_ADDRESS=ray://head:10001 python experiments/tune_window.py --config ...        # a cluster
    python experiments/tune_window.py --resume sweep.name=tune-window                 # finish an interrupted sweep
    python experiments/tune_window.py --dry-run --config ...   # every pre-flight check + the plan; starts nothing

Trailing key=value arguments override the config (e.g. sweep.num_samples=12 train.steps=400).
This script is ``arvid-ray sweep`` with this sweep's config as the default: both call
``arvid_ray.sweep.startup`` (storage pinned, pre-flight, resume, Ray, inputs, refusals = exit 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from arvid_ray.config import ConfigError, load_config
from arvid_ray.sweep.startup import SMOKE_HELP, SMOKE_OVERRIDES, SweepStart, interruptible, sweep_main

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "configs" / "sweeps" / "tune_window.yaml"
PROG = "tune_window"
__all__ = ["main", "DEFAULT_CONFIG", "SMOKE_OVERRIDES"]  # SMOKE_OVERRIDES: the start-up's, re-exported


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 1 no trial succeeded, 2 refused before launch (config, pre-flight, checkpoint),
    130 interrupted by SIGINT (143 by SIGTERM); the MLflow runs then end KILLED, --resume finishes."""
    return interruptible(PROG, _main, argv)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, action="append", default=None,
                        help="experiment YAML with a sweep section; repeat to layer files (later ones override)")
    parser.add_argument("--smoke-test", action="store_true", help=SMOKE_HELP)
    parser.add_argument("--resume", action="store_true", help="restore the sweep named sweep.name and finish it")
    parser.add_argument("--dry-run", action="store_true",
                        help="run every pre-flight check, print what would be launched, start nothing (exit 0 or 2)")
    parser.add_argument("--num-cpus", type=int, default=None, help="logical CPUs for a local Ray instance")
    parser.add_argument("--verbose", action="store_true",
                        help="also show Ray's own per-operator progress and INFO lines (= experiment.verbose=true)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args(argv)  # key=value overrides before or after the flags
    overrides = (SMOKE_OVERRIDES if args.smoke_test else []) + list(args.overrides)
    try:
        cfg = load_config(args.config or [DEFAULT_CONFIG], overrides)
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    from arvid_ray import console

    console.setup(args.verbose or cfg.experiment.verbose)  # before Ray starts: workers get the same settings
    start = SweepStart(prog=PROG, command="python experiments/tune_window.py", resume=args.resume,
                       dry_run=args.dry_run, num_cpus=args.num_cpus, overrides=tuple(overrides))
    return sweep_main(cfg, start)


if __name__ == "__main__":
    sys.exit(main())
