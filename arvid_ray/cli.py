"""`arvid-ray <command>`: one entry point per pipeline stage.

Every command takes `--config FILE` and trailing `key=value` overrides, turned into one validated
ExperimentConfig before any work starts; stage modules are imported lazily so `--help` stays fast and
importing the CLI never imports Ray or MLflow.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from arvid_ray.config import ConfigError, ExperimentConfig, load_config

log = logging.getLogger("arvid_ray")

Handler = Callable[[argparse.Namespace, ExperimentConfig], int]
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]] = {}


def command(name: str, help: str, add_args: Callable[[argparse.ArgumentParser], None] = lambda p: None):
    """Register a subcommand handler ``fn(args, cfg) -> exit code``."""

    def wrap(fn: Handler) -> Handler:
        _COMMANDS[name] = (help, add_args, fn)
        return fn

    return wrap


# ---------------------------------------------------------------------------------------- synth
def _synth_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, nargs="?", help="output directory (default <workdir>/synthetic)")


@command("synth", "generate the built-in synthetic dataset (MP4 + manifest)", _synth_args)
def _synth(args: argparse.Namespace, cfg: ExperimentConfig) -> int:
    from arvid_ray.video.synthetic import write_dataset

    out = args.out or cfg.experiment.workdir_path() / "synthetic"
    manifest = write_dataset(cfg.synth, out, progress=True)
    print(f"wrote {cfg.synth.num_videos} videos; manifest: {manifest}")
    return 0


# ---------------------------------------------------------------------------------------- ingest
def _ingest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="directory tree, manifest (.csv/.jsonl) or s3://bucket/prefix")
    p.add_argument("out", help="output directory for videos.parquet (local path or s3://)")


@command("ingest", "ingest videos into videos.parquet (+ rejects.jsonl)", _ingest_args)
def _ingest(args: argparse.Namespace, cfg: ExperimentConfig) -> int:
    from arvid_ray.ingest import ingest

    summary = ingest(args.src, args.out, cfg, progress=True)
    print(summary.format())
    if summary.accepted == 0:
        print(f"arvid-ray ingest: error: none of the {summary.inputs} inputs is a usable video (the reasons are "
              f"above); any dataset already in {args.out} was kept", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------------------- tokenize
def _tokenize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", nargs="?", help="output directory or .parquet file for the token cache "
                   "(default: tokens-<tokenizer>-<clip> beside the videos.parquet of data.source)")
    p.add_argument("--split", action="append", default=None, help="only these splits (repeatable; default all)")


@command("tokenize", "tokenize data.source clips into a tokens.parquet cache (Ray Data actor pool)", _tokenize_args)
def _tokenize(args: argparse.Namespace, cfg: ExperimentConfig) -> int:
    from arvid_ray.data import videos_path
    from arvid_ray.tokens import default_cache_dir, write_token_cache

    videos = videos_path(cfg)
    cfg = cfg.replace(**{"data.source": videos})
    out = args.out or default_cache_dir(cfg, videos)
    path = write_token_cache(cfg, out, splits=args.split, progress=True)
    print(f"token cache: {path}; train from it with data.tokens_path={path}")
    return 0


# ---------------------------------------------------------------------------------------- train-tokenizer
def _train_tokenizer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, nargs="?",
                   help="output checkpoint .pt (default <workdir>/tokenizer/tokenizer.pt); use it as tokenizer.name")


@command("train-tokenizer", "train the causal FSQ video tokenizer (single process, CPU ok)", _train_tokenizer_args)
def _train_tokenizer(args: argparse.Namespace, cfg: ExperimentConfig) -> int:
    from arvid_ray.tokenizer.training import train_from_config

    out = args.out or cfg.experiment.workdir_path() / "tokenizer" / "tokenizer.pt"
    summary = train_from_config(cfg, out)
    print(f"wrote {summary['path']}: held-out PSNR {summary['psnr']:.2f} dB, "
          f"codebook usage {summary['codebook_usage']:.1%}; use it with tokenizer.name={summary['path']}")
    return 0


# ---------------------------------------------------------------------------------------- train
@command("train", "train the AR model: Ray Train TorchTrainer (train.num_workers=0: in-process, no Ray)")
def _train(args: argparse.Namespace, cfg: ExperimentConfig) -> int:
    from arvid_ray.launch import launch
    from arvid_ray.sweep.driver import check_resumable, trial_run_dir
    from arvid_ray.tracking import end_open_run, tracking_summary

    check_resumable(cfg)  # a checkpoint that would be refused stops here, before any worker (no restarts)
    try:
        result = launch(cfg)
    except BaseException as exc:  # the run's MLflow status tells the truth even when the driver dies
        end_open_run(trial_run_dir(cfg), "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    for key in ("step", "train/loss", "eval/val_ce", "train/tokens_per_s", "cost/gpu_hours", "cost/usd"):
        if key in result.metrics:
            print(f"{key} {result.metrics[key]:.6g}")
    print(f"run {result.run_name}: {result.run_dir}; last checkpoint: {result.checkpoint}; "
          f"MLflow run: {result.mlflow_run_id}")
    note = tracking_summary(result.run_dir)
    if note:
        print(note)
    return 0


# ---------------------------------------------------------------------------------------- sync
def _sync_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="a run directory holding metrics.jsonl (and tracking.json)")
    p.add_argument("--uri", default=None, help="tracking server (default: the one the run logged to)")
    p.add_argument("--all", action="store_true", help="resend every line (MLflow keeps one copy of each point)")


@command("sync", "put what a run directory holds and MLflow lacks (after an outage) into its MLflow run", _sync_args)
def _sync(args: argparse.Namespace, cfg: ExperimentConfig) -> int:
    from arvid_ray.tracking import sync_run

    try:
        out = sync_run(args.run_dir, args.uri or cfg.tracking.uri, replay_all=args.all)
    except ConnectionError as exc:
        print(f"arvid-ray sync: {exc}", file=sys.stderr)
        return 1
    print(f"synced {args.run_dir}: {out['points']} metric points and {out['ops']} operation(s) into MLflow run "
          f"{out['run_id']} at {out['uri']} (status {out['status']})")
    return 0


# ---------------------------------------------------------------------------------------- sweep
def _sweep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true", help="restore the sweep named sweep.name and finish it")
    p.add_argument("--dry-run", action="store_true",
                   help="run every pre-flight check, print what would be launched, start nothing (exit 0 or 2)")
    p.add_argument("--smoke-test", action="store_true",
                   help="2 tiny trials (1 sampled + the baseline) of the debug preset: what CI runs "
                        "(e.g. with --config experiments/configs/sweeps/tune_window.yaml)")
    p.add_argument("--num-cpus", type=int, default=None, help="logical CPUs for a local Ray instance")


@command("sweep", "Ray Tune + Optuna sweep over the config's sweep.search_space (what tune_window.py runs)",
         _sweep_args)
def _sweep(args: argparse.Namespace, cfg: ExperimentConfig) -> int:
    from arvid_ray.sweep.startup import SweepStart, sweep_main

    start = SweepStart(prog="arvid-ray sweep", command="arvid-ray sweep", resume=args.resume, dry_run=args.dry_run,
                       num_cpus=args.num_cpus, overrides=(*args.preset_overrides, *args.overrides))
    return sweep_main(cfg, start)


# ---------------------------------------------------------------------------------------- evaluate
def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="a step_* checkpoint directory")
    p.add_argument("--out", type=Path, default=None, help="samples/plots/metrics directory (default <ckpt>/eval)")
    p.add_argument("--run-id", default=None,
                   help="log into this existing evaluation run (default: a new run linked to the training run)")


@command("evaluate", "sample N videos from a checkpoint; FD/FVD, consistency, drift → MLflow", _evaluate_args)
def _evaluate(args: argparse.Namespace, cfg: ExperimentConfig) -> int:
    from arvid_ray.evaluate import evaluate_checkpoint

    saved = args.checkpoint / "config.yaml"
    training_run = _training_run_id(args.checkpoint)
    if args.config is None and saved.is_file():  # the checkpoint's config + this command's overrides
        default = ExperimentConfig().to_flat()
        changed = {k: v for k, v in cfg.to_flat().items() if default.get(k) != v}
        base = load_config(saved)
        training_run = training_run or base.tracking.run_id
        # the evaluation is a run of its own, on the tracking server of *this* environment when it names one
        here = {"tracking.run_id": None, "tracking.parent_run_id": None}
        if os.environ.get("MLFLOW_TRACKING_URI"):
            here["tracking.uri"] = None
        cfg = ExperimentConfig.from_flat(changed, base=base.replace(**here))
    cfg = cfg.replace(**{"tracking.run_id": None, "tracking.parent_run_id": None})
    result = evaluate_checkpoint(cfg, args.checkpoint, out_dir=args.out, run_id=args.run_id,
                                 training_run_id=training_run)
    for key, value in result["metrics"].items():
        if "_seg" not in key:
            print(f"{key} {value:.6g}")
    print(f"samples and plots: {result['out_dir']}; MLflow run: {result['run_id']}")
    return 0


def _training_run_id(checkpoint: Path) -> str | None:
    """The MLflow run that trained ``checkpoint``: from the run directory's tracking journal."""
    from arvid_ray.tracking import read_journal

    for run_dir in (checkpoint.parent, checkpoint.parent.parent):  # Ray storage / <run_dir>/checkpoints
        run_id = read_journal(run_dir).get("run_id")
        if run_id:
            return run_id
    return None


