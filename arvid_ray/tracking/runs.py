"""The sweep's MLflow runs: one parent run per sweep, one child run per trial, and their ends.

Design trade-off: the sweep driver, not the trial's workers, creates every run of a sweep (the parent
when the sweep starts, each trial's child when its trial driver starts), so a trial that fails before
its first step or is stopped by ASHA still has a run, and something outside the trial (a Tune callback,
the sweep's own end) can end it; the workers only log into the child run by id. Runs are found again by
tags (``arvid.sweep``, ``arvid.trial_id``, ``mlflow.parentRunId``), never by name, so a retried or
restored trial keeps its run. Every call takes the tracking URI and uses an explicit ``MlflowClient``
(no global active run); calls that only tidy up never raise into the sweep.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from arvid_ray.config import ExperimentConfig

__all__ = ["TRIAL_TAG", "SWEEP_TAG", "ROLE_TAG", "RUN_DIR_TAG", "LOCAL_UI", "client", "parent_run", "child_run",
           "fail_run", "finish_run", "tag_run", "final_metrics", "end_trial_runs", "fail_open_runs",
           "log_sweep_summary", "end_parent_run", "ui_links", "child_runs", "log_table", "quality_curves"]

log = logging.getLogger(__name__)

TRIAL_TAG = "arvid.trial_id"
SWEEP_TAG = "arvid.sweep"
ROLE_TAG = "arvid.role"
RUN_DIR_TAG = "arvid.run_dir"  # where a trial's metrics.jsonl/tracking.json live (replayed at trial end)
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local (sqlite / file) store


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment_id(mlflow_client, name: str) -> str:
    from arvid_ray.tracking.server import experiment_id  # tolerates another process creating it first

    return experiment_id(mlflow_client, name)


def _children_filter(parent_run_id: str, trial_id: str | None = None) -> str:
    own = f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    return own if trial_id is None else f"tags.`{TRIAL_TAG}` = '{trial_id}' and {own}"


# ----------------------------------------------------------------------------------- the parent run
def parent_run(cfg: ExperimentConfig, uri: str, restore: bool) -> str:
    """The sweep's parent run: found again (and RUNNING again) on a restore, else created with the
    config's hyper-parameters as params and its bookkeeping as tags."""
    c = client(uri)
    exp_id = _experiment_id(c, cfg.experiment.name)
    if restore:
        found = c.search_runs([exp_id], filter_string=(
            f"tags.`{SWEEP_TAG}` = '{cfg.sweep.name}' and tags.`{ROLE_TAG}` = 'parent'"),
            order_by=["attributes.start_time DESC"], max_results=1)
        if found:
            c.update_run(found[0].info.run_id, status="RUNNING")  # resumed: running again until it ends
            return found[0].info.run_id
    from arvid_ray.tracking.server import config_params

    params, tags = config_params(cfg)  # hyper-parameters as params, bookkeeping as tags, no credentials
    run = c.create_run(exp_id, run_name=cfg.sweep.name,
                       tags={**tags, SWEEP_TAG: cfg.sweep.name, ROLE_TAG: "parent"})
    for key, value in params.items():
        c.log_param(run.info.run_id, key, value)
    return run.info.run_id


def log_sweep_summary(uri: str, parent_run_id: str, files: Sequence[Path], root: Path,
                      metrics: Mapping[str, float], interrupted: str | None = None) -> None:
    """Log the sweep's report files (paths under ``root`` keep their folder), its summary metrics and,
    when a signal stopped it, the ``arvid.interrupted`` tag on the parent run. Raises on a tracking outage."""
    c = client(uri)
    for path in files:
        sub = path.parent.relative_to(root).as_posix()
        c.log_artifact(parent_run_id, str(path), artifact_path=None if sub == "." else sub)
    for key, value in metrics.items():
        c.log_metric(parent_run_id, key, value)
    if interrupted:
        c.set_tag(parent_run_id, "arvid.interrupted", interrupted)


