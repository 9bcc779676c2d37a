"""MLflow tracking against a real `mlflow server`: params, metrics, config artifact, nesting, failures."""

from __future__ import annotations

from tracking_shared import _cfg

from arvid_ray.config import ExperimentConfig
from arvid_ray.tracking import Tracker, end_run, read_metrics_jsonl


def test_run_has_params_metrics_and_config_artifact(mlflow_server, tmp_path):
    from mlflow import MlflowClient

    cfg = _cfg(mlflow_server)
    tracker = Tracker(cfg, tmp_path)
    run_id = tracker.start(run_name="unit-run")
    assert run_id
    tracker.log_config()
    tracker.log_metrics({"train/loss": 3.5, "cost/gpu_hours": 0.01}, step=1)
    tracker.log_metrics({"train/loss": 2.5}, step=2)
    tracker.end()

    client = MlflowClient(mlflow_server)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "unit-run"
    assert run.data.params["objective.kind"] == "local"
    assert run.data.params["data.num_frames"] == "17"
    # hyper-parameters as params, bookkeeping as tags, the cost tables reduced to this run's accelerator
    from arvid_ray.tracking import TAG_PREFIXES

    logged = set(run.data.params) | {k for k in run.data.tags if k.startswith(TAG_PREFIXES)}
    assert logged == {k for k, v in cfg.to_flat().items() if not (k.startswith(TAG_PREFIXES) and v is None)}
    assert run.data.tags["tracking.uri"] == mlflow_server and "tracking.uri" not in run.data.params
    assert run.data.params["cost.price_per_hour"] == str(cfg.cost.price_per_hour["cpu"])
    assert [m.value for m in client.get_metric_history(run_id, "train/loss")] == [3.5, 2.5]
    assert "config.yaml" in [a.path for a in client.list_artifacts(run_id)]
    text = client.download_artifacts(run_id, "config.yaml", str(tmp_path / "dl"))
    assert ExperimentConfig.from_dict(__import__("yaml").safe_load(open(text))) == cfg
    assert [r["train/loss"] for r in read_metrics_jsonl(tmp_path)] == [3.5, 2.5]  # local copy too
    assert (tmp_path / "config.yaml").exists()


def test_child_run_is_nested_and_resumable_by_id(mlflow_server):
    from mlflow import MlflowClient

    parent = Tracker(_cfg(mlflow_server))
    parent_id = parent.start(run_name="sweep-parent")
    child = Tracker(_cfg(mlflow_server, **{"tracking.parent_run_id": parent_id}))
    child_id = child.start(run_name="sweep-trial-1")
    again = Tracker(_cfg(mlflow_server, **{"tracking.run_id": child_id}))
    assert again.start() == child_id
    again.log_metrics({"eval/val_ce": 1.0}, step=3)
    # a resumed run's reopen and points go out through the shipper (never waited on by the caller): let
    # them land before ending the run from elsewhere, or the late reopen would set it RUNNING again
    assert again.flush(30)
    end_run(_cfg(mlflow_server), child_id, "KILLED")
    parent.end("FINISHED")
    client = MlflowClient(mlflow_server)
    run = client.get_run(child_id)
    assert run.data.tags["mlflow.parentRunId"] == parent_id
    assert run.data.metrics["eval/val_ce"] == 1.0 and run.info.status == "KILLED"
