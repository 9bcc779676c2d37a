"""Quality during training (eval.quality_every, issue 26): each due checkpoint is evaluated off the training
path and logged into the trial's run at the checkpoint's step with the training cost at that step; a
killed evaluator leaves the run FINISHED and says so in a tag; the in-process trainer does the same in line."""

from __future__ import annotations

import functools
import os
import signal
import sys

import pytest
from launch_cfg import launch_cfg as _cfg  # tests/support
from quality_during_shared import PRUNE, QUALITY, _history

from arvid_ray.config import ExperimentConfig


def _datasets(n_train: int = 16, n_val: int = 4):
    """Pattern tokens (class-determined [5, 4, 4] grids) as Ray Datasets."""
    import numpy as np
    import ray.data

    def rows(n, seed):
        rng = np.random.default_rng(seed)
        t, i, j = np.ogrid[:5, :4, :4]
        labels = rng.integers(16, size=n)
        return [{"tokens": ((int(y) * 37 + t * 5 + i * 3 + j) % 1000).astype(np.int32), "label": int(y),
                 "caption": f"clip {k}", "video_id": f"v{k}", "clip_start": 0} for k, y in enumerate(labels)]

    return {"train": ray.data.from_items(rows(n_train, 0)), "val": ray.data.from_items(rows(n_val, 1))}


@pytest.mark.ray
def test_checkpoints_are_evaluated_off_the_training_path_at_their_step_with_their_cost(ray_session, mlflow_server,
                                                                                        tmp_path):
    from mlflow import MlflowClient

    from arvid_ray.launch import launch

    cfg = _cfg(tmp_path, **QUALITY, **{"tracking.uri": mlflow_server, "train.run_name": "quality-during"})
    result = launch(cfg, datasets=_datasets())
    client = MlflowClient(mlflow_server)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED" and "arvid.quality_lost" not in run.data.tags
    fd = _history(client, run.info.run_id, "quality/fd_synthc3d")
    assert sorted(fd) == [2, 4]  # every quality_every steps, at the checkpoint's step
    assert set(_history(client, run.info.run_id, "quality/num_videos").values()) == {4.0}
    assert sorted(_history(client, run.info.run_id, "quality/traj_error")) == [2, 4]
    # the training cost at that checkpoint, as training itself logged it at that step
    cost, usd = _history(client, run.info.run_id, "cost/gpu_hours"), _history(client, run.info.run_id, "cost/usd")
    at = _history(client, run.info.run_id, "quality/cost_gpu_hours")
    assert at == {2: pytest.approx(cost[2]), 4: pytest.approx(cost[4])} and 0 < at[2] < at[4]
    assert _history(client, run.info.run_id, "quality/cost_usd") == {2: pytest.approx(usd[2]), 4: pytest.approx(usd[4])}
    assert all(v > 0 for v in _history(client, run.info.run_id, "quality/eval_s").values())  # its own cost
    assert "cost/eval_s" not in run.data.metrics  # never folded into the training cost


def _die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # the evaluator's process is lost mid-evaluation


@pytest.mark.ray
def test_a_killed_evaluator_leaves_the_run_finished_and_tagged(ray_session, mlflow_server, tmp_path):
    import ray.cloudpickle
    from mlflow import MlflowClient

    from arvid_ray.evaluate.during import QualityWatch
    from arvid_ray.launch import build_trainer

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # _die travels to the worker by value
    cfg = _cfg(tmp_path, **QUALITY, **{"tracking.uri": mlflow_server, "train.run_name": "quality-killed"})
    trainer = build_trainer(cfg, datasets=_datasets())
    trainer.train_loop_config["quality_watch"] = functools.partial(QualityWatch, job=_die)
    result = trainer.fit()
    assert result.error is None and result.metrics["step"] == 4
    client = MlflowClient(mlflow_server)
    run = client.search_runs([client.get_experiment_by_name("arvid-launch-test").experiment_id],
                             filter_string="tags.mlflow.runName = 'quality-killed'")[0]
    assert run.info.status == "FINISHED"
    lost = run.data.tags["arvid.quality_lost"]
    assert "step 2:" in lost and "step 4:" in lost, lost
    assert "quality/fd_synthc3d" not in run.data.metrics


@pytest.mark.ray
def test_in_process_training_evaluates_in_line(tmp_path):
    from mlflow import MlflowClient

    from arvid_ray.launch import launch

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = ExperimentConfig().replace(**{
        **QUALITY, "train.num_workers": 0, "experiment.workdir": str(tmp_path / "work"), "synth.num_videos": 12,
        "synth.resolution": 32, "data.resolution": 32,
        "tokenizer.name": "fsq", "data.batch_size": 4, "train.val_batches": 1, "tracking.system_metrics": False,
        "tracking.uri": uri, "train.run_name": "quality-inline"})
    result = launch(cfg)
    client = MlflowClient(uri)
    assert client.get_run(result.mlflow_run_id).info.status == "FINISHED"
    assert sorted(_history(client, result.mlflow_run_id, "quality/fd_synthc3d")) == [2, 4]
    # a CPU run says what its cost/gpu_hours counts
    assert client.get_run(result.mlflow_run_id).data.tags["arvid.cost_unit"].startswith("CPU core-hours")


def _fake_evaluation(cfg, uri, step, cost, run_id):
    return {"quality/fd_synthc3d": 100.0 / step, **{f"quality/{k.split('/')[1]}": v for k, v in cost.items()}}


@pytest.mark.ray
def test_quality_watch_takes_what_its_ray_tasks_return(ray_session, tmp_path):
    """The real path: after_checkpoint submits Ray tasks, finish collects their returned points, take hands
    them over in step order with the checkpoint's step."""
    import ray.cloudpickle

    from arvid_ray.evaluate.during import QualityWatch

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the job travels to the task by value
    cfg = ExperimentConfig().replace(**{**PRUNE, "experiment.workdir": str(tmp_path)})
    watch = QualityWatch(cfg, run_id=None, job=_fake_evaluation)
    for step in (100, 150, 200):  # 150 is not due (eval.quality_every=100): no task
        watch.after_checkpoint(step, {"cost/gpu_hours": step / 1000}, uri=str(tmp_path / f"step_{step}"))
    assert sorted(watch.pending.values()) == [100, 200]
    watch.finish(timeout_s=120)
    assert not watch.lost
    assert watch.take() == {"quality/fd_synthc3d": 1.0, "quality/gpu_hours": 0.1, "quality/step": 100.0}
    assert watch.take() == {"quality/fd_synthc3d": 0.5, "quality/gpu_hours": 0.2, "quality/step": 200.0}
    assert watch.take() is None
