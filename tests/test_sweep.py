"""End-to-end sweep tests on the shared local Ray against a real MLflow server on 127.0.0.1.

Each trial is a real (tiny) Ray Train run, so these are the slowest tests; they share one smoke sweep.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
import time
from pathlib import Path

import pytest

from arvid_ray.config import load_config
from arvid_ray.search import pareto_front

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))


@pytest.fixture(scope="module")
def smoke_sweep(ray_session, mlflow_server, tmp_path_factory, monkeypatch_module):
    import tune_window

    workdir = tmp_path_factory.mktemp("sweep-work")
    monkeypatch_module.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    t0 = time.time()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = tune_window.main(["--smoke-test", f"experiment.workdir={workdir}", "experiment.name=smoke-e2e"])
    sys.stdout.write(out.getvalue())
    assert rc == 0
    return {"workdir": workdir, "uri": mlflow_server, "seconds": time.time() - t0, "stdout": out.getvalue()}


def test_smoke_sweep_prints_live_trial_table_with_throughput_and_eta(smoke_sweep):
    text = smoke_sweep["stdout"]
    assert "Trial status" in text or "== Status ==" in text, text[-2000:]
    for column in ("tok/s", "eta s", "acc-h"):
        assert column in text, f"column {column!r} missing from the progress table"
    assert f"open {smoke_sweep['uri']}" in text  # the run ends by saying how to open the comparison


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _runs(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id])


def test_smoke_sweep_logs_parent_children_and_pareto(smoke_sweep):
    client, runs = _runs(smoke_sweep["uri"], "smoke-e2e")
    parents = [r for r in runs if r.data.tags.get("arvid.role") == "parent"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) >= 2
    roles = {c.data.tags.get("arvid.role") for c in children}
    assert roles == {"baseline", "search"}
    for child in children:
        assert child.info.status == "FINISHED", child.data.tags
        assert "objective.kind" in child.data.params and "objective.reco_weight" in child.data.params
        assert child.data.metrics["cost/gpu_hours"] > 0
        assert "eval/fd_synthc3d" in child.data.metrics
        assert "train/loss" in child.data.metrics
    searched = [c for c in children if c.data.tags["arvid.role"] == "search"]
    assert all(c.data.params["objective.kind"] in ("local", "fewer_frames") for c in searched)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "report.md" in artifacts
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/pareto.png" in plots


def test_multi_objective_result_is_non_dominated(smoke_sweep):
    from arvid_ray.sweep import SWEEP_TAG

    client, runs = _runs(smoke_sweep["uri"], "smoke-e2e")
    parent = next(r for r in runs if r.data.tags.get("arvid.role") == "parent")
    report = Path(client.download_artifacts(parent.info.run_id, "report.json"))
    data = json.loads(report.read_text())
    points = [(t["metrics"]["eval/fd_synthc3d"], t["metrics"]["cost/gpu_hours"]) for t in data["trials"]]
    ids = [t["trial_id"] for t in data["trials"]]
    assert sorted(data["pareto"]) == sorted(ids[i] for i in pareto_front(points))
    for pid in data["pareto"]:  # no returned point is dominated by any other trial
        p = points[ids.index(pid)]
        assert not any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points)
    assert parent.data.tags[SWEEP_TAG] == data["name"]


def test_failed_trial_is_recorded_and_sweep_completes(ray_session, mlflow_server, tmp_path):
    from arvid_ray.sweep import run_sweep

    cfg = load_config(None, [
        f"experiment.workdir={tmp_path}", "experiment.name=failing-sweep", f"tracking.uri={mlflow_server}",
        "sweep.name=fails", "sweep.include_baseline=false", "sweep.num_samples=2", "sweep.mode=single",
        "data.tokens_path=/nonexistent/unused.parquet",
    ])
    # window 9 > 5 latent frames: every proposal is refused by the config → failed trials, finished sweep
    cfg = cfg.replace(**{"sweep.search_space": {"objective.window_frames": {"type": "choice", "values": [9]}}})
    result = run_sweep(cfg, storage_path=str(tmp_path / "sweeps"), restore=False)
    assert [t.status for t in result.trials] == ["ERROR", "ERROR"]
    assert all("window is larger than the clip" in (t.error or "") for t in result.trials)
    _, runs = _runs(mlflow_server, "failing-sweep")
    children = [r for r in runs if r.data.tags.get("arvid.role") == "search"]
    assert len(children) == 2 and all(r.info.status == "FAILED" for r in children)
    assert all("window is larger" in r.data.tags["arvid.error"] for r in children)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed (.ci/run installs it)")
def test_printed_links_show_every_trial_in_chromium(smoke_sweep, artifacts_dir):
    """The compare-view and chart URLs the sweep printed, opened as printed, show every trial run."""
    import re

    import browser

    client, runs = _runs(smoke_sweep["uri"], "smoke-e2e")
    children = [r for r in runs if r.data.tags.get("arvid.role") in ("baseline", "search")]
    urls = re.findall(r"^\s+(http://\S+)$", smoke_sweep["stdout"], flags=re.M)
    compare = next(u for u in urls if "/#/compare-runs?" in u)
    chart = next(u for u in urls if u.endswith("/artifacts/plots/cost_quality.html"))
    names = [c.info.run_name for c in children]
    texts = browser.evaluate_in_frames(compare, browser.PAGE_TEXT_JS,
                                       lambda v: any(all(n in t for n in names) for t in v), timeout=120)
    assert any(f"Comparing {len(children)} Runs" in t and all(n in t for n in names) for t in texts), texts[-1:]
    ids = {c.data.tags["arvid.trial_id"] for c in children}
    charts = browser.evaluate_in_frames(
        chart, browser.CHART_TRIALS_JS, lambda v: any(isinstance(x, list) and {p["trial"] for p in x} == ids for x in v),
        timeout=120, screenshot=artifacts_dir / "mlflow_cost_quality_chart.png")
    assert any(isinstance(x, list) and {p["trial"] for p in x if p["visible"]} == ids for x in charts), charts
