"""Search-space parsing, the baseline-as-trial-0 define-by-run space, and Pareto dominance."""

from __future__ import annotations

import random

import optuna
import pytest

from arvid_ray.config import ConfigError, ExperimentConfig
from arvid_ray.search import ROLE_KEY, DefineByRun, pareto_front, parse_space, trial_overrides

SPACE = {
    "objective.kind": {"type": "choice", "values": ["local", "fewer_frames"]},
    "objective.window_frames": {"type": "int", "low": 1, "high": 4, "when": {"objective.kind": "local"}},
    "objective.reco_weight": {"type": "loguniform", "low": 0.01, "high": 1.0},
    "objective.first_frame_prob": {"type": "choice", "values": [0.5, None], "when": {"objective.kind": "local"}},
    "fewer_frames.num_frames": {"type": "int", "low": 1, "high": 3, "when": {"objective.kind": "fewer_frames"}},
}


def _sample(n: int):
    dims = parse_space(SPACE, ExperimentConfig())
    space = DefineByRun(dims, include_baseline=True, baseline_overrides={"objective.kind": "full"})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    configs = []
    for _ in range(n):
        trial = study.ask()
        constants = space(trial)
        configs.append({**trial.params, **constants})
        study.tell(trial, 0.0)
    return configs


def test_baseline_is_trial_zero_and_suggests_nothing():
    configs = _sample(12)
    assert configs[0] == {"objective.kind": "full", ROLE_KEY: "baseline"}
    assert all(c[ROLE_KEY] == "search" for c in configs[1:])


def test_conditional_dimensions_follow_their_condition_and_build_valid_configs():
    for params in _sample(30)[1:]:
        local = params["objective.kind"] == "local"
        assert ("objective.window_frames" in params) == local
        assert ("fewer_frames.num_frames" in params) == (not local)
        assert 0.01 <= params["objective.reco_weight"] <= 1.0
        cfg = ExperimentConfig.from_flat(trial_overrides(params))
        assert cfg.objective.kind == params["objective.kind"]


@pytest.mark.parametrize(
    "space, fragment",
    [
        ({"objective.windowframes": {"type": "int", "low": 1, "high": 2}}, "not a config key"),
        ({"window_frames": {"type": "int", "low": 1, "high": 2}}, "did you mean objective.window_frames"),
        ({"objective.reco_weight": {"type": "loguniform", "low": 0, "high": 1}}, "low > 0"),
        ({"objective.reco_weight": {"type": "float", "low": 1, "high": 0}}, "low <= high"),
        ({"objective.reco_weight": {"type": "normal"}}, "type one of"),
        ({"objective.kind": {"type": "choice", "values": []}}, "non-empty list"),
    ],
)
def test_bad_space_names_the_key(space, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_space(space, ExperimentConfig())


def test_pareto_front_is_exactly_the_non_dominated_set():
    rng = random.Random(0)
    points = [(rng.random(), rng.random()) for _ in range(200)] + [(float("nan"), 0.0)]
    front = set(pareto_front(points))
    assert 200 not in front  # NaN never on the front
    for i, p in enumerate(points[:200]):
        dominated = any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points[:200])
        assert (i in front) == (not dominated)


def test_pareto_front_keeps_ties_and_drops_dominated():
    assert pareto_front([(1, 2), (1, 2), (2, 1), (2, 2)]) == [0, 1, 2]
