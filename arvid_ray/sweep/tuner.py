"""The sweep: Ray Tune + Optuna over full training runs, cost versus quality in MLflow.

Design trade-off (Ray 2.60 Train V2): a Tune trial is a *driver function* that builds and fits its own
`TorchTrainer`; workers report through Ray's `TuneReportCallback`. All end-of-trial work (final
evaluation) therefore happens on rank 0 before the last report — code after `fit()` may never run when
ASHA stops a trial. The sweep owns the MLflow parent run and creates each trial's child run in the
driver (so a failed or stopped trial still has a run, ended by a Tune callback), and the workers log
into that run by id. Single-objective mode minimises quality with ASHA on validation CE;
multi-objective mode runs NSGA-II on (quality, cost) and reports the Pareto front.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arvid_ray.config import ConfigError, ExperimentConfig
from arvid_ray.search import (
    ROLE_KEY,
    DefineByRun,
    check_batch,
    check_metrics,
    check_sweep,
    pareto_front,
    parse_space,
    trial_overrides,
)

log = logging.getLogger(__name__)

TRIAL_TAG = "arvid.trial_id"
SWEEP_TAG = "arvid.sweep"
ROLE_TAG = "arvid.role"
ROW_KEY = "row"  # trial param of fixed-row runs: index into the rows table
DRIVER_CPUS = 0.25  # the driver function only waits on its TorchTrainer
RUN_DIR_TAG = "arvid.run_dir"  # where a trial's metrics.jsonl/tracking.json live (replayed at trial end)
INCOMPLETE = "INCOMPLETE"  # a trial that ran but has no final quality (interrupted, or stopped early)


@dataclass
class TrialSummary:
    trial_id: str
    role: str
    status: str
    params: dict[str, Any]
    metrics: dict[str, float]
    error: str | None = None


@dataclass
class SweepResult:
    name: str
    quality_key: str
    cost_key: str
    trials: list[TrialSummary] = field(default_factory=list)
    pareto: list[str] = field(default_factory=list)  # trial ids on the (quality, cost) front
    parent_run_id: str | None = None
    tracking_uri: str | None = None
    experiment_path: str = ""
    interrupted: str | None = None  # "SIGINT" / "SIGTERM" when a signal stopped the sweep

    def complete(self) -> list[TrialSummary]:
        """Trials with a finite final quality: the only ones a best/Pareto result may come from."""
        return [t for t in self.trials if t.status == "TERMINATED"
                and math.isfinite(t.metrics.get(self.quality_key, math.nan))]

    def best(self, k: int = 3) -> list[TrialSummary]:
        return sorted(self.complete(), key=lambda t: t.metrics[self.quality_key])[:k]

    @property
    def num_failed(self) -> int:
        return sum(t.status == "ERROR" for t in self.trials)

    @property
    def run_status(self) -> str:
        """The parent run's MLflow status: KILLED when interrupted, FAILED when no trial succeeded."""
        if self.interrupted:
            return "KILLED"
        return "FINISHED" if self.complete() else "FAILED"

    def exit_code(self) -> int:
        """130 on SIGINT (143 on SIGTERM), 1 when no trial succeeded, else 0."""
        if self.interrupted:
            return 128 + int(getattr(signal, self.interrupted, signal.SIGINT))
        return 0 if self.complete() else 1

    def headline(self) -> str:
        """One line for the person at the terminal: trials, failures, incomplete ones, interruption."""
        n_inc = sum(t.status == INCOMPLETE for t in self.trials)
        text = (f"Sweep '{self.name}': {len(self.trials)} trials ({len(self.complete())} complete, "
                f"{self.num_failed} failed, {n_inc} without final quality)")
        if self.interrupted:
            text += f"; INTERRUPTED by {self.interrupted}: resume with --resume sweep.name={self.name}"
        elif not self.complete():
            text += "; no trial succeeded"
        return text


# ------------------------------------------------------------------------------------------ MLflow
def tracking_uri(cfg: ExperimentConfig) -> str:
    """Absolute tracking URI (Ray workers change directory, so never a relative sqlite path)."""
    from arvid_ray.tracking import resolve_tracking_uri

    return resolve_tracking_uri(cfg)


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment_id(client, name: str) -> str:
    from arvid_ray.tracking.server import experiment_id  # tolerates another process creating it first

    return experiment_id(client, name)


def _child_run(uri: str, experiment: str, parent_id: str, sweep: str, trial_id: str, role: str) -> str:
    """Find (after a retry or restore) or create the child run of one trial."""
    client = _client(uri)
    exp_id = _experiment_id(client, experiment)
    found = client.search_runs(
        [exp_id], filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}' and tags.`mlflow.parentRunId` = '{parent_id}'"
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(
        exp_id,
        run_name=f"{sweep}-{trial_id}",
        tags={"mlflow.parentRunId": parent_id, TRIAL_TAG: trial_id, SWEEP_TAG: sweep, ROLE_TAG: role},
    )
    return run.info.run_id