def end_parent_run(uri: str, parent_run_id: str, status: str) -> None:
    try:
        client(uri).set_terminated(parent_run_id, status=status)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not end the sweep's parent run %s: %s", parent_run_id, exc)


def fail_open_runs(uri: str, parent_run_id: str, status: str = "FAILED", include_parent: bool = True) -> None:
    """End every run of the sweep still RUNNING (its children, and the parent) with ``status``."""
    try:
        c = client(uri)
        exp_id = c.get_run(parent_run_id).info.experiment_id
        children = c.search_runs([exp_id], filter_string=_children_filter(parent_run_id))
        for run in [*children, *([c.get_run(parent_run_id)] if include_parent else [])]:
            if run.info.status == "RUNNING":
                c.set_terminated(run.info.run_id, status=status)
    except Exception as exc:  # noqa: BLE001 - do not hide the sweep's own error behind a tracking one
        log.warning("could not end the sweep's open MLflow runs as %s: %s", status, exc)


# ----------------------------------------------------------------------------------- a trial's run
def child_run(uri: str, experiment: str, parent_id: str, sweep: str, trial_id: str, role: str) -> str:
    """Find (after a retry or restore) or create the child run of one trial."""
    c = client(uri)
    exp_id = _experiment_id(c, experiment)
    found = c.search_runs([exp_id], filter_string=_children_filter(parent_id, trial_id))
    if found:
        return found[0].info.run_id
    run = c.create_run(
        exp_id,
        run_name=f"{sweep}-{trial_id}",
        tags={"mlflow.parentRunId": parent_id, TRIAL_TAG: trial_id, SWEEP_TAG: sweep, ROLE_TAG: role},
    )
    return run.info.run_id


def fail_run(uri: str, run_id: str, error: str) -> None:
    """A trial refused before training (its config is invalid): the error as a tag, the run FAILED."""
    c = client(uri)
    c.set_tag(run_id, "arvid.error", error[:4000])
    c.set_terminated(run_id, status="FAILED")


def finish_run(uri: str, run_id: str) -> None:
    """Mark a run FINISHED (a trial that had finished before an interrupted sweep marked it KILLED)."""
    with contextlib.suppress(Exception):
        client(uri).set_terminated(run_id, status="FINISHED")


def tag_run(uri: str, run_id: str, tags: Mapping[str, str]) -> None:
    try:
        c = client(uri)
        for k, v in tags.items():
            c.set_tag(run_id, k, v)
    except Exception as exc:  # noqa: BLE001 - tracking must not fail a trial
        log.warning("could not tag MLflow run %s: %s", run_id, exc)


def final_metrics(uri: str, run_id: str, key: str, steps: int) -> dict[str, Any] | None:
    """The run's metrics when ``key`` was logged at step ``steps`` or later, or the run stopped at its
    training budget (train/budget_stop) and ``key`` was logged (its final evaluation ran), else None; None
    too when the tracking server is away (train again rather than guess)."""
    try:
        c = client(uri)
        history = c.get_metric_history(run_id, key)
        if any(m.step >= steps for m in history):
            return {**c.get_run(run_id).data.metrics, "step": float(steps)}
        metrics = c.get_run(run_id).data.metrics if history else {}
        if metrics.get("train/budget_stop", 0) > 0:
            return {**metrics, "step": float(max(m.step for m in history))}
    except Exception as exc:  # noqa: BLE001
        log.warning("could not read run %s from MLflow (%s)", run_id, exc)
    return None


def end_trial_runs(uri: str, parent_run_id: str, trial_id: str, status: str) -> None:
    """Replay what the trial's run directory holds and MLflow lacks (its worker may have been stopped
    before its shipper caught up), then end the trial's runs that are still RUNNING."""
    from arvid_ray.tracking.journal import JOURNAL_FILE, sync_run

    c = client(uri)
    runs = c.search_runs([c.get_run(parent_run_id).info.experiment_id],
                         filter_string=_children_filter(parent_run_id, trial_id))
    for run in runs:
        run_dir = run.data.tags.get(RUN_DIR_TAG)
        if run_dir and (Path(run_dir) / JOURNAL_FILE).exists():
            sync_run(run_dir, uri)
        if c.get_run(run.info.run_id).info.status == "RUNNING":
            c.set_terminated(run.info.run_id, status=status)


