"""Quality during training (eval.quality_every, issue 26): each due checkpoint is evaluated off the training
path and logged into the trial's run at the checkpoint's step with the training cost at that step; a
killed evaluator leaves the run FINISHED and says so in a tag; the in-process trainer does the same in line."""

from __future__ import annotations

import pytest
from quality_during_shared import PRUNE

from arvid_ray.config import ConfigError, ExperimentConfig


def test_quality_every_must_be_a_multiple_of_the_checkpoint_cadence():
    with pytest.raises(ConfigError, match=r"eval.quality_every.*multiple of train.ckpt_every=100"):
        ExperimentConfig().replace(**{"eval.quality_every": 150})
    with pytest.raises(ConfigError, match="eval.quality_videos"):
        ExperimentConfig().replace(**{"eval.quality_videos": 1})
    assert ExperimentConfig().replace(**{"eval.quality_every": 200}).eval.quality_every == 200


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
