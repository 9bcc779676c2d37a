"""What a sweep returns: one summary per trial, the best trials, the Pareto front, the exit code.

Design trade-off: the result is plain data (dataclasses of strings and floats) built once from Tune's
ResultGrid, so the report, the entry points' printed lines, ``report.json`` and a table rebuilt later
from MLflow (reproduce_paper ``--table-from-run``) all read the same object, and none of them needs Ray.
A trial counts as complete only with a finite final quality: best/Pareto never come from a trial that
was interrupted or stopped before its final evaluation.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arvid_ray.config import ExperimentConfig
from arvid_ray.sweep.driver import ROW_KEY, trial_run_dir
from arvid_ray.sweep.space import ROLE_KEY, trial_overrides

log = logging.getLogger(__name__)

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
    curves: bool = False  # the trials were evaluated during training (plots/quality_vs_cost.png)
    time_to_target: list[str] = field(default_factory=list)  # its verdict lines, against the baseline trial

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


# ------------------------------------------------------------------------------- from Tune's grid
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


# ------------------------------------------------------------------------------- report and notes
def _log_report(cfg: ExperimentConfig, result: SweepResult) -> None:
    """Write the report (plots, report.md, report.json) under ``<workdir>/reports/<sweep>``, log it to the
    parent run, then end every run of the sweep still open."""
    from arvid_ray.report import sweep_report
    from arvid_ray.tracking import runs

    out = cfg.experiment.workdir_path() / "reports" / cfg.sweep.name
    out.mkdir(parents=True, exist_ok=True)
    files = sweep_report(result, out)
    if cfg.eval.quality_every > 0 and result.tracking_uri and result.parent_run_id:
        try:
            files += _quality_report(result, out)
        except Exception as exc:  # noqa: BLE001 - the curves are extra; the sweep's result stands without them
            log.warning("could not draw the quality-vs-cost curves from MLflow: %s", exc)
    summary = out / "report.json"  # machine-readable twin of report.md (trials, metrics, Pareto ids)
    summary.write_text(json.dumps(dataclasses.asdict(result), indent=1, default=str))
    files.append(summary)
    best = result.best(1)
    metrics = {**({f"best/{result.quality_key}": best[0].metrics[result.quality_key]} if best else {}),
               "sweep/num_failed": result.num_failed, "sweep/num_complete": len(result.complete()),
               "sweep/num_incomplete": sum(t.status == INCOMPLETE for t in result.trials)}
    try:
        runs.log_sweep_summary(result.tracking_uri, result.parent_run_id, files, out, metrics, result.interrupted)
    except Exception as exc:  # noqa: BLE001 - the report is on disk; still end every run below
        log.warning("could not log the sweep report to MLflow (%s); it is in %s", exc, out)
    runs.fail_open_runs(result.tracking_uri, result.parent_run_id, "KILLED" if result.interrupted else "FAILED",
                        include_parent=False)
    runs.end_parent_run(result.tracking_uri, result.parent_run_id, result.run_status)


QUALITY_COST = {"cost/gpu_hours": "quality/cost_gpu_hours", "cost/usd": "quality/cost_usd"}


def _quality_report(result: SweepResult, out: Path) -> list[Path]:
    """Each trial's evaluations during training (from its MLflow run): quality against training cost, and
    the cost at which each first reaches the baseline trial's final quality (``time_to_target.md``)."""
    from arvid_ray.report import time_to_target_report
    from arvid_ray.tracking import runs

    quality_key = "quality/" + result.quality_key.split("/", 1)[-1]
    cost_key = QUALITY_COST.get(result.cost_key, "quality/cost_gpu_hours")
    by_trial = runs.quality_curves(result.tracking_uri, result.parent_run_id, quality_key, cost_key)
    if not by_trial:
        return []
    roles = {t.trial_id: t.role for t in result.trials}
    label = {tid: f"{tid} [{roles.get(tid, 'search')}]" for tid in by_trial}
    base = next((label[tid] for tid in by_trial if roles.get(tid) == "baseline"), None)
    files, lines = time_to_target_report({label[tid]: [pts] for tid, pts in by_trial.items()}, out, baseline=base,
                                         quality_key=quality_key, cost_key=cost_key, title=f"sweep {result.name}")
    result.curves, result.time_to_target = True, lines
    return files


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