# ------------------------------------------------------------------------------------------ trials
def _trial_driver(params: dict[str, Any], *, base: dict[str, Any], parent_run_id: str, uri: str,
                  rows: list[dict[str, Any]] | None = None) -> None:
    """One Tune trial = one Ray Train run of the trial's config (a searched point or a fixed row)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from arvid_ray.launch import build_trainer

    trial_id = tune.get_context().get_trial_id()
    base_cfg = ExperimentConfig.from_dict(base)
    if rows is not None:
        params = dict(rows[params[ROW_KEY]])
    role = params.get(ROLE_KEY, "search")
    run_id = _child_run(uri, base_cfg.experiment.name, parent_run_id, base_cfg.sweep.name, trial_id, role)
    try:
        cfg = ExperimentConfig.from_flat(trial_overrides(params), base=base_cfg)
    except ConfigError as exc:  # a proposal the config refuses: a failed trial, not a failed sweep
        client = _client(uri)
        client.set_tag(run_id, "arvid.error", str(exc)[:4000])
        client.set_terminated(run_id, status="FAILED")
        raise
    cfg = cfg.replace(**{
        "tracking.uri": uri, "tracking.run_id": run_id, "tracking.parent_run_id": parent_run_id,
        "train.run_name": f"{cfg.sweep.name}-{trial_id}", "train.final_eval": True,
    })
    run_dir = trial_run_dir(cfg)
    _tag_run(uri, run_id, {RUN_DIR_TAG: str(run_dir)})
    done = _finished_result(cfg, run_dir, uri, run_id)
    if done is not None:  # restored after its last step: keep its final evaluation, do not re-train
        log.info("trial %s already finished step %d; reporting its final result again", trial_id, cfg.train.steps)
        with contextlib.suppress(Exception):  # it did finish (an interrupted sweep had marked it KILLED)
            _client(uri).set_terminated(run_id, status="FINISHED")
        tune.report(done)
        return
    check_resumable(cfg)  # a refused checkpoint fails the trial at once (no Ray Train restarts)
    build_trainer(cfg, callbacks=[TuneReportCallback()]).fit()


def trial_run_dir(cfg: ExperimentConfig) -> Path:
    """The run directory (metrics.jsonl, tracking.json) of the training run ``cfg`` launches."""
    from arvid_ray import launch

    return launch._local_run_dir(launch.resolve_for_workers(cfg))


def check_resumable(cfg: ExperimentConfig) -> None:
    """Raise CheckpointError when the checkpoint this run would resume from cannot be loaded (refused by
    the weights-only check, corrupt, or of another shape): a deterministic refusal a retry cannot fix."""
    from arvid_ray import launch
    from arvid_ray.train import checkpoint as ckpt

    cfg = launch.resolve_for_workers(cfg)
    from arvid_ray import storage as st

    root = launch.train_storage(cfg)
    if st.is_remote(root):
        return  # remote storage: the worker's own load refuses it
    for where in (Path(root) / cfg.train.run_name, trial_run_dir(cfg) / "checkpoints"):
        latest = ckpt.latest_checkpoint(where)
        if latest is not None:
            ckpt.load_checkpoint(latest, cfg)


def _finished_result(cfg: ExperimentConfig, run_dir: Path, uri: str, run_id: str) -> dict[str, Any] | None:
    """The final result (quality and cost) of a run that already passed its last step: from its
    metrics.jsonl, else from its MLflow run; None when it still has to train or evaluate."""
    from arvid_ray.tracking import read_metrics_jsonl

    steps, key = cfg.train.steps, cfg.sweep.metric
    try:
        last = [r for r in read_metrics_jsonl(run_dir) if r.get("step", 0) >= steps and key in r]
    except (OSError, ValueError):
        last = []
    if last:
        return {k: v for k, v in last[-1].items() if k != "time"}
    try:
        client = _client(uri)
        if any(m.step >= steps for m in client.get_metric_history(run_id, key)):
            return {**client.get_run(run_id).data.metrics, "step": float(steps)}
    except Exception as exc:  # noqa: BLE001 - tracking away: train again rather than guess
        log.warning("could not read run %s from MLflow (%s)", run_id, exc)
    return None


def _tag_run(uri: str, run_id: str, tags: dict[str, str]) -> None:
    try:
        client = _client(uri)
        for k, v in tags.items():
            client.set_tag(run_id, k, v)
    except Exception as exc:  # noqa: BLE001 - tracking must not fail a trial
        log.warning("could not tag MLflow run %s: %s", run_id, exc)


def _end_child_runs_callback(uri: str, parent_run_id: str):
    from ray.tune import Callback

    class EndChildRuns(Callback):
        """Terminate each trial's child run: ASHA-stopped trials would otherwise stay RUNNING forever."""

        def _end(self, trial, status: str) -> None:
            try:
                _end_trial_runs(uri, parent_run_id, trial.trial_id, status)
            except Exception as exc:  # noqa: BLE001 - a tracking outage must not stop the sweep
                log.warning("could not end the MLflow run of trial %s: %s", trial.trial_id, exc)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._end(trial, "FINISHED")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._end(trial, "FAILED")

    return EndChildRuns()


