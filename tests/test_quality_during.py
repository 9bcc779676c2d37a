"""Quality during training (eval.quality_every, issue 26): each due checkpoint is evaluated off the training
path and logged into the trial's run at the checkpoint's step with the training cost at that step; a
killed evaluator leaves the run FINISHED and says so in a tag; the in-process trainer does the same in line."""

from __future__ import annotations

import functools
import os
import signal
import sys

import pytest

from arvid_ray.config import ConfigError, ExperimentConfig

sys.path.insert(0, os.path.dirname(__file__))
from test_launch import _cfg  # noqa: E402

# 17 frames: the quality extractor needs clips of >= 16 frames (5 latent frames of 4x4 tokens at 32 px)
QUALITY = {"eval.quality_every": 2, "eval.quality_videos": 4, "eval.trajectory_videos": 2, "eval.batch_size": 4,
           "train.final_eval": False, "train.num_workers": 1, "train.steps": 4, "train.ckpt_every": 2,
           "train.global_batch_size": 4, "data.num_frames": 17, "synth.num_frames": 17}


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


def _history(client, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def test_quality_every_must_be_a_multiple_of_the_checkpoint_cadence():
    with pytest.raises(ConfigError, match=r"eval.quality_every.*multiple of train.ckpt_every=100"):
        ExperimentConfig().replace(**{"eval.quality_every": 150})
    with pytest.raises(ConfigError, match="eval.quality_videos"):
        ExperimentConfig().replace(**{"eval.quality_videos": 1})
    assert ExperimentConfig().replace(**{"eval.quality_every": 200}).eval.quality_every == 200


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


# ---- the sweep prunes on the quality during training (sweep.prune_on=quality, issue 26 item 4) ---------------
PRUNE = {"sweep.mode": "single", "sweep.prune_on": "quality", "sweep.metric": "eval/fd_synthc3d",
         "sweep.search_space": {"objective.window_frames": {"type": "int", "low": 1, "high": 4}},
         "eval.quality_every": 100, "train.ckpt_every": 50, "train.steps": 400, "sweep.asha_grace_steps": 50}


class _Refs:
    """Stands in for Ray's object store in QualityWatch.poll/_collect: ``ray.wait`` answers the refs marked
    done, ``ray.get`` their value (an exception value is raised, as Ray raises a task's error)."""

    def __init__(self, monkeypatch):
        import ray

        self.values: dict[str, object] = {}
        monkeypatch.setattr(ray, "wait", lambda refs, num_returns, timeout: (
            [r for r in refs if r in self.values], [r for r in refs if r not in self.values]))
        monkeypatch.setattr(ray, "get", self.get)

    def get(self, ref):
        value = self.values[ref]
        if isinstance(value, BaseException):
            raise value
        return value


def _point(fd: float) -> dict[str, float]:
    return {"quality/fd_synthc3d": fd, "quality/num_videos": 4.0, "quality/cost_gpu_hours": 0.1}


def test_quality_watch_hands_each_finished_evaluation_over_once_in_step_order(monkeypatch):
    from arvid_ray.evaluate.during import QualityWatch

    refs = _Refs(monkeypatch)
    watch = QualityWatch(ExperimentConfig().replace(**PRUNE), run_id=None)
    watch.pending = {"r100": 100, "r200": 200, "r300": 300, "r400": 400}  # what after_checkpoint submitted
    watch.poll()
    assert watch.take() is None  # nothing has ended yet
    refs.values.update(r100=_point(9.0), r200=_point(7.0))
    watch.poll()
    assert watch.take() == {**_point(9.0), "quality/step": 100.0}  # the oldest first
    assert watch.take() == {**_point(7.0), "quality/step": 200.0}
    assert watch.take() is None  # each once
    # step 400's evaluation ends before step 300's and is handed over: 300's, ending later, is dropped so the
    # step ASHA reads never goes back
    refs.values["r400"] = _point(5.0)
    watch.poll()
    assert watch.take()["quality/step"] == 400.0
    refs.values["r300"] = _point(6.0)
    watch.poll()
    assert watch.take() is None and not watch.pending
    # a lost evaluation hands nothing over and is told as lost
    watch.pending = {"r600": 600}
    refs.values["r600"] = RuntimeError("node died")
    watch.poll()
    assert watch.take() is None and "node died" in watch.lost[600]


def test_ray_reporter_adds_a_finished_evaluation_to_rank_0s_next_due_report_only(monkeypatch):
    import ray.train

    from arvid_ray.evaluate.during import QualityWatch
    from arvid_ray.train.worker import RayReporter

    refs = _Refs(monkeypatch)
    sent: list[dict[str, float]] = []
    monkeypatch.setattr(ray.train, "report", lambda metrics, **kw: sent.append(dict(metrics)))

    class Tracker:
        logged: list[tuple[int, dict[str, float]]] = []

        def log_metrics(self, metrics, step):
            self.logged.append((step, dict(metrics)))

    def run(rank: int) -> list[dict[str, float]]:
        sent.clear()
        watch = QualityWatch(ExperimentConfig().replace(**PRUNE), run_id=None)
        watch.pending = {"r20": 20}
        refs.values.pop("r20", None)
        tracker = Tracker()
        reporter = RayReporter(rank=rank, tracker=tracker, total_steps=100, every=25, quality=watch)
        for step in range(10, 101, 10):
            if step == 40:  # the evaluation of step 20 ends between two reports
                refs.values["r20"] = _point(8.0)
            reporter.report(step, {"step": float(step), "train/loss": 1.0}, None)
        assert not any(k.startswith("quality/") for _, m in tracker.logged for k in m)  # the task logged it
        return list(sent)

    reports = run(rank=0)
    assert [int(m["step"]) for m in reports] == [30, 50, 80, 100]  # the cadence is unchanged
    with_quality = [int(m["step"]) for m in reports if "quality/fd_synthc3d" in m]
    assert with_quality == [50]  # ended at step 40 (not due), sent with the next due report, once
    assert reports[1]["quality/step"] == 20.0 and reports[1]["quality/fd_synthc3d"] == 8.0
    assert not any("quality/fd_synthc3d" in m for m in run(rank=1))  # only rank 0's metrics reach Tune


def test_the_tuner_builds_asha_on_the_quality_at_its_checkpoint_step():
    from arvid_ray.sweep.tuner import _scheduler

    asha = _scheduler(ExperimentConfig().replace(**PRUNE))
    assert (asha._metric, asha._mode, asha._time_attr, asha._max_t) == ("quality/fd_synthc3d", "min", "quality/step", 400)
    # grace 50 rounds up to the first evaluation (100): every rung is a step with an evaluation
    assert sorted(m for m, _ in asha._brackets[0]._rungs) == [100, 200, 400]
    # i3d's distance; grace already a multiple
    asha = _scheduler(ExperimentConfig().replace(**{**PRUNE, "sweep.asha_grace_steps": 200, "eval.extractor": "i3d",
                                                    "sweep.metric": "eval/fvd"}))
    assert (asha._metric, sorted(m for m, _ in asha._brackets[0]._rungs)) == ("quality/fvd", [200, 400])
    ce = _scheduler(ExperimentConfig().replace(**{**PRUNE, "sweep.prune_on": "val_ce"}))
    assert (ce._metric, ce._time_attr, sorted(m for m, _ in ce._brackets[0]._rungs)) == (
        "eval/val_ce", "step", [50, 100, 200, 400])
    assert _scheduler(ExperimentConfig().replace(**{**PRUNE, "sweep.prune_on": "val_ce", "sweep.mode": "multi"})) is None


@pytest.mark.parametrize("dotted, fragment", [
    ({"sweep.mode": "multi"}, r"sweep.prune_on = 'quality' with sweep.mode = 'multi'.*set sweep.mode=single"),
    ({"eval.quality_every": 0}, r"sweep.prune_on = 'quality'.*eval.quality_every = 0.*set eval.quality_every"),
    ({"sweep.metric": "eval/fd_floor"}, r"sweep.prune_on = 'quality'.*'eval/fd_floor'.*set sweep.metric=eval/fd_synthc3d"),
    ({"eval.quality_every": 400}, r"sweep.prune_on = 'quality'.*step 400, not before train.steps=400.*lower "
                                  r"eval.quality_every or sweep.asha_grace_steps"),
])
def test_prune_on_quality_refuses_what_cannot_work_before_launch(dotted, fragment):
    from arvid_ray.sweep.space import check_sweep

    with pytest.raises(ConfigError, match=fragment):
        check_sweep(ExperimentConfig().replace(**{**PRUNE, **dotted}))


def test_prune_on_quality_accepts_what_the_evaluation_logs():
    from arvid_ray.sweep.space import check_sweep

    check_sweep(ExperimentConfig().replace(**PRUNE))
    check_sweep(ExperimentConfig().replace(**{**PRUNE, "sweep.metric": "eval/traj_error"}))  # synthetic data
    check_sweep(ExperimentConfig().replace(**{**PRUNE, "sweep.mode": "multi", "sweep.prune_on": "val_ce",
                                              "eval.quality_every": 0}))  # multi mode: final values, as before


def test_asha_stops_the_worse_trial_on_quality_not_on_val_ce():
    """Ray's own ASHA object fed two trials' results in order: A has the better validation CE, B the better
    quality. On quality ASHA ignores the results without a quality point and stops A at the step-100 rung;
    on val_ce (as before) it stops B."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from arvid_ray.sweep.tuner import _scheduler

    a, b = SimpleNamespace(trial_id="A"), SimpleNamespace(trial_id="B")
    results = [  # (trial, result) as the two trials' reports reach Tune
        (a, {"step": 50, "eval/val_ce": 2.0}),
        (b, {"step": 50, "eval/val_ce": 3.0}),
        (b, {"step": 150, "eval/val_ce": 2.7, "quality/fd_synthc3d": 5.0, "quality/step": 100.0}),
        (a, {"step": 150, "eval/val_ce": 1.7, "quality/fd_synthc3d": 9.0, "quality/step": 100.0}),
    ]

    def decisions(cfg):
        asha = _scheduler(cfg)
        for trial in (a, b):
            asha.on_trial_add(None, trial)
        return [(t.trial_id, asha.on_trial_result(None, t, r)) for t, r in results]

    on_quality = decisions(ExperimentConfig().replace(**PRUNE))
    assert [d for _, d in on_quality] == [TrialScheduler.CONTINUE] * 3 + [TrialScheduler.STOP]
    on_ce = decisions(ExperimentConfig().replace(**{**PRUNE, "sweep.prune_on": "val_ce"}))
    assert [t for t, d in on_ce if d == TrialScheduler.STOP] == ["B"] and on_ce[1] == ("B", TrialScheduler.STOP)


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


def test_a_restarted_attempt_submits_again_the_evaluations_its_predecessor_took_down(monkeypatch, tmp_path):
    """After a restart from step 350: step 100 has its point; step 200's checkpoint is gone (lost, tagged);
    300 and the resumed 350 are evaluated again with the training cost the run logged at those steps."""
    from arvid_ray.evaluate import during

    cfg = ExperimentConfig().replace(**{"eval.quality_every": 100, "train.ckpt_every": 50, "train.steps": 1000})
    for step in (300, 350):
        (tmp_path / f"step_{step}").mkdir()
    monkeypatch.setattr(during, "checkpoint_uri", lambda cfg, step: str(tmp_path / f"step_{step}"))
    calls, tags = [], {}

    class Tracker:
        def set_tags(self, t):
            tags.update(t)

    watch = during.QualityWatch(cfg, "run-1", Tracker(), inline=True,
                                job=lambda cfg, uri, step, cost, run_id: calls.append((step, uri, cost, run_id)))
    costs = {s: {"cost/gpu_hours": s / 1000} for s in (100, 200, 300, 350)}
    monkeypatch.setattr(watch, "_history", lambda: ({100}, costs))
    assert watch.recover(350) == [300, 350]
    assert calls == [(300, str(tmp_path / "step_300"), costs[300], "run-1"),
                     (350, str(tmp_path / "step_350"), costs[350], "run-1")]
    watch.finish()
    assert list(watch.lost) == [200] and "step 200: " in tags["arvid.quality_lost"]
    assert "no longer kept" in tags["arvid.quality_lost"]

    # the tracking server away: nothing to compare with, nothing submitted, nothing raised
    def away():
        raise ConnectionError("refused")

    quiet = during.QualityWatch(cfg, "run-1", inline=True, job=lambda *a: pytest.fail("submitted"))
    monkeypatch.setattr(quiet, "_history", away)
    assert quiet.recover(350) == [] and not quiet.lost


def test_the_restarted_attempt_reads_which_points_and_costs_the_run_logged(tmp_path):
    """QualityWatch._history, against a real MLflow store: steps with a quality point, and the training cost
    the run logged at each step."""
    from mlflow import MlflowClient

    from arvid_ray.evaluate.during import QualityWatch

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("recover")).info.run_id
    for step in (100, 200, 300):
        client.log_metric(run_id, "cost/gpu_hours", step / 1000, step=step)
        client.log_metric(run_id, "cost/usd", step / 100, step=step)
    client.log_metric(run_id, "quality/eval_s", 1.5, step=100)
    cfg = ExperimentConfig().replace(**{"tracking.uri": uri, "eval.quality_every": 100, "train.ckpt_every": 100})
    logged, costs = QualityWatch(cfg, run_id)._history()
    assert logged == {100}
    assert costs[300] == {"cost/gpu_hours": 0.3, "cost/usd": 3.0} and sorted(costs) == [100, 200, 300]