# ----------------------------------------------------------------------------------- reading back
def ui_links(result: Any, ui_url: str | None = None) -> dict[str, str]:
    """Browser links into the MLflow UI for a sweep (``result`` needs ``tracking_uri`` and
    ``parent_run_id``): ``compare`` (MLflow's compare view with every trial run selected), ``pareto``
    (the parent run's plots/pareto.png), ``chart`` (its interactive plots/cost_quality.html) and, when
    the trials were evaluated during training, ``quality`` (plots/quality_vs_cost.png: each trial's
    quality against its training cost, with the time to the baseline's quality).
    ``ui_url``: where the UI is served (default: the tracking server, or LOCAL_UI for a local store).
    URL formats are MLflow 3's hash routes (``/#/compare-runs?runs=[...]``)."""
    from urllib.parse import quote

    from arvid_ray.tracking.server import mask_uri

    uri = result.tracking_uri or ""
    base = mask_uri(ui_url or (uri if uri.startswith(("http://", "https://")) else LOCAL_UI)).rstrip("/")
    c = client(uri)
    exp_id = c.get_run(result.parent_run_id).info.experiment_id
    children = c.search_runs([exp_id], filter_string=_children_filter(result.parent_run_id),
                             max_results=1000, order_by=["attributes.start_time ASC"])

    def as_json(value: list[str]) -> str:
        return quote(json.dumps(value, separators=(",", ":")), safe=",")

    run_page = f"{base}/#/experiments/{exp_id}/runs/{result.parent_run_id}"
    links = {"pareto": f"{run_page}/artifacts/plots/pareto.png",
             "chart": f"{run_page}/artifacts/plots/cost_quality.html"}
    if getattr(result, "curves", False):  # evaluations during training: quality against training cost
        links["quality"] = f"{run_page}/artifacts/plots/quality_vs_cost.png"
    if children:
        ids = [r.info.run_id for r in children]
        links = {"compare": f"{base}/#/compare-runs?runs={as_json(ids)}&experiments={as_json([exp_id])}", **links}
    return links


def quality_curves(uri: str, parent_run_id: str, quality_key: str, cost_key: str) -> dict[str, list[tuple[float, float]]]:
    """Per trial id, its evaluations during training as (training cost, quality) in step order: the
    metric histories ``quality_key`` and ``cost_key`` of each child run, paired by step. Trials without
    any evaluation are left out."""
    c = client(uri)
    parent = c.get_run(parent_run_id)
    out = {}
    for run in c.search_runs([parent.info.experiment_id], filter_string=_children_filter(parent_run_id),
                             max_results=1000):
        quality = {m.step: m.value for m in c.get_metric_history(run.info.run_id, quality_key)}
        cost = {m.step: m.value for m in c.get_metric_history(run.info.run_id, cost_key)}
        points = [(cost[s], quality[s]) for s in sorted(quality) if s in cost]
        if points:
            out[run.data.tags.get(TRIAL_TAG, run.info.run_id)] = points
    return out


def child_runs(uri: str, parent_run_id: str):
    """(parent run, its child runs) as MLflow returns them: what a finished sweep's table is rebuilt from."""
    c = client(uri)
    parent = c.get_run(parent_run_id)
    return parent, c.search_runs([parent.info.experiment_id], filter_string=_children_filter(parent_run_id))


def log_table(uri: str, parent_run_id: str, path: Path, command: str, plot: Path | None = None) -> None:
    """Attach a results table (and its plot) to the sweep's parent run, with the command that made it."""
    c = client(uri)
    c.set_tag(parent_run_id, "arvid.command", command)
    c.log_artifact(parent_run_id, str(path))
    if plot is not None:
        c.log_artifact(parent_run_id, str(plot), "plots")
