"""The searcher the sweep builds pickles as plain data and continues the same study after unpickling.

No Ray is started: these tests drive the searcher's Tune callbacks by hand, as Tune would.
"""

from __future__ import annotations

import io
import pickle

import optuna
import pytest
import ray.cloudpickle

from arvid_ray.config import load_config
from arvid_ray.search import DefineByRun, parse_space
from arvid_ray.searcher import SweepSearcher
from arvid_ray.sweep import _searcher

SWEEP_YAML = "experiments/configs/sweeps/tune_window.yaml"


def _build(mode: str) -> SweepSearcher:
    cfg = load_config(SWEEP_YAML, [f"sweep.mode={mode}", "sweep.num_samples=6"])
    space = DefineByRun(parse_space(cfg.sweep.search_space, cfg), cfg.sweep.include_baseline,
                        {"objective.kind": "full"})
    searcher = _searcher(cfg, space)
    assert isinstance(searcher, SweepSearcher)
    return searcher


def _result(searcher: SweepSearcher, value: float) -> dict:
    metrics = searcher.metric if isinstance(searcher.metric, list) else [searcher.metric]
    return {m: value + i for i, m in enumerate(metrics)}


class _Recorder(pickle.Unpickler):
    def __init__(self, blob: bytes):
        super().__init__(io.BytesIO(blob))
        self.classes: set[tuple[str, str]] = set()

    def find_class(self, module, name):
        self.classes.add((module, name))
        return super().find_class(module, name)


# plain data Optuna itself defines: a finished or running trial, its state, its parameter distributions
_PLAIN_OPTUNA = ("optuna.trial._frozen", "optuna.trial._state", "optuna.distributions")


def _holds_no_optuna_object(blob: bytes) -> None:
    """Every class the pickle refers to is ours, the standard library's, or Optuna's plain trial data."""
    rec = _Recorder(blob)
    rec.load()
    optuna_objects = {(m, n) for m, n in rec.classes if m.startswith("optuna") and not m.startswith(_PLAIN_OPTUNA)}
    assert not optuna_objects, optuna_objects
    assert not {(m, n) for m, n in rec.classes if m in ("_thread", "threading")}


@pytest.mark.parametrize("mode", ["single", "multi"])
def test_the_sweeps_searcher_pickles_as_plain_data(mode):
    searcher = _build(mode)
    for dumps in (pickle.dumps, ray.cloudpickle.dumps):
        blob = dumps(searcher)  # what Tuner writes into tuner.pkl, before any trial
        _holds_no_optuna_object(blob)
    searcher.suggest("t0")  # the study exists now; its pickled form is still data
    blob = ray.cloudpickle.dumps(searcher)
    _holds_no_optuna_object(blob)


@pytest.mark.parametrize("mode", ["single", "multi"])
@pytest.mark.parametrize("via", ["pickle", "checkpoint"])
def test_an_unpickled_searcher_continues_the_same_study(mode, via, tmp_path):
    searcher = _build(mode)
    first = [searcher.suggest(f"t{i}") for i in range(3)]
    assert first[0] is not None
    searcher.on_trial_complete("t0", _result(searcher, 1.0))
    searcher.on_trial_complete("t1", _result(searcher, 2.0))
    before = searcher._ot_study.get_trials(deepcopy=True)

    if via == "pickle":  # Tuner.restore reads tuner.pkl
        restored = pickle.loads(ray.cloudpickle.dumps(searcher))
    else:  # ... and the searcher's own checkpoint (Searcher.save / restore)
        path = tmp_path / "searcher.pkl"
        searcher.save(str(path))
        _holds_no_optuna_object(path.read_bytes())
        restored = _build(mode)
        restored.restore(str(path))

    after = restored._ot_study.get_trials(deepcopy=True)
    assert [(t.number, t._trial_id, t.state, t.params, t.values) for t in after] == \
        [(t.number, t._trial_id, t.state, t.params, t.values) for t in before]
    assert after[2].state == optuna.trial.TrialState.RUNNING

    # the trial that was running when the sweep stopped is still told when it finishes
    restored.on_trial_complete("t2", _result(restored, 3.0))
    assert restored._ot_study.trials[2].state == optuna.trial.TrialState.COMPLETE
    # new trials continue the numbering, and the restored sampler does not replay the first draws
    nxt = [restored.suggest(f"t{i}") for i in range(3, 6)]
    assert [t.number for t in restored._ot_study.trials] == list(range(6))
    assert all(c is not None for c in nxt)
    # Tune's searcher metric/mode survive
    assert restored.metric == searcher.metric and restored.mode == searcher.mode


def test_a_foreign_searcher_checkpoint_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "searcher.pkl"
    path.write_bytes(pickle.dumps({"_space": None}))
    with pytest.raises(ValueError, match="new sweep.name"):
        _build("multi").restore(str(path))
