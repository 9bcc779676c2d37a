"""The sweep: Ray Tune + Optuna over full training runs, cost versus quality in MLflow.

One module per job, in the order a sweep runs:

- ``startup``  — the one start-up every entry point calls (``arvid-ray sweep``, ``tune_window.py``,
  ``reproduce_paper.py``): storage pinned, pre-flight, ``--resume``, Ray, inputs, refusals = exit 2;
- ``plan``     — ``--dry-run``: the same checks and what would be launched, starting nothing;
- ``state``    — where a sweep lives (Tune storage, ``arvid_sweep.json``) and what ``--resume`` may finish;
- ``space``    — the search space (dotted keys → Optuna define-by-run) and the checks made before launch;
- ``tuner``    — the Tuner (searcher, ASHA, resources, graceful stop) and ``run_sweep``;
- ``driver``   — one trial: a driver function that builds and fits its own TorchTrainer;
- ``results``  — TrialSummary / SweepResult, the report and the printed notes.

The sweep's MLflow runs (parent, children, their ends, UI links) live in ``arvid_ray.tracking.runs``;
the Optuna searcher Tune pickles stays in ``arvid_ray.searcher``. Every name ``arvid_ray.sweep`` had as
one module is re-exported here: Tune state pickled by an interrupted sweep refers to
``arvid_ray.sweep._trial_driver`` and ``arvid_ray.sweep._end_trial_runs``, so old sweeps still resume.
Importing this package imports no Ray, MLflow or Optuna.
"""

from __future__ import annotations

import logging

from arvid_ray.sweep.driver import (
    DRIVER_CPUS,
    ROW_KEY,
    _finished_result,
    _trial_driver,
    check_resumable,
    trial_run_dir,
)
from arvid_ray.sweep.plan import _tracking_refusal, dry_run, print_dry_run
from arvid_ray.sweep.results import (
    INCOMPLETE,
    SweepResult,
    TrialSummary,
    _error_line,
    _log_report,
    _summaries,
    _trial_statuses,
    tracking_lines,
)
from arvid_ray.sweep.space import (
    ROLE_KEY,
    DefineByRun,
    check_batch,
    check_metrics,
    check_sweep,
    pareto_front,
    parse_space,
    trial_overrides,
)
from arvid_ray.sweep.startup import (
    SMOKE_OVERRIDES,
    SweepOutcome,
    SweepStart,
    interruptible,
    prepare_inputs,
    print_result,
    refusals,
    start_sweep,
    sweep_main,
)
from arvid_ray.sweep.state import (
    RESUME_MAY_DIFFER,
    SWEEP_STATE,
    TUNE_STATE,
    _sweep_states,
    _write_sweep_state,
    check_resume_config,
    config_differences,
    fresh_sweep_name,
    interrupted_sweeps,
    names_sweep,
    resume_target,
    sweep_storage,
)
from arvid_ray.sweep.tuner import (
    _end_child_runs_callback,
    _graceful_stop,
    _progress_reporter,
    _scheduler,
    _searcher,
    _tune_storage_args,
    _tuner,
    max_concurrent_trials,
    run_sweep,
    tracking_uri,
)
from arvid_ray.tracking.runs import (
    LOCAL_UI,
    ROLE_TAG,
    RUN_DIR_TAG,
    SWEEP_TAG,
    TRIAL_TAG,
    ui_links,
)
from arvid_ray.tracking.runs import _experiment_id as _experiment_id
from arvid_ray.tracking.runs import child_run as _child_run
from arvid_ray.tracking.runs import client as _client
from arvid_ray.tracking.runs import end_trial_runs as _end_trial_runs
from arvid_ray.tracking.runs import fail_open_runs as _fail_open_runs
from arvid_ray.tracking.runs import parent_run as _parent_run
from arvid_ray.tracking.runs import tag_run as _tag_run

log = logging.getLogger(__name__)

__all__ = [
    # start-up and dry run
    "SweepStart", "SweepOutcome", "start_sweep", "sweep_main", "print_result", "interruptible", "SMOKE_OVERRIDES",
    "prepare_inputs", "refusals", "dry_run", "print_dry_run",
    # where a sweep lives, resume
    "sweep_storage", "fresh_sweep_name", "resume_target", "names_sweep", "interrupted_sweeps", "check_resume_config",
    "config_differences", "SWEEP_STATE", "TUNE_STATE", "RESUME_MAY_DIFFER",
    # tuner, trials, results
    "run_sweep", "max_concurrent_trials", "tracking_uri", "check_resumable", "trial_run_dir", "DRIVER_CPUS",
    "ROW_KEY", "SweepResult", "TrialSummary", "INCOMPLETE", "tracking_lines", "ui_links", "LOCAL_UI",
    "TRIAL_TAG", "SWEEP_TAG", "ROLE_TAG", "RUN_DIR_TAG",
    # the search space (arvid_ray.sweep.space)
    "ROLE_KEY", "DefineByRun", "parse_space", "check_sweep", "check_metrics", "check_batch", "trial_overrides",
    "pareto_front",
    # old single-module names kept for pickled Tune state and existing callers
    "_trial_driver", "_end_trial_runs", "_end_child_runs_callback", "_searcher", "_scheduler", "_tuner",
    "_tune_storage_args", "_progress_reporter", "_graceful_stop", "_summaries", "_trial_statuses", "_error_line",
    "_log_report", "_finished_result", "_tracking_refusal", "_sweep_states", "_write_sweep_state", "_client",
    "_experiment_id", "_child_run", "_parent_run", "_tag_run", "_fail_open_runs",
]
