"""The Tuner: Ray Tune + Optuna over full training runs, cost versus quality in MLflow.

Design trade-off: one Tune trial is one training run (see ``driver.py``), so the Tuner only decides
which configs run, how many at once and where their drivers sit; everything it needs is derived from
the config and the cluster's *declared* node types (an autoscaling cluster has no GPU until asked).
Single-objective mode minimises quality with ASHA on validation CE or, with ``sweep.prune_on=quality``,
on the quality measured during training; multi-objective mode runs NSGA-II on (quality, cost) and reports
the Pareto front from the final values; a fixed table of rows (reproduce_paper) runs one trial per row with
no searcher. SIGINT/SIGTERM become Tune's own graceful stop, so an interrupted sweep is
saved for ``--resume`` and its runs end KILLED.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
from typing import Any

from arvid_ray.config import ExperimentConfig
from arvid_ray.sweep.driver import DRIVER_CPUS, ROW_KEY, _trial_driver
from arvid_ray.sweep.results import SweepResult, _log_report, _summaries
from arvid_ray.sweep.space import (
    DefineByRun,
    asha_target,
    check_batch,
    check_metrics,
    check_sweep,
    pareto_front,
    parse_space,
    trial_overrides,
)
from arvid_ray.sweep.state import TUNE_STATE, _write_sweep_state, check_resume_config, sweep_storage

log = logging.getLogger(__name__)


def tracking_uri(cfg: ExperimentConfig) -> str:
    """Absolute tracking URI (Ray workers change directory, so never a relative sqlite path)."""
    from arvid_ray.tracking import resolve_tracking_uri

    return resolve_tracking_uri(cfg)


def _searcher(cfg: ExperimentConfig, space: DefineByRun):
    """What Tune pickles is plain data: the sampler is built from a spec on first use (searcher.py)."""
    from arvid_ray.searcher import build_searcher

    sw = cfg.sweep
    return build_searcher(space, mode=sw.mode, metric=sw.metric, cost_metric=sw.cost_metric, seed=sw.seed,
                          num_samples=sw.num_samples)


def _scheduler(cfg: ExperimentConfig):
    """ASHA in single mode, on what sweep.prune_on names (``space.asha_target``: eval/val_ce at its step,
    or the quality during training at its checkpoint's step); multi mode has none."""
    if cfg.sweep.mode != "single":
        return None
    from ray.tune.schedulers import ASHAScheduler

    metric, time_attr, grace = asha_target(cfg)
    return ASHAScheduler(  # every metric pruned on is lower-is-better (a loss, a distance, an error)
        metric=metric, mode="min", time_attr=time_attr, max_t=cfg.train.steps,
        grace_period=grace, reduction_factor=2,
    )


def max_concurrent_trials(cfg: ExperimentConfig, types=None) -> int:
    """Trials at once: sweep.max_concurrent_trials, else what the cluster's *declared* node types can host
    (an autoscaling cluster has no GPU until something asks; see arvid_ray.preflight)."""
    from arvid_ray import preflight

    types = types if types is not None else preflight.declared_node_types()
    return preflight.max_concurrent_trials(cfg, types, DRIVER_CPUS)


def _tune_storage_args(cfg: ExperimentConfig, storage: str) -> dict[str, Any]:
    from arvid_ray import storage as st

    if not st.is_remote(storage):
        return {"storage_path": storage}
    filesystem, inner = st.resolve(storage, cfg.storage)
    return {"storage_path": inner, "storage_filesystem": filesystem}


def _progress_reporter(cfg: ExperimentConfig | None = None):
    from ray.tune import CLIReporter

    columns = {"step": "step", "train/loss": "loss", "train/tokens_per_s": "tok/s",
               "train/eta_s": "eta s", "eval/val_ce": "val ce", "cost/gpu_hours": "acc-h"}
    if cfg is not None and cfg.sweep.mode == "single" and cfg.sweep.prune_on == "quality":
        metric, time_attr, _ = asha_target(cfg)  # what ASHA prunes on, and the step it was measured at
        columns.update({metric: metric.split("/", 1)[1], time_attr: "at step"})
    return CLIReporter(
        metric_columns=columns,
        max_report_frequency=30, print_intermediate_tables=True,  # live table at verbose=1 too
    )


def _end_child_runs_callback(uri: str, parent_run_id: str):
    from ray.tune import Callback

    from arvid_ray.tracking.runs import end_trial_runs

    class EndChildRuns(Callback):
        """Terminate each trial's child run: ASHA-stopped trials would otherwise stay RUNNING forever."""

        def _end(self, trial, status: str) -> None:
            try:
                end_trial_runs(uri, parent_run_id, trial.trial_id, status)
            except Exception as exc:  # noqa: BLE001 - a tracking outage must not stop the sweep
                log.warning("could not end the MLflow run of trial %s: %s", trial.trial_id, exc)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._end(trial, "FINISHED")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._end(trial, "FAILED")

    return EndChildRuns()


def _tune_config(cfg: ExperimentConfig, types, rows: list[dict[str, Any]] | None):
    """(TuneConfig, param_space): one trial per row, else the searcher over the config's space."""
    from ray import tune

    if rows is not None:  # a fixed table of configs (reproduce_paper): one trial per row, no searcher
        tune_config = tune.TuneConfig(num_samples=1, max_concurrent_trials=max_concurrent_trials(cfg, types),
                                      time_budget_s=cfg.sweep.time_budget_s or None)
        return tune_config, {ROW_KEY: tune.grid_search(list(range(len(rows))))}
    space = DefineByRun(parse_space(cfg.sweep.search_space, cfg), cfg.sweep.include_baseline,
                        {"objective.kind": "full"})
    tune_config = tune.TuneConfig(
        search_alg=_searcher(cfg, space), scheduler=_scheduler(cfg),
        num_samples=cfg.sweep.num_samples + int(cfg.sweep.include_baseline),
        max_concurrent_trials=max_concurrent_trials(cfg, types),
        time_budget_s=cfg.sweep.time_budget_s or None,
    )
    return tune_config, None


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
    tune_config, param_space = _tune_config(cfg, types, rows)
    run_config = tune.RunConfig(
        name=cfg.sweep.name, **storage_args,
        # a lost trial driver or worker node: retry the trial, resuming its Train run by its stable name
        failure_config=tune.FailureConfig(max_failures=cfg.sweep.max_failures, fail_fast=False),
        callbacks=[_end_child_runs_callback(uri, parent_run_id)],
        progress_reporter=_progress_reporter(cfg), verbose=1,
    )
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config, param_space=param_space), path


