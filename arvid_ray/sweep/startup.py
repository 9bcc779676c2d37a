"""The one sweep start-up: what ``arvid-ray sweep``, ``tune_window.py`` and ``reproduce_paper.py`` run.

Design trade-off: every entry point that launches a sweep goes through :func:`start_sweep`, in one
order — pin the storage root on the driver (``ARVID_STORAGE`` is read here, never on a worker), check
every input a worker will open, resolve ``--resume`` (a typo'd or changed sweep is refused), all before
Ray starts and before any MLflow run exists; then connect through ``ray_session``, prepare the inputs
once and run the sweep. A deterministic refusal (config, pre-flight, checkpoint, missing file) is one
line and exit code 2 wherever it happens; ``--dry-run`` runs the same checks and starts nothing. The
entry points differ only in their flags' defaults and in what they print or write afterwards.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from arvid_ray.config import ConfigError, ExperimentConfig
from arvid_ray.sweep.results import SweepResult, tracking_lines

# what --smoke-test adds before the command line's own overrides: 1 sampled trial + the baseline, tiny
SMOKE_OVERRIDES = [
    "sweep.num_samples=1", "sweep.name=smoke", "train.steps=12", "train.log_every=4", "train.ckpt_every=6",
    "eval.quality_every=6", "eval.quality_videos=4",  # two evaluations during training per trial: the curves
    "train.global_batch_size=4", "data.batch_size=4", "eval.num_videos=8", "eval.num_sample_videos=2",
    "eval.drift_multipliers=[2]", "eval.drift_videos=4", "eval.trajectory_videos=4", "synth.num_videos=48",
    "model.preset=debug", "sweep.max_concurrent_trials=2",  # both at once: a tiny trial is mostly start-up
]
SMOKE_HELP = "2 tiny trials (1 sampled + the baseline) of the debug preset: what CI runs"


@dataclass(frozen=True)
class SweepStart:
    """How an entry point asked for the sweep (its flags), not what the sweep is (that is the config)."""

    prog: str  # the name refusals are printed under: "arvid-ray sweep", "tune_window", ...
    command: str = ""  # how to run this entry point again (the resume hint), e.g. "arvid-ray sweep"
    resume: bool = False  # finish the interrupted sweep named by sweep.name (or the latest one)
    dry_run: bool = False  # every check and the plan, starting nothing
    num_cpus: int | None = None  # logical CPUs of a local Ray (default ray_session.local_cpus())
    overrides: Sequence[str] = ()  # the command line's overrides (smoke ones first): do they name the sweep?
    rows: list[dict[str, Any]] | None = field(default=None, hash=False)  # a fixed table instead of a search


@dataclass
class SweepOutcome:
    code: int  # the entry point's exit code: 0 done, 1 no trial succeeded, 2 refused, 128 + signal
    cfg: ExperimentConfig  # as launched: storage root pinned, sweep name resolved, inputs prepared
    result: SweepResult | None = None  # None for a dry run or a refusal


def refusals() -> tuple[type[BaseException], ...]:
    """Errors that are deterministic refusals (bad config, failed pre-flight, unloadable checkpoint): an
    entry point prints their one-line message and exits 2; retrying cannot help."""
    from arvid_ray.storage import StorageError
    from arvid_ray.train.checkpoint import CheckpointError

    return ConfigError, CheckpointError, FileNotFoundError, StorageError


def prepare_inputs(cfg: ExperimentConfig) -> ExperimentConfig:
    """Materialise the built-in dataset and its token cache once, so trials skip decode and encode.

    Both live under the storage root (s3://… on a cluster): the cache is a sibling of the videos.parquet
    location, joined as a string (``pathlib`` would turn ``s3://b/x`` into ``s3:/b/x``)."""
    if cfg.data.tokens_path:
        return cfg
    from arvid_ray import storage as st
    from arvid_ray.data import videos_path
    from arvid_ray.tokens import write_token_cache

    videos = videos_path(cfg)
    cfg = cfg.replace(**{"data.source": videos})
    key = f"{st.basename(cfg.tokenizer.name).replace('.', '_')}-{cfg.data.resolution}px-{cfg.data.num_frames}f"
    out = st.join(st.parent(videos), f"tokens-{key}")
    cache = write_token_cache(cfg, out)
    return cfg.replace(**{"data.tokens_path": str(cache)})


def _before_ray(cfg: ExperimentConfig, start: SweepStart, cluster: bool) -> ExperimentConfig:
    """Pin the storage root, check every input a worker will open, resolve --resume: no Ray, no run."""
    from arvid_ray import storage as st
    from arvid_ray.preflight import check_inputs
    from arvid_ray.sweep.state import names_sweep, resume_target, sweep_storage

    cfg = cfg.replace(**{"storage.root": st.storage_root(cfg)})
    check_inputs(cfg, cluster=cluster)
    if start.resume:  # a typo'd or missing sweep is refused, never started afresh
        cfg = resume_target(cfg, sweep_storage(cfg), named=names_sweep(list(start.overrides)))
    return cfg


def start_sweep(cfg: ExperimentConfig, start: SweepStart) -> SweepOutcome:
    """Check, connect, prepare and run (or resume, or only plan) the sweep ``cfg`` describes; prints a
    refusal as ``<prog>: <message>`` on stderr (exit code 2) and a dry run's plan on stdout."""
    from arvid_ray.sweep.plan import dry_run, print_dry_run

    cluster = bool(os.environ.get("RAY_ADDRESS"))
    if start.dry_run:
        plan, refused = dry_run(cfg, cluster=cluster, num_cpus=start.num_cpus, rows=start.rows)
        return SweepOutcome(print_dry_run(start.prog, plan, refused), cfg)
    try:
        cfg = _before_ray(cfg, start, cluster)
    except refusals() as exc:
        print(f"{start.prog}: {exc}", file=sys.stderr)
        return SweepOutcome(2, cfg)
    from arvid_ray import ray_session
    from arvid_ray.sweep.state import fresh_sweep_name, sweep_storage
    from arvid_ray.sweep.tuner import run_sweep

    # more logical CPUs than cores locally, so Tune, Train and Data never starve each other
    ray_session.connect(num_cpus=start.num_cpus or ray_session.local_cpus())
    storage = sweep_storage(cfg)
    if not start.resume:
        cfg = fresh_sweep_name(cfg, storage)
    try:
        cfg = prepare_inputs(cfg)
        result = run_sweep(cfg, storage_path=storage, restore=start.resume, rows=start.rows)
    except refusals() as exc:  # deterministic (config, pre-flight, checkpoint): one line, no retry
        print(f"{start.prog}: {exc}", file=sys.stderr)
        return SweepOutcome(2, cfg)
    return SweepOutcome(result.exit_code(), cfg, result)


def sweep_main(cfg: ExperimentConfig, start: SweepStart) -> int:
    """``start_sweep``, then the sweep's summary for the person at the terminal; the exit code."""
    outcome = start_sweep(cfg, start)
    if outcome.result is not None:
        print_result(start, outcome.cfg, outcome.result)
    return outcome.code


def print_result(start: SweepStart, cfg: ExperimentConfig, result: SweepResult) -> None:
    """Trials that did not finish and why, tracking notes, the best three, the Pareto front, then how
    to open the comparison in MLflow (and how to resume when interrupted)."""
    from arvid_ray.tracking import ui_hint

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
    if result.time_to_target:
        print("  Time to the baseline's final quality (evaluations during training):")
        for line in result.time_to_target:
            print(f"    {line}")
    _print_links(cfg, result, ui_hint(result.tracking_uri))
    if result.interrupted:
        print(f"\nINTERRUPTED by {result.interrupted}: the parent run and unfinished trials are KILLED; finish with"
              f"\n  {start.command or start.prog} --resume sweep.name={result.name} (same config and overrides)")


def _print_links(cfg: ExperimentConfig, result: SweepResult, hint: str) -> None:
    """The sweep's last lines: how to open the MLflow UI, then one link per view (compare, Pareto, chart)."""
    from arvid_ray.tracking.runs import ui_links

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
              "pareto": "Pareto plot",
              "quality": "quality against training cost, per trial, during training (time to the baseline's quality)"}
    for key, label in labels.items():
        if key in links:
            print(f"  {label}:\n    {links[key]}")
    if not links:
        print(f"  then open experiment '{cfg.experiment.name}', run '{result.name}' → its child runs; the Pareto "
              f"plot is the parent run's artifact plots/pareto.png")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def interruptible(prog: str, main: Callable[..., int], *args: Any) -> int:
    """Run an entry point's ``main`` with SIGTERM treated as Ctrl+C: the sweep stops, its MLflow runs end
    KILLED, and the exit code is 128 + the signal (130 SIGINT, 143 SIGTERM); --resume finishes it."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return main(*args)
    except KeyboardInterrupt as exc:
        name = str(exc) if str(exc) in ("SIGINT", "SIGTERM") else "SIGINT"
        print(f"{prog}: interrupted by {name}; the sweep's runs are marked KILLED; finish it with "
              f"--resume sweep.name=<name>", file=sys.stderr)
        return 128 + int(getattr(signal, name))
    finally:
        signal.signal(signal.SIGTERM, previous)