def _end_trial_runs(uri: str, parent_run_id: str, trial_id: str, status: str) -> None:
    """Replay what the trial's run directory holds and MLflow lacks (its worker may have been stopped
    before its shipper caught up), then end the trial's runs that are still RUNNING."""
    from arvid_ray.tracking import JOURNAL_FILE, sync_run

    client = _client(uri)
    runs = client.search_runs(
        [client.get_run(parent_run_id).info.experiment_id],
        filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}' and tags.`mlflow.parentRunId` = '{parent_run_id}'",
    )
    for run in runs:
        run_dir = run.data.tags.get(RUN_DIR_TAG)
        if run_dir and (Path(run_dir) / JOURNAL_FILE).exists():
            sync_run(run_dir, uri)
        if client.get_run(run.info.run_id).info.status == "RUNNING":
            client.set_terminated(run.info.run_id, status=status)


# ------------------------------------------------------------------------------------------ Tune
def _searcher(cfg: ExperimentConfig, space: DefineByRun):
    """What Tune pickles is plain data: the sampler is built from a spec on first use (searcher.py)."""
    from arvid_ray.searcher import build_searcher

    sw = cfg.sweep
    return build_searcher(space, mode=sw.mode, metric=sw.metric, cost_metric=sw.cost_metric, seed=sw.seed,
                          num_samples=sw.num_samples)


def _scheduler(cfg: ExperimentConfig):
    if cfg.sweep.mode != "single":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        metric="eval/val_ce", mode="min", time_attr="step", max_t=cfg.train.steps,
        grace_period=min(cfg.sweep.asha_grace_steps, cfg.train.steps), reduction_factor=2,
    )


def max_concurrent_trials(cfg: ExperimentConfig, types=None) -> int:
    """Trials at once: sweep.max_concurrent_trials, else what the cluster's *declared* node types can host
    (an autoscaling cluster has no GPU until something asks; see arvid_ray.preflight)."""
    from arvid_ray import preflight

    types = types if types is not None else preflight.declared_node_types()
    return preflight.max_concurrent_trials(cfg, types, DRIVER_CPUS)


def sweep_storage(cfg: ExperimentConfig) -> str:
    """Tune storage: train.storage_path, else ``<storage root>/sweeps`` (local path or URI)."""
    from arvid_ray import storage as st

    return st.absolute(cfg.train.storage_path) if cfg.train.storage_path else st.join(st.storage_root(cfg), "sweeps")


def _tune_storage_args(cfg: ExperimentConfig, storage: str) -> dict[str, Any]:
    from arvid_ray import storage as st

    if not st.is_remote(storage):
        return {"storage_path": storage}
    filesystem, inner = st.resolve(storage, cfg.storage)
    return {"storage_path": inner, "storage_filesystem": filesystem}


def _progress_reporter():
    from ray.tune import CLIReporter

    return CLIReporter(
        metric_columns={"step": "step", "train/loss": "loss", "train/tokens_per_s": "tok/s",
                        "train/eta_s": "eta s", "eval/val_ce": "val ce", "cost/gpu_hours": "acc-h"},
        max_report_frequency=30, print_intermediate_tables=True,  # live table at verbose=1 too
    )


def _tuner(cfg: ExperimentConfig, storage: str, parent_run_id: str, uri: str, restore: bool,
           rows: list[dict[str, Any]] | None = None):
    from ray import tune

    from arvid_ray import preflight
    from arvid_ray import storage as st

    types = preflight.declared_node_types()
    # trial drivers (and their Train controllers, which Ray puts on the driver's node) on non-preemptible
    # nodes: a reclaimed spot node then only costs a worker-group restart, never the trial
    bundle = {"CPU": DRIVER_CPUS, **preflight.driver_resources(cfg, types)}
    trainable = tune.with_resources(
        tune.with_parameters(_trial_driver, base=cfg.to_dict(), parent_run_id=parent_run_id, uri=uri, rows=rows),
        tune.PlacementGroupFactory([bundle]),
    )
    storage_args = _tune_storage_args(cfg, storage)
    path = st.join(storage, cfg.sweep.name)
    inner = st.join(storage_args["storage_path"], cfg.sweep.name)
    fs_arg = {"storage_filesystem": storage_args["storage_filesystem"]} if "storage_filesystem" in storage_args else {}
    if restore and tune.Tuner.can_restore(inner, **fs_arg):
        log.info("restoring interrupted sweep from %s", path)
        # errored trials resume from their last checkpoint (stable Train run name); finished ones are kept
        return tune.Tuner.restore(inner, trainable=trainable, resume_errored=True, restart_errored=False,
                                  **fs_arg), path
    if rows is not None:  # a fixed table of configs (reproduce_paper): one trial per row, no searcher
        tune_config = tune.TuneConfig(num_samples=1, max_concurrent_trials=max_concurrent_trials(cfg, types),
                                      time_budget_s=cfg.sweep.time_budget_s or None)
        param_space = {ROW_KEY: tune.grid_search(list(range(len(rows))))}
    else:
        space = DefineByRun(parse_space(cfg.sweep.search_space, cfg), cfg.sweep.include_baseline,
                            {"objective.kind": "full"})
        tune_config = tune.TuneConfig(
            search_alg=_searcher(cfg, space), scheduler=_scheduler(cfg),
            num_samples=cfg.sweep.num_samples + int(cfg.sweep.include_baseline),
            max_concurrent_trials=max_concurrent_trials(cfg, types),
            time_budget_s=cfg.sweep.time_budget_s or None,
        )
        param_space = None
    run_config = tune.RunConfig(
        name=cfg.sweep.name, **storage_args,
        # a lost trial driver or worker node: retry the trial, resuming its Train run by its stable name
        failure_config=tune.FailureConfig(max_failures=cfg.sweep.max_failures, fail_fast=False),
        callbacks=[_end_child_runs_callback(uri, parent_run_id)],
        progress_reporter=_progress_reporter(), verbose=1,
    )
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config, param_space=param_space), path


