"""What a researcher sees: the console, the validation split, params/tags, and the one-click MLflow views.

The browser tests drive real Debian Chromium (headless, DevTools protocol) against a real `mlflow server`
on 127.0.0.1; the sweep here is written straight into MLflow (no training) so the test stays cheap —
test_sweep.py opens the links a real smoke sweep printed.
"""

from __future__ import annotations

import json
import logging
import logging.config
import math
import os

from arvid_ray.config import ExperimentConfig, load_config


# ------------------------------------------------------------------------------------------- chart
def _rows():
    return [
        {"id": "base0001", "name": "sw-base0001", "role": "baseline", "status": "TERMINATED", "quality": 20.0,
         "cost": 0.010, "pareto": False, "params": {"objective.kind": "full"}},
        {"id": "loc00002", "name": "sw-loc00002", "role": "search", "status": "TERMINATED", "quality": 18.0,
         "cost": 0.004, "pareto": True, "params": {"objective.kind": "local", "objective.window_frames": 2}},
        {"id": "bad00003", "name": "sw-bad00003", "role": "search", "status": "ERROR", "quality": math.nan,
         "cost": math.nan, "pareto": False, "params": {"objective.window_frames": 9}, "note": "window > clip"},
    ]


def test_cost_quality_html_is_self_contained_and_names_every_trial(tmp_path):
    from arvid_ray.report import cost_quality_html

    path = cost_quality_html(_rows(), tmp_path / "c.html", quality_key="eval/fd_synthc3d",
                             cost_key="cost/gpu_hours", n=8)
    text = path.read_text()
    assert "<script src" not in text and "<link" not in text and "http" not in text  # no CDN, no network
    for row in _rows():
        assert row["name"] in text  # plotted or listed
    assert text.count('class="trial') == 2  # the failed trial has no point, only a table row with its error
    assert "window &gt; clip" in text and "objective.window_frames=2" in text and "(N=8)" in text
    assert text.count("<path d=") == 1  # the baseline's star


def test_sweep_report_writes_the_chart_beside_the_pareto_plot(tmp_path):
    from arvid_ray.report import sweep_report
    from arvid_ray.sweep import SweepResult, TrialSummary

    result = SweepResult("sw", "q", "c", trials=[
        TrialSummary("t1", "baseline", "TERMINATED", {"objective.kind": "full"}, {"q": 2.0, "c": 1.0}),
        TrialSummary("t2", "search", "TERMINATED", {"objective.kind": "local"}, {"q": 1.0, "c": 0.5})],
        pareto=["t2"])
    files = {p.relative_to(tmp_path).as_posix() for p in sweep_report(result, tmp_path)}
    assert {"plots/pareto.png", "plots/cost_quality.html", "report.md"} <= files
    assert "sw-t1" in (tmp_path / "plots" / "cost_quality.html").read_text()


# ------------------------------------------------------------------------------------ params/tags
def test_params_are_hyper_parameters_tags_are_bookkeeping_and_no_credentials():
    from arvid_ray.tracking import config_params, mask_uri

    cfg = load_config(None, ["tracking.uri=https://alice:s3cr3t@mlflow.example.com", "cost.accelerator=H100",
                             "experiment.workdir=/data/w"])
    params, tags = config_params(cfg)
    assert params["cost.price_per_hour"] == "4.5" and params["cost.peak_tflops"] == "989.0"
    assert not any(k.startswith(("tracking.", "storage.")) or k == "experiment.workdir" for k in params)
    assert tags["tracking.uri"] == "https://***@mlflow.example.com" and tags["experiment.workdir"] == "/data/w"
    assert "s3cr3t" not in json.dumps([params, tags])
    assert mask_uri("s3://key:secret@bucket/x and http://h:1/y") == "s3://***@bucket/x and http://h:1/y"
    assert config_params(ExperimentConfig())[0]["cost.accelerator"] == "auto (cpu)"


# ------------------------------------------------------------------------------------------ console
def test_quiet_console_settings_and_worker_runtime_env(monkeypatch):
    from arvid_ray import console

    monkeypatch.setenv("RAY_DATA_DISABLE_PROGRESS_BARS", "0")
    levels = {name: logging.getLogger(name).level for name in console.QUIET_LOGGERS}
    try:
        console._apply(False)
        assert os.environ["RAY_DATA_DISABLE_PROGRESS_BARS"] == "1"
        assert logging.getLogger("ray.data._internal.progress.logging_progress").getEffectiveLevel() >= logging.ERROR
        assert logging.getLogger("arvid_ray").level == logging.NOTSET
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    # Ray Train's own dictConfig of "ray.train" resets its children's levels: the quiet filters survive it
    class Keep(logging.Handler):
        def __init__(self):
            super().__init__()
            self.records = []

        def emit(self, record):
            self.records.append(record.getMessage())

    keep = Keep()
    train = logging.getLogger("ray.train")
    saved = (train.level, train.handlers[:], train.propagate)
    try:
        console._apply(False)
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
                                   "loggers": {"ray.train": {"level": "DEBUG", "propagate": False}}})
        train.addHandler(keep)
        worker_group = logging.getLogger("ray.train.v2._internal.execution.worker_group.worker_group")
        worker_group.info("Started training worker group of size 1")
        worker_group.warning("a real warning")
        logging.getLogger("ray.train.v2.somewhere_else").info("other Train INFO lines pass")
    finally:
        train.setLevel(saved[0])
        train.handlers, train.propagate = saved[1], saved[2]
    assert keep.records == ["a real warning", "other Train INFO lines pass"]
    env = console.runtime_env(False, {"env_vars": {"A": "1"}, "working_dir": "."})
    assert env["worker_process_setup_hook"] == console.HOOK and env["working_dir"] == "."
    assert env["env_vars"] == {"A": "1", console.VERBOSE_ENV: "0", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    assert "RAY_DATA_DISABLE_PROGRESS_BARS" not in console.runtime_env(True)["env_vars"]


# ------------------------------------------------------------------------------ validation split
def test_small_n_metrics_are_warned_with_their_n(caplog):
    from arvid_ray.evaluate.run import _warn_small_n

    metrics = {"eval/fd_synthc3d": 3.0, "eval/num_videos": 32.0, "eval/fd_floor": 1.0, "eval/fd_floor_n": 2.0,
               "eval/drift_2x": 5.0, "eval/drift_n": 4.0, "eval/drift_floor": 1.0, "eval/drift_floor_n": 4.0}
    with caplog.at_level(logging.WARNING, logger="arvid_ray.evaluate"):
        small = _warn_small_n(metrics, "eval/fd_synthc3d")
    assert small == ["eval/fd_floor N=2", "eval/drift_floor N=4", "eval/drift_2x N=4"]
    assert "eval/fd_floor N=2" in caplog.text and "eval/fd_synthc3d" not in caplog.text


def test_every_folder_of_two_or_more_gets_a_val_video(tmp_path):
    from arvid_ray.ingest import list_inputs

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            (tmp_path / cls / f"v{i}.mp4").write_bytes(b"")
    inputs, _ = list_inputs(str(tmp_path), ExperimentConfig())
    assert sorted(i.split for i in inputs) == ["train", "train", "train", "val"]
    assert [i.split for i in list_inputs(str(tmp_path), ExperimentConfig())[0]] == [i.split for i in inputs]
    none = ExperimentConfig.from_flat({"ingest.val_fraction": 0.0})
    assert {i.split for i in list_inputs(str(tmp_path), none)[0]} == {"train"}