def _check_before_launch(cfg: ExperimentConfig, rows: list[dict[str, Any]] | None) -> ExperimentConfig:
    """Every refusal a sweep can meet before its first trial: space, metrics, batch divisibility, the
    cluster's declared node types; returns the config with the sweep's one accelerator pinned."""
    if rows is None:
        check_sweep(cfg)  # fail before any trial starts: space, metrics, batch divisibility
    else:
        check_metrics(cfg)
        for row in rows:  # every row must build a valid config before any trial starts
            check_batch(ExperimentConfig.from_flat(trial_overrides(row), base=cfg))
    from arvid_ray.preflight import check_resources, pin_accelerator

    types = check_resources(cfg)  # the trials' workers fit the cluster's declared node types, before any run
    return pin_accelerator(cfg, types)  # one accelerator per sweep: its type prices cost/usd and tags the runs


def run_sweep(cfg: ExperimentConfig, *, storage_path: str | None = None, restore: bool = True,
              rows: list[dict[str, Any]] | None = None) -> SweepResult:
    """Run (or resume) the sweep described by ``cfg.sweep`` on the connected Ray cluster (connecting
    through ``ray_session`` when the caller has not; ``sweep.startup.start_sweep`` is the entry points' way).

    ``rows``: instead of searching, run this fixed list of dotted-key overrides, one trial each (each row
    may carry ``sweep_role`` naming it, e.g. the ablation row's label).
    """
    from arvid_ray import ray_session
    from arvid_ray import storage as st
    from arvid_ray.tracking import runs

    storage = storage_path or sweep_storage(cfg)
    asked = cfg  # the config as given, saved beside Tune's state for a resume to compare against
    if restore and st.is_file(st.join(storage, cfg.sweep.name, TUNE_STATE), cfg.storage):
        check_resume_config(cfg, storage)  # before Ray: a resume with another config is refused
    ray_session.connect(num_cpus=os.cpu_count() or 1)  # ray.init()'s own default, as before
    cfg = _check_before_launch(cfg, rows)
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
            parent = runs.parent_run(cfg, uri, restore)
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
                runs.fail_open_runs(uri, parent, "KILLED" if interrupted else "FAILED")
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