def refusals() -> tuple[type[BaseException], ...]:
    """Errors that are deterministic refusals (bad config, failed pre-flight, unloadable checkpoint): an
    entry point prints their one-line message and exits 2; retrying cannot help."""
    from arvid_ray.train.checkpoint import CheckpointError

    out: tuple[type[BaseException], ...] = (ConfigError, CheckpointError, FileNotFoundError)
    try:
        from arvid_ray.storage import StorageError

        out += (StorageError,)
    except ImportError:  # pragma: no cover - older layout without storage.py
        pass
    return out


def tracking_lines(cfg: ExperimentConfig, result: SweepResult) -> list[str]:
    """Per trial, a plain line when its tracking was interrupted (and what was replayed or is missing)."""
    from arvid_ray.tracking import tracking_summary

    lines = []
    for t in result.trials:
        try:
            run_dir = trial_run_dir(cfg.replace(**{"train.run_name": f"{result.name}-{t.trial_id}"}))
            line = tracking_summary(run_dir)
        except Exception:  # noqa: BLE001 - a note, never a failure
            line = ""
        if line:
            lines.append(f"trial {t.trial_id}: {line}")
    return lines


def _trial_statuses(grid) -> dict[str, str]:
    """Tune's status of each trial by its directory (a Result alone cannot tell finished from paused)."""
    trials = getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or []
    return {Path(str(getattr(t, "path", "") or "")).name: str(t.status) for t in trials}