# --------------------------------------------------------------------------------------- config
def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--changed", action="store_true", help="only the keys whose value differs from the default")


@command("config", "print the resolved config as YAML: every key with its docstring, its default when changed",
         _config_args)
def _config(args: argparse.Namespace, cfg: ExperimentConfig) -> int:
    """The output is itself a config file: ``arvid-ray config ... > my.yaml`` then ``--config my.yaml``."""
    import yaml

    from arvid_ray import __version__
    from arvid_ray.config import config_keys

    def flow(value) -> str:
        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**9).strip().removesuffix("\n...")

    sources = " ".join(str(c) for c in args.config or []) or "defaults"
    lines = [f"# arvid-ray {__version__}: resolved config from {sources}"
             f"{f' + {len(args.overrides)} override(s)' if args.overrides else ''}",
             "# each key: its docstring above it; '# default: X' when the value differs from the default"]
    flat, section = cfg.to_flat(), None
    for key, default, doc in config_keys():
        value = flat[key]
        if args.changed and value == default:
            continue
        head, _, name = key.partition(".")
        if head != section:
            section = head
            lines.append(f"{head}:")
        lines.append(f"  # {doc}")
        lines.append(f"  {name}: {flow(value)}" + (f"  # default: {flow(default)}" if value != default else ""))
    print("\n".join(lines))
    return 0


