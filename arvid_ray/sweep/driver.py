"""One Tune trial: a driver function that builds and fits its own TorchTrainer.

Design trade-off (Ray 2.60 Train V2): a Tune trial is a *driver function*, not a Trainer handed to the
Tuner; workers report through Ray's ``TuneReportCallback``. All end-of-trial work (final evaluation)
therefore happens on rank 0 before the last report — code after ``fit()`` may never run when ASHA
stops a trial. The driver creates (or finds again) the trial's MLflow child run before training, so a
failed or stopped trial still has a run, and the workers log into it by id. A trial restored after its
last step reports its recorded final result again instead of training twice.

Tune's pickled state of an interrupted sweep refers to this function as ``arvid_ray.sweep._trial_driver``
(its home before the sweep became a package); ``arvid_ray.sweep`` re-exports it under that name.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from arvid_ray.config import ConfigError, ExperimentConfig
from arvid_ray.sweep.space import ROLE_KEY, trial_overrides

log = logging.getLogger(__name__)

ROW_KEY = "row"  # trial param of fixed-row runs: index into the rows table
DRIVER_CPUS = 0.25  # the driver function only waits on its TorchTrainer


def _trial_driver(params: dict[str, Any], *, base: dict[str, Any], parent_run_id: str, uri: str,
                  rows: list[dict[str, Any]] | None = None) -> None:
    """One Tune trial = one Ray Train run of the trial's config (a searched point or a fixed row)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from arvid_ray.launch import build_trainer
    from arvid_ray.tracking import runs

    trial_id = tune.get_context().get_trial_id()
    base_cfg = ExperimentConfig.from_dict(base)
    if rows is not None:
        params = dict(rows[params[ROW_KEY]])
    role = params.get(ROLE_KEY, "search")
    run_id = runs.child_run(uri, base_cfg.experiment.name, parent_run_id, base_cfg.sweep.name, trial_id, role)
    try:
        cfg = ExperimentConfig.from_flat(trial_overrides(params), base=base_cfg)
    except ConfigError as exc:  # a proposal the config refuses: a failed trial, not a failed sweep
        runs.fail_run(uri, run_id, str(exc))
        raise
    cfg = cfg.replace(**{
        "tracking.uri": uri, "tracking.run_id": run_id, "tracking.parent_run_id": parent_run_id,
        "train.run_name": f"{cfg.sweep.name}-{trial_id}", "train.final_eval": True,
    })
    run_dir = trial_run_dir(cfg)
    runs.tag_run(uri, run_id, {runs.RUN_DIR_TAG: str(run_dir)})
    done = _finished_result(cfg, run_dir, uri, run_id)
    if done is not None:  # restored after its last step: keep its final evaluation, do not re-train
        log.info("trial %s already finished step %d; reporting its final result again", trial_id, cfg.train.steps)
        runs.finish_run(uri, run_id)  # it did finish (an interrupted sweep had marked it KILLED)
        tune.report(done)
        return
    check_resumable(cfg)  # a refused checkpoint fails the trial at once (no Ray Train restarts)
    build_trainer(cfg, callbacks=[TuneReportCallback()]).fit()


def trial_run_dir(cfg: ExperimentConfig) -> Path:
    """The run directory (metrics.jsonl, tracking.json) of the training run ``cfg`` launches."""
    from arvid_ray.runs import local_run_dir, resolve_for_workers

    return local_run_dir(resolve_for_workers(cfg))


def check_resumable(cfg: ExperimentConfig) -> None:
    """Raise CheckpointError when the checkpoint this run would resume from cannot be loaded (refused by
    the weights-only check, corrupt, or of another shape): a deterministic refusal a retry cannot fix."""
    from arvid_ray import storage as st
    from arvid_ray.runs import resolve_for_workers, train_storage
    from arvid_ray.train import checkpoint as ckpt

    cfg = resolve_for_workers(cfg)
    root = train_storage(cfg)
    if st.is_remote(root):
        return  # remote storage: the worker's own load refuses it
    for where in (Path(root) / cfg.train.run_name, trial_run_dir(cfg) / "checkpoints"):
        latest = ckpt.latest_checkpoint(where)
        if latest is not None:
            ckpt.load_checkpoint(latest, cfg)


def _finished_result(cfg: ExperimentConfig, run_dir: Path, uri: str, run_id: str) -> dict[str, Any] | None:
    """The final result (quality and cost) of a run that already passed its last step: from its
    metrics.jsonl, else from its MLflow run; None when it still has to train or evaluate."""
    from arvid_ray.tracking import read_metrics_jsonl, runs

    steps, key = cfg.train.steps, cfg.sweep.metric
    try:
        last = [r for r in read_metrics_jsonl(run_dir)
                if (r.get("step", 0) >= steps or r.get("train/budget_stop", 0) > 0) and key in r]
    except (OSError, ValueError):
        last = []
    if last:
        return {k: v for k, v in last[-1].items() if k != "time"}
    return runs.final_metrics(uri, run_id, key, steps)
