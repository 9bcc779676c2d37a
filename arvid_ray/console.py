"""The console: what a researcher sees while a job runs — the tool's own lines, not the frameworks'.

Design trade-off: Ray and its libraries log from many processes (Ray Data's executor and progress
manager, Ray Train's controller and workers, MLflow's system-metrics thread, matplotlib's font cache),
and when stdout is not a terminal Ray Data turns its progress bars into INFO lines every 10 s. That is
the right detail when something is wrong and noise otherwise. Instead of filtering text afterwards, this
module turns those knobs at their source: Python logger levels of the framework modules that talk, and
Ray Data's progress-bar switch — in the driver (``setup``) and, through the Ray job's
``worker_process_setup_hook``, in every worker process of the job on every node (``worker_setup``; ``setup``
installs it into every later ``ray.init`` of the process through Ray's RAY_RUNTIME_ENV_HOOK).
Quiet is the default; ``--verbose`` (or ``experiment.verbose``) leaves every framework line on. Nothing
is hidden at WARNING or above; a quiet run records less in Ray's own session log files (the INFO lines
named below are not emitted at all), which is why ``--verbose`` exists.

What stays: arvid_ray's own INFO lines (one progress bar or line per stage), every warning and error,
and Tune's trial table. Ray's C++ core writes two known-harmless lines straight to stderr, where no
Python setting reaches; ``HARMLESS_RAY_LINES`` explains them and the driver prints the explanation once.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import warnings
from typing import Any

__all__ = ["setup", "worker_setup", "runtime_env", "job_runtime_env", "VERBOSE_ENV", "QUIET_LOGGERS",
           "QUIET_TRAIN_LOGGERS", "HARMLESS_RAY_LINES"]

VERBOSE_ENV = "ARVID_VERBOSE"  # "1": every framework line; carried to Ray workers in the job's env_vars
HOOK = "arvid_ray.console.worker_setup"

# logger → level in quiet mode: each entry is a module whose INFO lines repeat per operator, per report or
# per run and say nothing the tool's own lines do not (Ray Data progress, MLflow's system-metrics monitor
# and "View run" links, matplotlib's font cache)
QUIET_LOGGERS = {
    "ray.data._internal.progress": logging.ERROR,  # progress lines + "progress bars disabled/logged" notices
    "ray.data._internal.execution.streaming_executor": logging.WARNING,  # "Starting execution", plans, "finished"
    "ray.data.dataset": logging.WARNING,  # "Data sink Parquet finished"
    "mlflow": logging.WARNING,
    "matplotlib": logging.WARNING,  # "generated new fontManager"
}
# Ray Train's modules get a filter instead of a level: Train's logging set-up (dictConfig of "ray.train")
# resets the levels of every "ray.train.*" logger, but keeps their filters. Names are the emitting modules;
# context.py logs under its file path ("Reporting training result N: ..." once per report).
QUIET_TRAIN_LOGGERS = (
    "ray.train.v2._internal.execution.scaling_policy.scaling_policy",  # "Requesting resources"
    "ray.train.v2._internal.execution.worker_group.worker_group",  # "Started training worker group", ranks
    "ray.train.torch.config",  # "Setting up process group"
    "ray.train.v2.torch.train_loop_utils",  # "Moving model to device"
    "ray.train.v2._internal.execution.storage", "ray.train._internal.storage",  # "Checkpoint successfully created"
)
_TRAIN_PATH_LOGGERS = ("train/v2/_internal/execution/context.py",)
# deprecation warnings raised inside Ray's own code (not ours, nothing a user can change)
_RAY_INTERNAL_WARNINGS = (r".*ExecutionOptions\.exclude_resources.*",)


class _BelowWarning(logging.Filter):
    """Drops a logger's own INFO/DEBUG records; warnings and errors pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


HARMLESS_RAY_LINES = (
    "Ray's core may print 'core_worker.cc … has constructor arguments in the object store and "
    "max_restarts > 0' (a warning that such an actor could not be restarted after a node failure; Ray "
    "Data's decode/tokenize pools and Ray Train's PreemptionWatcher keep their arguments referenced while "
    "they run) and, after training, 'gcs_server … Failed to kill actor … Socket closed' (the actor's "
    "worker had already exited): neither is an error of this run."
)


def verbose_from_env() -> bool:
    return os.environ.get(VERBOSE_ENV, "0") == "1"


def setup(verbose: bool = False, *, level: int = logging.INFO) -> None:
    """Configure the driver's console: our INFO lines with a short format, frameworks quiet unless
    ``verbose``. Call before Ray starts (Ray Data reads its progress switch when first imported)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    # every later ray.init in this process (launch, evaluate, sweep, a submitted job) adds the hook below
    os.environ.setdefault("RAY_RUNTIME_ENV_HOOK", f"{__name__}.job_runtime_env")
    _apply(verbose)
    if not verbose and importlib.util.find_spec("optuna") is not None:
        import optuna  # its library logger resets its level on first use; set_verbosity is the way

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in memory"
    if not verbose:
        logging.getLogger(__name__).info("quiet console (pass --verbose for Ray's own progress and INFO lines). %s",
                                         HARMLESS_RAY_LINES)


def runtime_env(verbose: bool = False, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Ray job runtime env that applies the same console settings in every worker process."""
    env = dict(base or {})
    env_vars = {**env.get("env_vars", {}), VERBOSE_ENV: "1" if verbose else "0"}
    if not verbose:
        env_vars["RAY_DATA_DISABLE_PROGRESS_BARS"] = "1"  # read when ray.data is imported in each worker
    env["env_vars"] = env_vars
    env.setdefault("worker_process_setup_hook", HOOK)
    return env


def job_runtime_env(base: dict[str, Any] | None) -> dict[str, Any]:
    """Ray's RAY_RUNTIME_ENV_HOOK (set by ``setup``): ray.init's runtime env plus the console settings."""
    return runtime_env(verbose_from_env(), base)


def worker_setup() -> None:
    """Ray ``worker_process_setup_hook``: the console settings in a worker process (runs at its start,
    after it joined the cluster; an exception here would end the worker, so none escapes)."""
    try:
        _apply(verbose_from_env())
        _pin_ray_address()
    except Exception as exc:  # noqa: BLE001 - a quiet console is never worth a worker
        logging.getLogger(__name__).warning("console settings not applied in this worker: %s", exc)


def _pin_ray_address() -> None:
    """RAY_ADDRESS = this worker's own cluster. Ray Train's PlacementGroupCleaner asks the state API for
    "the" cluster and, when one machine runs two Ray instances (a dev cluster and a test run), dies with a
    'Found multiple active Ray instances' traceback in the log unless the address is named."""
    if os.environ.get("RAY_ADDRESS"):
        return
    import ray

    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address


def _apply(verbose: bool) -> None:
    if verbose:
        return
    os.environ["RAY_DATA_DISABLE_PROGRESS_BARS"] = "1"
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # mlflow re-configures its loggers on import
    context = sys.modules.get("ray.data.context")
    if context is not None:  # already imported: its default was read before the variable was set
        context.DataContext.get_current().enable_progress_bars = False
    for name, lvl in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(lvl)
    names = list(QUIET_TRAIN_LOGGERS)
    spec = importlib.util.find_spec("ray")  # a top-level spec: locates Ray without importing it
    if spec is not None and spec.origin:
        names += [os.path.join(os.path.dirname(spec.origin), rel) for rel in _TRAIN_PATH_LOGGERS]
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _BelowWarning) for f in logger.filters):
            logger.addFilter(_BelowWarning())
    for pattern in _RAY_INTERNAL_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
