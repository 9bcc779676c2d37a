"""What a researcher sees: the console, the validation split, params/tags, and the one-click MLflow views.

The browser tests drive real Debian Chromium (headless, DevTools protocol) against a real `mlflow server`
on 127.0.0.1; the sweep here is written straight into MLflow (no training) so the test stays cheap —
test_sweep.py opens the links a real smoke sweep printed.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import browser
import pytest
from ui_shared import _DRIVER, ROOT

from arvid_ray.config import ExperimentConfig, load_config


@pytest.mark.ray
def test_ray_data_progress_is_off_by_default_and_back_with_verbose(ray_session, tmp_path):
    """stdout to a file (not a TTY): no Ray Data progress lines unless verbose, in the driver and in workers."""
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER % str(ROOT))
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address,
           "RAY_DATA_NON_TTY_PROGRESS_LOG_INTERVAL": "1"}
    env.pop("RAY_DATA_DISABLE_PROGRESS_BARS", None)
    logs = {}
    for verbose in ("0", "1"):
        out = tmp_path / f"log-{verbose}.txt"
        with open(out, "w") as fh:
            done = subprocess.run([sys.executable, str(script), verbose], stdout=fh, stderr=subprocess.STDOUT,
                                  env=env, timeout=300)
        logs[verbose] = out.read_text()
        assert done.returncode == 0, logs[verbose][-3000:]
        # the hook ran in the worker (Ray's own progress output may interleave with the line: whitespace-tolerant)
        assert re.search(r"count, address pinned\s+64\s+True", logs[verbose]), logs[verbose][-3000:]
    progress = ("logging_progress", "Running Dataset", "Starting execution of Dataset", "row/s")
    assert not [ln for ln in logs["0"].splitlines() if any(p in ln for p in progress)], logs["0"][-3000:]
    assert "quiet console" in logs["0"] and "max_restarts > 0" in logs["0"]  # the harmless lines, explained once
    assert sum(any(p in ln for p in progress) for ln in logs["1"].splitlines()) >= 2, logs["1"][-3000:]


@pytest.mark.ray
def test_folder_ingest_writes_a_val_split_and_training_logs_a_finite_val_ce(ray_session, tmp_path, capsys):
    import pyarrow.parquet as pq
    from video_fixtures import make_video, need_ffmpeg

    from arvid_ray.cli import main
    from arvid_ray.ingest import ingest
    from arvid_ray.tracking import read_metrics_jsonl

    need_ffmpeg()
    src = tmp_path / "footage"
    for cls, case in (("juggling", "h264_mp4"), ("surfing", "mpeg4_avi")):
        (src / cls).mkdir(parents=True)
        for i in range(2):
            make_video(src / cls / f"{cls}{i}.{case.split('_')[1]}", case, seconds=1.2)
    summary = ingest(src, tmp_path / "ingested", ExperimentConfig.from_flat({"data.decode_cpus": 0.5}))
    splits = pq.read_table(tmp_path / "ingested" / "videos.parquet", columns=["split"]).column("split").to_pylist()
    assert "val" in splits and "train" in splits
    assert summary.splits == {"train": splits.count("train"), "val": splits.count("val")}
    assert "val by hash, ingest.val_fraction=0.05" in summary.format()
    assert main(["train", "train.num_workers=0", f"experiment.workdir={tmp_path / 'work'}",
                 f"data.source={tmp_path / 'ingested'}", "data.num_frames=9", "data.resolution=32",
                 "tokenizer.name=fsq", "data.batch_size=2", "train.global_batch_size=2", "train.steps=2",
                 "train.val_batches=1", "tracking.enabled=false", "train.run_name=folder"]) == 0
    metrics = read_metrics_jsonl(tmp_path / "work" / "runs" / "folder")
    assert math.isfinite(metrics[-1]["eval/val_ce"]), metrics


# ------------------------------------------------------------------------------- MLflow in Chromium
def _fake_sweep(uri: str, workdir: Path):
    """A finished 3-trial sweep written straight into MLflow through the sweep's own run helpers."""
    from arvid_ray import sweep as sw

    cfg = load_config(None, [f"experiment.workdir={workdir}", "experiment.name=ui-e2e", f"tracking.uri={uri}",
                             "sweep.name=uisweep", "eval.quality_every=100"])
    parent = sw._parent_run(cfg, uri, restore=False)
    client = sw._client(uri)
    trials = []
    # evaluations during training at steps 100..400: (training cost, quality) as the workers log them
    curves = {"aaaa0001": [(0.0025, 60.0), (0.005, 45.0), (0.0075, 36.0), (0.010, 30.0)],  # target: 30
              "bbbb0002": [(0.001, 50.0), (0.002, 35.0), (0.003, 28.0), (0.004, 24.0)],  # reaches it at 0.0027
              "cccc0003": [(0.0015, 55.0), (0.003, 42.0), (0.0045, 35.0), (0.006, 31.0)]}  # never
    for tid, role, q, c, params in (("aaaa0001", "baseline", 30.0, 0.010, {"objective.kind": "full"}),
                                    ("bbbb0002", "search", 24.0, 0.004, {"objective.kind": "local"}),
                                    ("cccc0003", "search", 27.0, 0.006, {"objective.kind": "fewer_frames"})):
        run = sw._child_run(uri, cfg.experiment.name, parent, cfg.sweep.name, tid, role)
        client.log_metric(run, "eval/fd_synthc3d", q)
        client.log_metric(run, "cost/gpu_hours", c)
        for k, (cost, quality) in enumerate(curves[tid], start=1):
            client.log_metric(run, "quality/fd_synthc3d", quality, step=100 * k)
            client.log_metric(run, "quality/cost_gpu_hours", cost, step=100 * k)
        client.set_terminated(run)
        trials.append(sw.TrialSummary(tid, role, "TERMINATED", params, {"eval/fd_synthc3d": q, "cost/gpu_hours": c}))
    result = sw.SweepResult("uisweep", "eval/fd_synthc3d", "cost/gpu_hours", trials=trials, pareto=["bbbb0002"],
                            parent_run_id=parent, tracking_uri=uri)
    sw._log_report(cfg, result)
    return result