# ---------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    from arvid_ray import __version__

    parser = argparse.ArgumentParser(
        prog="arvid-ray", description=__doc__.splitlines()[0],
        epilog="Every command takes --config FILE (repeatable: later files override earlier ones) and trailing "
               "key=value overrides; `arvid-ray config` lists every key with its default and docstring.")
    parser.add_argument("--version", action="version", version=f"arvid-ray {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and Ray's own per-operator progress and INFO lines (= experiment.verbose)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_args, _) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", type=Path, action="append", default=None,
                       help="experiment YAML file; give it again to layer files (later ones override earlier ones)")
        add_args(p)
        p.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                       help="config overrides, e.g. train.steps=100 objective.kind=local")
    return parser


def _split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """key=value tokens may follow positionals; pull them out so argparse sees clean positionals."""
    plain = [a for a in argv if not ("=" in a and not a.startswith("-") and "://" not in a.split("=", 1)[0])]
    overrides = [a for a in argv if a not in plain]
    return plain, overrides


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    plain, overrides = _split_overrides(argv)
    args = build_parser().parse_args(plain)
    args.overrides = list(args.overrides) + overrides  # every key=value, wherever it stood
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.preset_overrides = _preset_overrides(args)
    try:
        cfg = load_config(args.config, [*args.preset_overrides, *args.overrides])
    except ConfigError as exc:
        print(f"arvid-ray {args.command}: {exc}", file=sys.stderr)
        return 2
    from arvid_ray import console

    console.setup(args.verbose or cfg.experiment.verbose)  # before any ray.init: quiet framework lines
    _, _, handler = _COMMANDS[args.command]
    from arvid_ray.train.checkpoint import CheckpointError

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if main_thread else None  # SIGTERM = Ctrl+C
    try:
        return handler(args, cfg)
    except CheckpointError as exc:  # deterministic: retrying the same file cannot help (training or tokenizer)
        exc = getattr(exc, "cause", None) or exc  # raised in a Ray task: its own message, not the task's traceback
        way_out = f". Way out: {exc.way_out}" if getattr(exc, "way_out", None) else ""
        print(f"arvid-ray {args.command}: error: {exc}{way_out}", file=sys.stderr)
        return 2
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        exc = getattr(exc, "cause", None) or exc
        print(f"arvid-ray {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        name = str(exc) if str(exc) in ("SIGINT", "SIGTERM") else "SIGINT"
        print(f"arvid-ray {args.command}: interrupted by {name}; its MLflow runs are marked KILLED", file=sys.stderr)
        return 128 + int(getattr(signal, name))
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _preset_overrides(args: argparse.Namespace) -> list[str]:
    """The overrides a flag stands for (``sweep --smoke-test``), applied before the command line's own."""
    if getattr(args, "smoke_test", False):
        from arvid_ray.sweep.startup import SMOKE_OVERRIDES

        return list(SMOKE_OVERRIDES)
    return []


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
