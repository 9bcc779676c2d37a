"""End-to-end sweep tests on the shared local Ray against a real MLflow server on 127.0.0.1.

Each trial is a real (tiny) Ray Train run, so these are the slowest tests; they share one smoke sweep.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arvid_ray.config import ExperimentConfig, load_config
from arvid_ray.search import pareto_front

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))


@pytest.fixture(scope="module")
def smoke_sweep(ray_session, mlflow_server, tmp_path_factory, monkeypatch_module, smoke_data):
    import tune_window

    workdir = smoke_data(tmp_path_factory.mktemp("sweep-work"))  # the session's smoke data and token cache
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
        # evaluated during training (eval.quality_every=6 of 12 steps), with the training cost at each step
        history = {m.step: m.value for m in client.get_metric_history(child.info.run_id, "quality/fd_synthc3d")}
        cost = {m.step: m.value for m in client.get_metric_history(child.info.run_id, "quality/cost_gpu_hours")}
        assert sorted(history) == [6, 12] and sorted(cost) == [6, 12] and 0 < cost[6] < cost[12], child.data.tags
    searched = [c for c in children if c.data.tags["arvid.role"] == "search"]
    assert all(c.data.params["objective.kind"] in ("local", "fewer_frames") for c in searched)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "report.md" in artifacts
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/pareto.png", "plots/quality_vs_cost.png"} <= plots and "time_to_target.md" in artifacts
    assert "Time to the baseline's final quality" in smoke_sweep["stdout"]
    assert "/artifacts/plots/quality_vs_cost.png" in smoke_sweep["stdout"]


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
        "sweep.max_concurrent_trials=2",
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
def test_mlflow_ui_shows_child_runs_in_a_browser(smoke_sweep, artifacts_dir):
    client, runs = _runs(smoke_sweep["uri"], "smoke-e2e")
    exp_id = runs[0].info.experiment_id
    children = [r for r in runs if r.data.tags.get("arvid.role") in ("baseline", "search")]
    shot = artifacts_dir / "mlflow_ui_smoke_sweep.png"
    # the run-comparison view README's three clicks lead to: child runs side by side
    ids = json.dumps([r.info.run_id for r in children]).replace(" ", "")
    url = f"{smoke_sweep['uri']}/#/compare-runs?runs={ids}&experiments=[\"{exp_id}\"]"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={artifacts_dir / 'chromium-profile'}", "--window-size=1600,1000",
             "--virtual-time-budget=20000"]
    dom = subprocess.run(["chromium", *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    subprocess.run(["chromium", *flags, f"--screenshot={shot}", url], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000
    assert f"Comparing {len(children)} Runs" in dom.stdout
    for child in children:
        assert child.info.run_name in dom.stdout, f"run {child.info.run_name} not shown in the MLflow UI"


def _table_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and not line.startswith("| row") and len(cells) > 2:
            rows[cells[0]] = cells[1:]
    return rows


def test_every_ablation_row_is_a_valid_config_and_rows_are_chosen_by_index_or_name():
    """Each row's overrides make a config that passes validation (what running it would check first);
    --rows picks rows in table order and refuses a name that is not a row."""
    import reproduce_paper

    for name, overrides in [*reproduce_paper.ROWS, reproduce_paper.CONTROL]:
        base = load_config(None, [*reproduce_paper.SMOKE, *reproduce_paper.SCALES["cpu"]])
        assert ExperimentConfig.from_flat(overrides, base=base), name
    names = [name for name, _ in reproduce_paper.ROWS]
    assert [n for n, _ in reproduce_paper.select_rows(["+ ReCo (full method)", "0"])] == [names[0], names[-1]]
    assert reproduce_paper.select_rows(None) == reproduce_paper.ROWS
    with pytest.raises(ValueError, match="not a row"):
        reproduce_paper.select_rows(["ReCo"])
    assert reproduce_paper.main(["--smoke-test", "--rows", "7"]) == 2  # before Ray or MLflow


def test_ablation_table_has_numbers_only_for_the_rows_that_ran():
    """The ablation table from finished trials (what the start-up shared with --study cost hands it, tested
    end to end there): rows that ran are numeric, rows not run say so with 0 trials, never filled in; no I3D
    given, no FVD; N and seeds stated."""
    import reproduce_paper

    from arvid_ray.config import load_config
    from arvid_ray.sweep import SweepResult, TrialSummary

    names = [name for name, _ in reproduce_paper.ROWS]
    metrics = {"eval/fd_synthc3d": 120.0, "eval/drift_2x": 130.0, "eval/drift_4x": 131.0, "eval/warp_error": 0.009,
               "eval/val_ce": 2.5, "cost/gpu_hours": 0.01, "eval/fd_recon": 30.0, "eval/fd_floor": 8.0,
               "train/step_time_s": 0.1, "train/peak_mem_gb": 1.0}
    trials = [TrialSummary(trial_id=f"t{i}", role=name, status="TERMINATED", params={},
                           metrics={**metrics, "eval/fd_synthc3d": 120.0 + i})
              for i, name in enumerate((names[0], names[-1]))]
    result = SweepResult(name="t", quality_key="eval/fd_synthc3d", cost_key="cost/gpu_hours", trials=trials)
    cfg = load_config(None, reproduce_paper.SMOKE)
    table = reproduce_paper.build_table(result, [0], cfg, "python experiments/reproduce_paper.py --smoke-test")
    rows = _table_rows(table)
    assert list(rows) == names
    for name, cells in rows.items():
        quality, drift2, warp, val_ce, hours = (cells[0], cells[2], cells[4], cells[5], cells[6])
        if name in (names[0], names[-1]):
            for cell in (quality, drift2, warp, val_ce, hours):
                float(cell.split(" ± ")[0])
            assert cells[-1] == "1"
        else:
            assert quality == "—" and cells[-1] == "0", (name, cells)  # not run: said, never filled in
        assert cells[1] == "—"  # no I3D given: no FVD column value, never a substitute
    assert rows[names[-1]][0] == "121"
    assert "N = 4 generated videos" in table and "seeds = [0]" in table
    assert "What the runs say about the full method" in table


def test_cost_study_smoke_trains_to_one_budget_and_judges_time_to_target(
        ray_session, mlflow_server, tmp_path, monkeypatch, smoke_data):
    """reproduce_paper --study cost: two rows (the suite's sweeps keep to 2 trials) trained to the same cost
    budget, each evaluated during training up to its last step; the study's table, curves and verdict lines
    come from those runs, and the same table is rebuilt from MLflow."""
    import cost_study
    import reproduce_paper
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    out = tmp_path / "results"
    smoke_data(tmp_path / "work")
    common = ["--study", "cost", "--smoke-test", "--out-dir", str(out), "--",
              f"experiment.workdir={tmp_path / 'work'}", "experiment.name=cost-smoke"]
    assert reproduce_paper.main([*common[:5], "--rows", "0", "2", *common[5:]]) == 0
    (table_path,) = out.glob("time_to_quality_smoke_*.md")
    assert table_path.with_suffix(".png").stat().st_size > 10_000  # the curves
    table = table_path.read_text()
    rows = _table_rows(table)
    assert list(rows) == [name for name, _ in cost_study.ROWS]
    budget, cap = 0.001, 24
    assert f"**{budget:g} accelerator-hours per trial**" in table
    for name in (cost_study.BASELINE, cost_study.FULL):
        steps, spent, stopped = rows[name][0], float(rows[name][1]), rows[name][2]
        assert rows[name][-1] == "1"
        # stopped where the budget ran out, or at the cap when the machine was fast enough
        assert (stopped == "1 of 1" and spent >= budget) or (stopped == "0 of 1" and steps == str(cap)), rows[name]
    assert rows[cost_study.FEWER][0] == "—" and rows[cost_study.FEWER][-1] == "0"  # not run: said, not filled
    for tag in ("- (0) regime", "- (1) + ReCo (full method) at the baseline's budget", "- (2) Fewer-Frames: not run"):
        assert tag in table, tag
    assert "RATIO full_method_steps_over_baseline" in table

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("cost-smoke")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("arvid.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("arvid.role") != "parent"]
    assert len(children) == 2
    for child in children:
        quality = client.get_metric_history(child.info.run_id, "quality/fd_synthc3d")
        cost = {m.step: m.value for m in client.get_metric_history(child.info.run_id, "quality/cost_gpu_hours")}
        last = max(m.step for m in client.get_metric_history(child.info.run_id, "cost/gpu_hours"))  # its last step
        assert quality and max(m.step for m in quality) == last  # evaluated at its last step too
        assert all(m.step in cost for m in quality)
        assert child.data.metrics["cost/gpu_hours"] >= cost[last] > 0  # cost at the checkpoint, not after

    rebuilt = tmp_path / "rebuilt"
    assert reproduce_paper.main(["--study", "cost", "--smoke-test", "--out-dir", str(rebuilt), "--table-from-run",
                                 parent.info.run_id, "--", f"experiment.workdir={tmp_path / 'work'}"]) == 0
    (again,) = rebuilt.glob("time_to_quality_smoke_*.md")
    assert _table_rows(again.read_text()) == rows


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


def test_the_table_reads_the_control_from_the_baseline_trials_own_shuffled_evaluation():
    """The broken control is not a trial: its numbers are the baseline trials' control/<metric>, judged against
    their eval/<metric> with the seed spread, and verdict (0) says 'discriminates' only when both bars are met."""
    import reproduce_paper

    from arvid_ray.sweep import SweepResult, TrialSummary

    base, fd = reproduce_paper.ROWS[0][0], reproduce_paper.COLUMNS[0][1]
    assert reproduce_paper.ROWS[0][1]["eval.shuffled_control"] is True

    def trials(fds, controls, recon):
        return [TrialSummary(trial_id=f"t{i}", role=base, status="TERMINATED", params={},
                             metrics={fd: f, "control/fd_synthc3d": c, "eval/fd_recon": recon,
                                      "eval/traj_error_seg4": 20.0 + i, "control/traj_error_seg4": 30.0 + i})
                for i, (f, c) in enumerate(zip(fds, controls))]

    result = SweepResult(name="t", quality_key=fd, cost_key="cost/gpu_hours",
                         trials=trials([60.0, 62.0, 64.0], [140.0, 138.0, 142.0], 25.0))
    _, metric = reproduce_paper._metric_fn(result)
    assert metric(reproduce_paper.CONTROL[0], fd) == [140.0, 138.0, 142.0]
    assert metric(reproduce_paper.CONTROL[0], "fd_over_recon") == [140.0 / 25, 138.0 / 25, 142.0 / 25]
    assert metric(base, fd) == [60.0, 62.0, 64.0]
    lines = reproduce_paper.control_lines(metric)
    assert any("on FD: 140 vs baseline 62" in ln for ln in lines) and any("seg 4: 31 vs baseline 21" in ln for ln in lines)
    (zero,) = [ln for ln in reproduce_paper.paper_verdicts(metric) if ln.startswith("- (0)")]
    assert "2.48× fd_recon (bar ≤ 3×: met)" in zero and "the measure discriminates here." in zero

    far = SweepResult(name="t", quality_key=fd, cost_key="cost/gpu_hours",
                      trials=trials([90.0, 95.0, 100.0], [140.0, 138.0, 142.0], 25.0))
    (zero,) = [ln for ln in reproduce_paper.paper_verdicts(reproduce_paper._metric_fn(far)[1]) if ln.startswith("- (0)")]
    assert "3.80× fd_recon (bar ≤ 3×: not met)" in zero and "does not discriminate" in zero