def _summaries(grid, rows: list[dict[str, Any]] | None, quality_key: str | None = None) -> list[TrialSummary]:
    """One summary per trial: ERROR (it failed), TERMINATED (finished, with its final quality) or
    INCOMPLETE (it ran, but has no final quality: interrupted, or stopped before its evaluation)."""
    out = []
    statuses = _trial_statuses(grid)
    for res in grid:
        params = dict(res.config or {})
        if rows is not None and ROW_KEY in params:
            params = dict(rows[params[ROW_KEY]])
        metrics = {k: float(v) for k, v in (res.metrics or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        trial_id = str((res.metrics or {}).get("trial_id") or Path(res.path).name)
        finished = statuses.get(Path(str(res.path)).name, "TERMINATED") == "TERMINATED"
        has_quality = quality_key is None or math.isfinite(metrics.get(quality_key, math.nan))
        status = "ERROR" if res.error else "TERMINATED" if finished and has_quality else INCOMPLETE
        out.append(TrialSummary(trial_id=trial_id, role=str(params.get(ROLE_KEY, "search")), status=status,
                                params=trial_overrides(params), metrics=metrics,
                                error=_error_line(res.error) if res.error else None))
    return out


def _error_line(error: BaseException) -> str:
    """The root cause's message (Tune wraps trial errors in several layers of tracebacks)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    causes = [ln for ln in lines if "Error:" in ln and not ln.startswith(("ray.", "File "))]
    return (causes[-1] if causes else lines[-1] if lines else repr(error))[:500]


def _parent_run(cfg: ExperimentConfig, uri: str, restore: bool) -> str:
    client = _client(uri)
    exp_id = _experiment_id(client, cfg.experiment.name)
    if restore:
        found = client.search_runs([exp_id], filter_string=(
            f"tags.`{SWEEP_TAG}` = '{cfg.sweep.name}' and tags.`{ROLE_TAG}` = 'parent'"),
            order_by=["attributes.start_time DESC"], max_results=1)
        if found:
            client.update_run(found[0].info.run_id, status="RUNNING")  # resumed: running again until it ends
            return found[0].info.run_id
    from arvid_ray.tracking import config_params

    params, tags = config_params(cfg)  # hyper-parameters as params, bookkeeping as tags, no credentials
    run = client.create_run(exp_id, run_name=cfg.sweep.name,
                            tags={**tags, SWEEP_TAG: cfg.sweep.name, ROLE_TAG: "parent"})
    for key, value in params.items():
        client.log_param(run.info.run_id, key, value)
    return run.info.run_id


def run_sweep(cfg: ExperimentConfig, *, storage_path: str | None = None, restore: bool = True,
              rows: list[dict[str, Any]] | None = None) -> SweepResult:
    """Run (or resume) the sweep described by ``cfg.sweep`` on the connected Ray cluster.

    ``rows``: instead of searching, run this fixed list of dotted-key overrides, one trial each (each row
    may carry ``sweep_role`` naming it, e.g. the ablation row's label).
    """
    import ray

    from arvid_ray import storage as st

    storage = storage_path or sweep_storage(cfg)
    asked = cfg  # the config as given, saved beside Tune's state for a resume to compare against
    if restore and st.is_file(st.join(storage, cfg.sweep.name, TUNE_STATE), cfg.storage):
        check_resume_config(cfg, storage)  # before Ray: a resume with another config is refused
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"))
    if rows is None:
        check_sweep(cfg)  # fail before any trial starts: space, metrics, batch divisibility
    else:
        check_metrics(cfg)
        for row in rows:  # every row must build a valid config before any trial starts
            check_batch(ExperimentConfig.from_flat(trial_overrides(row), base=cfg))
    from arvid_ray.preflight import check_resources, pin_accelerator

    types = check_resources(cfg)  # the trials' workers fit the cluster's declared node types, before any run
    cfg = pin_accelerator(cfg, types)  # one accelerator per sweep: its type prices cost/usd and tags the runs
    # quality exists only after the final evaluation, so early results cannot carry the searcher's metric
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # Tune's default (new) console output ignores a ProgressReporter ("AIR_VERBOSITY is set, ignoring
    # passed-in ProgressReporter"); the classic table is the one that shows per-trial tok/s and ETA
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    uri = tracking_uri(cfg)
    received: list[int] = []
    with _graceful_stop(received) as tune_running:
        parent = None
        try:
            parent = _parent_run(cfg, uri, restore)
            tuner, path = _tuner(cfg, storage, parent, uri, restore, rows)
            _write_sweep_state(asked, storage, "running")  # a process that dies here leaves it resumable
            tune_running.set()
            try:
                grid = tuner.fit()
            finally:
                tune_running.clear()
        except BaseException as exc:  # the sweep itself broke: leave no run RUNNING forever in the UI
            if parent is not None:
                interrupted = received or isinstance(exc, KeyboardInterrupt)
                _fail_open_runs(uri, parent, "KILLED" if interrupted else "FAILED")
            raise
    _write_sweep_state(asked, storage, "interrupted" if received else "finished")
    result = SweepResult(name=cfg.sweep.name, quality_key=cfg.sweep.metric, cost_key=cfg.sweep.cost_metric,
                         trials=_summaries(grid, rows, cfg.sweep.metric), parent_run_id=parent, tracking_uri=uri,
                         experiment_path=path, interrupted=signal.Signals(received[0]).name if received else None)
    done = result.complete()  # Pareto and best/* only from trials with their final quality and cost
    points = [(t.metrics.get(result.quality_key, math.nan), t.metrics.get(result.cost_key, math.nan)) for t in done]
    result.pareto = [done[i].trial_id for i in pareto_front(points)]
    _log_report(cfg, result)
    return result


@contextlib.contextmanager
def _graceful_stop(received: list[int]):
    """SIGINT/SIGTERM → Tune's own graceful stop (experiment state saved for --resume), remembered in
    ``received`` so the sweep ends KILLED with exit code 128 + signal. Outside ``tuner.fit()`` (and on a
    second signal) it raises KeyboardInterrupt. Yields an Event the caller sets while Tune runs."""
    tune_running = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield tune_running
        return
    usr1 = getattr(signal, "SIGUSR1", None)
    before_usr1 = signal.getsignal(usr1) if usr1 else None

    def handler(signum, frame):
        first = not received
        received.append(signum)
        tune_handler = signal.getsignal(usr1) if usr1 else None
        if first and tune_running.is_set() and tune_handler not in (None, signal.SIG_DFL, signal.SIG_IGN,
                                                                    before_usr1):
            log.warning("%s: stopping the sweep after saving its state (again to stop at once)",
                        signal.Signals(signum).name)
            tune_handler(usr1, frame)  # what Tune does on its own SIGINT: stop the loop, save the state
            return
        raise KeyboardInterrupt(signal.Signals(signum).name)

    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours forwards to Tune's, and remembers the signal
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield tune_running
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if usr1:
            signal.signal(usr1, before_usr1)


def _fail_open_runs(uri: str, parent_run_id: str, status: str = "FAILED", include_parent: bool = True) -> None:
    """End every run of the sweep still RUNNING (its children, and the parent) with ``status``."""
    try:
        client = _client(uri)
        exp_id = client.get_run(parent_run_id).info.experiment_id
        children = client.search_runs([exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
        for run in [*children, *([client.get_run(parent_run_id)] if include_parent else [])]:
            if run.info.status == "RUNNING":
                client.set_terminated(run.info.run_id, status=status)
    except Exception as exc:  # noqa: BLE001 - do not hide the sweep's own error behind a tracking one
        log.warning("could not end the sweep's open MLflow runs as %s: %s", status, exc)


LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local (sqlite / file) store


def ui_links(result: SweepResult, ui_url: str | None = None) -> dict[str, str]:
    """Browser links into the MLflow UI for a sweep: ``compare`` (MLflow's compare view with every trial
    run selected), ``pareto`` (the parent run's plots/pareto.png) and ``chart`` (its interactive
    plots/cost_quality.html). ``ui_url``: where the UI is served (default: the tracking server, or
    LOCAL_UI for a local store). URL formats are MLflow 3's hash routes (``/#/compare-runs?runs=[...]``)."""
    from urllib.parse import quote

    from arvid_ray.tracking import mask_uri

    uri = result.tracking_uri or ""
    base = mask_uri(ui_url or (uri if uri.startswith(("http://", "https://")) else LOCAL_UI)).rstrip("/")
    client = _client(uri)
    exp_id = client.get_run(result.parent_run_id).info.experiment_id
    children = client.search_runs([exp_id], filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'",
                                  max_results=1000, order_by=["attributes.start_time ASC"])

    def as_json(value: list[str]) -> str:
        return quote(json.dumps(value, separators=(",", ":")), safe=",")

    run_page = f"{base}/#/experiments/{exp_id}/runs/{result.parent_run_id}"
    links = {"pareto": f"{run_page}/artifacts/plots/pareto.png",
             "chart": f"{run_page}/artifacts/plots/cost_quality.html"}
    if children:
        ids = [r.info.run_id for r in children]
        links = {"compare": f"{base}/#/compare-runs?runs={as_json(ids)}&experiments={as_json([exp_id])}", **links}
    return links


def _log_report(cfg: ExperimentConfig, result: SweepResult) -> None:
    from arvid_ray.report import sweep_report

    out = cfg.experiment.workdir_path() / "reports" / cfg.sweep.name
    out.mkdir(parents=True, exist_ok=True)
    files = sweep_report(result, out)
    summary = out / "report.json"  # machine-readable twin of report.md (trials, metrics, Pareto ids)
    summary.write_text(json.dumps(dataclasses.asdict(result), indent=1, default=str))
    files.append(summary)
    try:
        client = _client(result.tracking_uri)
        for path in files:
            sub = path.parent.relative_to(out).as_posix()
            client.log_artifact(result.parent_run_id, str(path), artifact_path=None if sub == "." else sub)
        best = result.best(1)
        if best:
            client.log_metric(result.parent_run_id, f"best/{result.quality_key}", best[0].metrics[result.quality_key])
        client.log_metric(result.parent_run_id, "sweep/num_failed", result.num_failed)
        client.log_metric(result.parent_run_id, "sweep/num_complete", len(result.complete()))
        client.log_metric(result.parent_run_id, "sweep/num_incomplete",
                          sum(t.status == INCOMPLETE for t in result.trials))
        if result.interrupted:
            client.set_tag(result.parent_run_id, "arvid.interrupted", result.interrupted)
    except Exception as exc:  # noqa: BLE001 - the report is on disk; still end every run below
        log.warning("could not log the sweep report to MLflow (%s); it is in %s", exc, out)
    _fail_open_runs(result.tracking_uri, result.parent_run_id, "KILLED" if result.interrupted else "FAILED",
                    include_parent=False)
    try:
        _client(result.tracking_uri).set_terminated(result.parent_run_id, status=result.run_status)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not end the sweep's parent run %s: %s", result.parent_run_id, exc)


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


def fresh_sweep_name(cfg: ExperimentConfig, storage: str) -> ExperimentConfig:
    """A new sweep never silently resumes an old one: suffix the name if its directory exists."""
    from arvid_ray import storage as st

    base, n = cfg.sweep.name, 1
    name = base
    while st.exists(st.join(storage, name), cfg.storage):
        n += 1
        name = f"{base}-{n}"
    return cfg.replace(**{"sweep.name": name}) if name != base else cfg


# ------------------------------------------------------------------------------------------- resume
SWEEP_STATE = "arvid_sweep.json"  # beside Tune's tuner.pkl: the sweep's config and whether it finished
TUNE_STATE = "tuner.pkl"  # what Tuner.can_restore looks for
# what a resume may change: how the sweep runs, not what it searches or measures
RESUME_MAY_DIFFER = ("experiment.verbose", "sweep.max_concurrent_trials", "sweep.time_budget_s",
                     "sweep.max_failures", "train.max_failures", "train.resource_timeout_s")


def _sweep_states(cfg: ExperimentConfig, storage: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, state) of every sweep under ``storage`` holding Tune state, oldest first. A sweep that
    predates the state file, or whose process died, has no 'finished' state: it counts as interrupted."""
    from pyarrow import fs

    from arvid_ray import storage as st

    filesystem, inner = st.resolve(storage, cfg.storage)
    if filesystem.get_file_info(inner).type != fs.FileType.Directory:
        return []
    found = []
    for info in filesystem.get_file_info(fs.FileSelector(inner)):
        tune_state = filesystem.get_file_info(f"{info.path}/{TUNE_STATE}")
        if info.type != fs.FileType.Directory or tune_state.type != fs.FileType.File:
            continue
        name = info.base_name
        state: dict[str, Any] = {}
        with contextlib.suppress(FileNotFoundError, OSError, ValueError):
            state = json.loads(st.read_text(st.join(storage, name, SWEEP_STATE), cfg.storage))
        started = float(state.get("started") or (tune_state.mtime.timestamp() if tune_state.mtime else 0.0))
        found.append((name, {**state, "started": started}))
    return sorted(found, key=lambda item: (item[1]["started"], item[0]))


def interrupted_sweeps(cfg: ExperimentConfig, storage: str) -> list[str]:
    """Names of the sweeps under ``storage`` that did not finish, oldest first."""
    return [name for name, state in _sweep_states(cfg, storage) if state.get("status") != "finished"]


def resume_target(cfg: ExperimentConfig, storage: str, named: bool) -> ExperimentConfig:
    """The config ``--resume`` finishes: the sweep named by sweep.name when the command line names one
    (refused when it has no Tune state to restore: a typo must not start a new full sweep), else the
    latest interrupted sweep of the config's sweep.name (``name`` or ``name-N``)."""
    import re

    states = dict(_sweep_states(cfg, storage))
    interrupted = interrupted_sweeps(cfg, storage)
    listing = f"interrupted sweeps there: {', '.join(interrupted)}" if interrupted else "there is no interrupted sweep"
    if named:
        if cfg.sweep.name not in states:
            raise ConfigError(f"--resume: no sweep named sweep.name={cfg.sweep.name} under {storage} ({listing}); "
                              f"name one of them, or drop --resume to start a new sweep")
        return cfg
    family = [n for n in interrupted if re.fullmatch(rf"{re.escape(cfg.sweep.name)}(-\d+)?", n)]
    if not family:
        raise ConfigError(f"--resume: no interrupted sweep named {cfg.sweep.name} or {cfg.sweep.name}-N under "
                          f"{storage} ({listing}); pass sweep.name=<name>, or drop --resume to start a new sweep")
    return cfg.replace(**{"sweep.name": family[-1]})


def names_sweep(overrides: list[str]) -> bool:
    """Whether command-line overrides name the sweep (``sweep.name=...``)."""
    return any(item.partition("=")[0].strip() == "sweep.name" for item in overrides)


def config_differences(saved: dict[str, Any], cfg: ExperimentConfig) -> list[str]:
    """Dotted keys whose value in ``cfg`` differs from the interrupted sweep's saved flat config."""
    now = cfg.to_flat()
    keys = sorted((set(saved) | set(now)) - set(RESUME_MAY_DIFFER))
    return [k for k in keys if json.dumps(saved.get(k), sort_keys=True, default=str)
            != json.dumps(now.get(k), sort_keys=True, default=str)]


def check_resume_config(cfg: ExperimentConfig, storage: str) -> None:
    """Refuse to resume with a config other than the interrupted sweep's: the restored trials and the
    searcher would mix two experiments. Sweeps from before the state file are not checked."""
    from arvid_ray import storage as st

    try:
        saved = json.loads(st.read_text(st.join(storage, cfg.sweep.name, SWEEP_STATE), cfg.storage))["config"]
    except (FileNotFoundError, OSError, ValueError, KeyError):
        log.warning("sweep %s has no saved config (%s); resuming without comparing configs", cfg.sweep.name,
                    SWEEP_STATE)
        return
    differ = config_differences(saved, cfg)
    if differ:
        shown = "; ".join(f"{k}: {saved.get(k)!r} -> {cfg.to_flat().get(k)!r}" for k in differ[:8])
        more = f" (+{len(differ) - 8} more)" if len(differ) > 8 else ""
        raise ConfigError(f"--resume: the command line's config differs from interrupted sweep "
                          f"{cfg.sweep.name}'s in {shown}{more}; resume with the same config and overrides, "
                          f"or drop --resume to start a new sweep")


def _write_sweep_state(cfg: ExperimentConfig, storage: str, status: str, started: float | None = None) -> None:
    from arvid_ray import storage as st

    uri = st.join(storage, cfg.sweep.name, SWEEP_STATE)
    if started is None:
        with contextlib.suppress(FileNotFoundError, OSError, ValueError, KeyError):
            started = json.loads(st.read_text(uri, cfg.storage))["started"]
    state = {"status": status, "started": started or time.time(), "config": cfg.to_flat()}
    st.write_text(uri, json.dumps(state, indent=1, default=str), cfg.storage)


# ------------------------------------------------------------------------------------------ dry run
def _tracking_refusal(cfg: ExperimentConfig) -> str | None:
    """A tracking server that does not answer its /health page (no MLflow import, no run created)."""
    import urllib.error
    import urllib.request

    if not cfg.tracking.enabled:
        return None
    uri = tracking_uri(cfg)
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10):
            return None
    except urllib.error.HTTPError as exc:  # it answers (auth, proxies): reachable
        return None if exc.code < 500 else f"tracking server {uri} answers {exc.code} on /health"
    except OSError as exc:
        return (f"tracking server {uri} (tracking.uri / MLFLOW_TRACKING_URI) does not answer ({exc}); start it "
                f"or forward its port, or set tracking.uri=sqlite:///<absolute path>.db")


def dry_run(cfg: ExperimentConfig, *, cluster: bool, num_cpus: int | None = None,
            rows: list[dict[str, Any]] | None = None) -> tuple[list[str], list[str]]:
    """Every pre-flight check a sweep makes — inputs, storage reachability and region, search space,
    declared node types and accelerator, trial-driver placement, tracking server — and what it would
    launch, starting no trial, no MLflow run and no local Ray. Returns (plan lines, refusals); callers
    exit 0 with no refusal, else 2."""
    from arvid_ray import preflight
    from arvid_ray import storage as st

    plan: list[str] = []
    refused: list[str] = []

    def check(fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ConfigError, ValueError, FileNotFoundError) as exc:
            refused.append(str(exc))
            return None

    cfg = cfg.replace(**{"storage.root": st.storage_root(cfg)})
    root = cfg.storage.root
    check(preflight.check_inputs, cfg, cluster=cluster)
    where = root
    if st.scheme(root) == "s3" and not refused:
        where += f" (region {st.resolve(root, cfg.storage)[0].region})"
    plan.append(f"storage root: {where}")
    storage = sweep_storage(cfg)
    if not refused:
        cfg = fresh_sweep_name(cfg, storage)
    plan.append(f"sweep: {cfg.sweep.name} under {storage} (Tune state, checkpoints)")
    if cfg.data.source == "synthetic":
        plan.append(f"data: built-in synthetic, {cfg.synth.num_videos} videos rendered once under "
                    f"{st.join(root, 'synthetic')}")
    else:
        plan.append(f"data: {cfg.data.source}" + (f", token cache {cfg.data.tokens_path}" if cfg.data.tokens_path else ""))
    if rows is None:
        if check(check_sweep, cfg) is not None:
            trials = cfg.sweep.num_samples + int(cfg.sweep.include_baseline)
            plan.append(f"trials: {trials} ({cfg.sweep.num_samples} sampled over "
                        f"{', '.join(cfg.sweep.search_space) or 'nothing'}"
                        f"{' + the baseline' if cfg.sweep.include_baseline else ''}), "
                        f"quality {cfg.sweep.metric}, cost {cfg.sweep.cost_metric}")
    else:
        check(check_metrics, cfg)
        for row in rows:
            if (row_cfg := check(ExperimentConfig.from_flat, trial_overrides(row), base=cfg)) is not None:
                check(check_batch, row_cfg)
        plan.append(f"trials: {len(rows)} (one per row)")
    if (problem := _tracking_refusal(cfg)) is not None:
        refused.append(problem)
    plan.append(f"tracking: {tracking_uri(cfg) if cfg.tracking.enabled else 'off'}")
    types = check(preflight.planned_node_types, num_cpus)
    if types is not None:
        kind = ("declared" if all(t.declared for t in types) else "NOT declared (live nodes; the autoscaler "
                "decides)")
        plan.append(f"node types ({kind}): {preflight.describe(types)}")
        if check(preflight.check_resources, cfg, types) is not None:
            cfg = check(preflight.pin_accelerator, cfg, types) or cfg
            if cfg.train.accelerator_type:
                price = cfg.cost.price_per_hour.get(cfg.train.accelerator_type)
                plan.append(f"accelerator: {cfg.train.accelerator_type} for every trial"
                            + (f", ${price:g}/h per device in cost.price_per_hour" if price is not None else ""))
            request = preflight.worker_request(cfg)
            driver = check(preflight.driver_resources, cfg, types)
            concurrent = preflight.max_concurrent_trials(cfg, types, DRIVER_CPUS)
            plan.append(f"per trial: {cfg.train.num_workers} Train workers x "
                        f"{{{', '.join(f'{k}: {v:g}' for k, v in request.items())}}}, driver "
                        f"{{CPU: {DRIVER_CPUS:g}{''.join(f', {k}: {v:g}' for k, v in (driver or {}).items())}}}; "
                        f"at most {concurrent} trials at once")
    return plan, refused


def print_dry_run(prog: str, plan: list[str], refused: list[str]) -> int:
    """Print a dry run's plan, then its refusals; the exit code (0 would launch, 2 refused)."""
    print(f"{prog} --dry-run: nothing was started")
    for line in plan:
        print(f"  {line}")
    for line in refused:
        print(f"{prog}: refused: {line}", file=sys.stderr)
    print(f"  => {'would launch' if not refused else f'refused ({len(refused)})'}")
    return 2 if refused else 0
