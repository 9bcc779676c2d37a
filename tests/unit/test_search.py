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
    "fewer_frames.num_frames": {"type": "int", "low": 2, "high": 3, "when": {"objective.kind": "fewer_frames"}},
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


# ---- sweep mistakes refused before launch (issue 25) ------------------------------------------------
from arvid_ray.search import check_batch, check_metrics, check_sweep  # noqa: E402


def _sweep_cfg(**dotted):
    return ExperimentConfig().replace(**{"sweep.search_space": SPACE, **dotted})


@pytest.mark.parametrize(
    "space, fragment",
    [
        # objective.kind is fixed (not swept): window_frames would never be sampled
        ({"objective.window_frames": {"type": "int", "low": 1, "high": 4, "when": {"objective.kind": "local"}}},
         "'objective.kind' is fixed"),
        ({"objective.kind": {"type": "choice", "values": ["local", "full"]},
          "objective.window_frames": {"type": "int", "low": 1, "high": 4, "when": {"objective.knd": "local"}}},
         "'objective.knd' is not a config key"),
        ({"objective.window_frames": {"type": "int", "low": 1, "high": 4, "when": {"objective.kind": "local"}},
          "objective.kind": {"type": "choice", "values": ["local", "full"]}},
         "move sweep.search_space.objective.kind above it"),
        ({"objective.kind": {"type": "choice", "values": ["full", "fewer_frames"]},
          "objective.window_frames": {"type": "int", "low": 1, "high": 4, "when": {"objective.kind": "local"}}},
         "not among its values"),
    ],
)
def test_when_that_can_never_be_true_is_refused(space, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        parse_space(space, ExperimentConfig())
    assert "sweep.search_space.objective.window_frames.when" in str(info.value)


def test_empty_search_space_is_refused():
    with pytest.raises(ConfigError, match="sweep.search_space is empty"):
        check_sweep(ExperimentConfig())
    assert len(check_sweep(_sweep_cfg())) == len(SPACE)


@pytest.mark.parametrize(
    "dotted, fragment",
    [
        ({"sweep.metric": "eval/fvd", "eval.extractor": "synthc3d"}, "set sweep.metric=eval/fd_synthc3d"),
        ({"sweep.metric": "eval/fd_synthc3d", "eval.extractor": "i3d"}, "set sweep.metric=eval/fvd"),
        ({"sweep.metric": "fd_synthc3d"}, "sweep.metric = 'fd_synthc3d' is never logged"),
        ({"sweep.cost_metric": "gpu_hours"}, "sweep.cost_metric = 'gpu_hours' is never logged"),
    ],
)
def test_metric_the_evaluator_never_logs_is_refused(dotted, fragment):
    with pytest.raises(ConfigError, match=fragment):
        check_sweep(_sweep_cfg(**dotted))


@pytest.mark.parametrize(
    "dotted",
    [
        {"sweep.metric": "eval/fvd", "eval.extractor": "i3d"},
        {"sweep.metric": "eval/kvd_synthc3d"},
        {"sweep.metric": "eval/fd_recon"},  # not extractor-keyed
        {"sweep.metric": "control/fd_synthc3d"},
        {"sweep.mode": "single", "sweep.cost_metric": "unused"},
    ],
)
def test_metrics_the_evaluator_logs_pass(dotted):
    check_metrics(_sweep_cfg(**dotted))


def test_batch_divisibility_is_refused_before_launch():
    with pytest.raises(ConfigError, match=r"train.global_batch_size = 4 .* train.num_workers \(8\) x "
                                          r"data.batch_size \(4\) = 32"):
        check_sweep(_sweep_cfg(**{"train.num_workers": 8, "data.batch_size": 4, "train.global_batch_size": 4}))
    check_batch(_sweep_cfg(**{"train.num_workers": 2, "data.batch_size": 4, "train.global_batch_size": 16}))
    # a swept micro-batch that does not divide the batch is found too
    space = {**SPACE, "data.batch_size": {"type": "choice", "values": [4, 3]}}
    with pytest.raises(ConfigError, match=r"data.batch_size \(3\)"):
        check_sweep(_sweep_cfg(**{"sweep.search_space": space, "train.global_batch_size": 8}))
