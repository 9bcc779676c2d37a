"""`arvid-ray <command>`: one entry point per pipeline stage.

Every command takes `--config FILE` and trailing `key=value` overrides, turned into one validated
ExperimentConfig before any work starts; stage modules are imported lazily so `--help` stays fast and
importing the CLI never imports Ray or MLflow.
"""

from __future__ import annotations

import argparse
import logging
import sys
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
    return 0


# ---------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arvid-ray", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_args, _) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", type=Path, default=None, help="experiment YAML file")
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
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, list(args.overrides) + overrides)
    except ConfigError as exc:
        print(f"arvid-ray {args.command}: {exc}", file=sys.stderr)
        return 2
    _, _, handler = _COMMANDS[args.command]
    try:
        return handler(args, cfg)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"arvid-ray {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
