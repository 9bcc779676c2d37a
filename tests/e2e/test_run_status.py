"""Run status is the truth: an interrupted sweep exits 130/143, its MLflow runs end KILLED (none left
RUNNING), and `--resume` finishes it with every trial's final quality and cost, the baseline included.

Real `tune_window.py --smoke-test` processes (2 trials of the debug preset) on the session's Ray, against
the session's real `mlflow server`; the signal goes to the driver process only, as `kill` would send it.
(The SIGINT test's resume is also the suite's restore test: it re-runs only the unfinished trial.)
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
MAX_LOG_LINES_PER_TRIAL = 40  # the tool's lines per trial (was ~1000 with Ray Data's progress lines on)
TUNE_TABLE = ("|", "+", "== Status ==", "Current time:", "Using ", "Logical resource usage", "Result logdir",
              "Number of trials", "Trial name")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, smoke_data):
    return smoke_data(tmp_path_factory.mktemp("run-status"))  # the session's smoke data and token caches


def _sweep(ray, workdir: Path, uri: str, name: str, *extra: str) -> tuple[list[str], dict]:
    args = [sys.executable, str(ROOT / "experiments" / "tune_window.py"), "--smoke-test",
            f"experiment.workdir={workdir}", f"experiment.name={name}", f"sweep.name={name}",
            f"tracking.uri={uri}", *extra]
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}  # one Ray per machine
    return args, env


def _runs(uri: str, experiment: str):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def _wait(condition, proc: subprocess.Popen, what: str, timeout: float = 900) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"the sweep exited (code {proc.returncode}) before {what}"
        assert time.time() < deadline, f"no {what} within {timeout}s"
        time.sleep(1)


def _final_eval_done(workdir: Path) -> bool:
    for path in workdir.rglob("metrics.jsonl"):
        try:
            if '"eval/fd_synthc3d"' in path.read_text():
                return True
        except OSError:
            continue
    return False


def _interrupt(args, env, workdir, condition, sig, log: Path) -> int:
    with open(log, "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            _wait(condition, proc, "the moment to interrupt")
            os.kill(proc.pid, sig)
            return proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.timeout(2400)  # two smoke sweeps (~5 min on an idle 2-core box; far more on a loaded one)
def test_sigint_marks_the_sweep_killed_and_resume_keeps_every_trial(ray_session, mlflow_server, workdir):
    name = "sigint-sweep"
    args, env = _sweep(ray_session, workdir, mlflow_server, name)
    # interrupt right after a trial's final evaluation: the case where a resume used to drop its result
    rc = _interrupt(args, env, workdir, lambda: _final_eval_done(workdir), signal.SIGINT, workdir / "sigint.log")
    log = (workdir / "sigint.log").read_text()
    assert rc == 130, log[-3000:]
    runs = _runs(mlflow_server, name)
    (parent,) = [r for r in runs if r.data.tags.get("arvid.role") == "parent"]
    assert parent.info.status == "KILLED", log[-3000:]
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]

    done = subprocess.run(args + ["--resume"], capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    # its own Ray job, stdout not a terminal: the log reads as what happened (quiet console, issue 17)
    lines = (done.stdout + done.stderr).splitlines()
    assert not [ln for ln in lines if "logging_progress" in ln or "Running Dataset" in ln or "row/s" in ln], lines[-60:]
    assert not [ln for ln in lines if "Found multiple active Ray instances" in ln or "Requesting resources" in ln]
    said = [ln for ln in lines if ln.strip() and not ln.startswith(TUNE_TABLE)]  # Tune's table: the progress
    assert len(said) < MAX_LOG_LINES_PER_TRIAL + 40, "\n".join(said)  # 1 trial + start and summary lines
    runs = _runs(mlflow_server, name)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    (parent,) = [r for r in runs if r.data.tags.get("arvid.role") == "parent"]
    assert parent.info.status == "FINISHED"
    report = json.loads((workdir / "reports" / name / "report.json").read_text())
    assert len(report["trials"]) == 2 and {t["role"] for t in report["trials"]} == {"baseline", "search"}
    for t in report["trials"]:  # every trial with its final quality and cost, none silently left out
        assert t["status"] == "TERMINATED", t
        assert math.isfinite(t["metrics"]["eval/fd_synthc3d"]) and t["metrics"]["cost/gpu_hours"] > 0, t
    assert parent.data.metrics["sweep/num_complete"] == 2 and parent.data.metrics["sweep/num_failed"] == 0


def test_sigterm_marks_the_sweep_killed(ray_session, mlflow_server, workdir):
    name = "sigterm-sweep"
    args, env = _sweep(ray_session, workdir, mlflow_server, name)

    def trial_started() -> bool:
        return any(r.data.tags.get("arvid.trial_id") for r in _runs(mlflow_server, name))

    rc = _interrupt(args, env, workdir, trial_started, signal.SIGTERM, workdir / "sigterm.log")
    log = (workdir / "sigterm.log").read_text()
    assert rc == 143, log[-3000:]
    runs = _runs(mlflow_server, name)
    (parent,) = [r for r in runs if r.data.tags.get("arvid.role") == "parent"]
    assert parent.info.status == "KILLED"
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    assert "INTERRUPTED by SIGTERM" in log or "interrupted by SIGTERM" in log, log[-3000:]


def test_exit_code_and_parent_status_follow_the_trials():
    from arvid_ray.sweep import INCOMPLETE, SweepResult, TrialSummary

    def result(*statuses, interrupted=None):
        trials = [TrialSummary(str(i), "search", s, {}, {"q": 1.0} if s == "TERMINATED" else {})
                  for i, s in enumerate(statuses)]
        return SweepResult("s", "q", "c", trials=trials, interrupted=interrupted)

    failed = result("ERROR", "ERROR")
    assert failed.exit_code() == 1 and failed.run_status == "FAILED" and "2 failed" in failed.headline()
    assert "no trial succeeded" in failed.headline()
    some = result("TERMINATED", "ERROR", INCOMPLETE)
    assert some.exit_code() == 0 and some.run_status == "FINISHED" and [t.trial_id for t in some.best()] == ["0"]
    assert "1 complete, 1 failed, 1 without final quality" in some.headline()
    stopped = result("TERMINATED", interrupted="SIGINT")
    assert stopped.exit_code() == 130 and stopped.run_status == "KILLED" and "--resume" in stopped.headline()
    assert result(interrupted="SIGTERM").exit_code() == 143