@pytest.mark.skipif(not browser.available(), reason="Debian chromium not installed (.ci/run installs it)")
def test_printed_links_open_the_compare_view_and_the_chart_in_chromium(mlflow_server, tmp_path, artifacts_dir):
    from arvid_ray.sweep import ui_links

    result = _fake_sweep(mlflow_server, tmp_path)
    links = ui_links(result)
    assert set(links) == {"compare", "pareto", "chart", "quality"}
    assert all(u.startswith(mlflow_server + "/#/") for u in links.values())
    # the time to the baseline's final quality, from the trials' evaluations during training
    assert "RATIO cost_to_target_bbbb0002_search_over_baseline 0.2714" in result.time_to_target, result.time_to_target
    assert any(line.startswith("cccc0003 [search]: never reached the target 30") for line in result.time_to_target)
    names = [f"uisweep-{t.trial_id}" for t in result.trials]
    texts = browser.evaluate_in_frames(links["compare"], browser.PAGE_TEXT_JS,
                                       lambda v: any(all(n in t for n in names) for t in v), timeout=120)
    assert any("Comparing 3 Runs" in t and all(n in t for n in names) for t in texts), texts[-1:]

    def shows_all(values):
        return any(isinstance(v, list) and {x["trial"] for x in v if x["visible"]} == {t.trial_id for t in result.trials}
                   for v in values)

    charts = browser.evaluate_in_frames(links["chart"], browser.CHART_TRIALS_JS, shows_all, timeout=120)
    assert shows_all(charts), charts  # the interactive chart, inside MLflow's artifact viewer, plots every trial
    texts = browser.evaluate_in_frames(links["pareto"], browser.PAGE_TEXT_JS,
                                       lambda v: any("pareto.png" in t for t in v), timeout=120)
    assert any("pareto.png" in t for t in texts)
    # quality against training cost, per trial: the parent run's artifact, shown by MLflow's viewer
    shot = artifacts_dir / "mlflow_quality_vs_cost.png"
    texts = browser.evaluate_in_frames(links["quality"], browser.PAGE_TEXT_JS,
                                       lambda v: any("quality_vs_cost.png" in t for t in v), timeout=120,
                                       screenshot=shot)
    assert any("quality_vs_cost.png" in t for t in texts) and shot.stat().st_size > 10_000
