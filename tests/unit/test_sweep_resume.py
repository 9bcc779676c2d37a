"""`--resume` resolution without starting a sweep (issue 25): a typo'd sweep.name is refused instead of
starting a new full sweep, a bare --resume finishes the latest interrupted sweep, and a resume whose
config differs from the interrupted sweep's is refused naming the keys.

The on-disk state is what a real sweep leaves: Tune's ``tuner.pkl`` (what ``Tuner.can_restore`` looks
for) and the ``arvid_sweep.json`` that ``run_sweep`` writes beside it. Unit level: no Ray, no MLflow.
(Kept out of test_sweep.py, whose module marks are ray + slow.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from arvid_ray.config import ConfigError, ExperimentConfig
from arvid_ray.sweep import (
    TUNE_STATE,
    _write_sweep_state,
    check_resume_config,
    interrupted_sweeps,
    names_sweep,
    resume_target,
    run_sweep,
)

ROOT = Path(__file__).resolve().parents[2]
SPACE = {"objective.window_frames": {"type": "int", "low": 1, "high": 4}}


def _cfg(**dotted) -> ExperimentConfig:
    return ExperimentConfig().replace(**{"sweep.search_space": SPACE, **dotted})


def _leave_sweep(storage: Path, cfg: ExperimentConfig, status: str, started: float) -> None:
    """What run_sweep leaves under the storage root: Tune's state plus the sweep's own state file."""
    (storage / cfg.sweep.name).mkdir(parents=True)
    (storage / cfg.sweep.name / TUNE_STATE).write_bytes(b"")
    _write_sweep_state(cfg, str(storage), status, started=started)


@pytest.fixture
def storage(tmp_path):
    root = tmp_path / "sweeps"
    _leave_sweep(root, _cfg(**{"sweep.name": "tune-window"}), "interrupted", started=100.0)
    _leave_sweep(root, _cfg(**{"sweep.name": "tune-window-2"}), "running", started=200.0)  # process died
    _leave_sweep(root, _cfg(**{"sweep.name": "tune-window-3"}), "finished", started=300.0)
    _leave_sweep(root, _cfg(**{"sweep.name": "other"}), "interrupted", started=400.0)
    (root / "not-a-sweep").mkdir()  # no Tune state: never offered
    return root


def test_interrupted_sweeps_are_the_unfinished_ones_oldest_first(storage):
    assert interrupted_sweeps(_cfg(), str(storage)) == ["tune-window", "tune-window-2", "other"]


def test_resume_of_a_misspelled_sweep_is_refused_listing_the_interrupted_ones(storage):
    with pytest.raises(ConfigError, match=r"no sweep named sweep.name=tune-windw .*interrupted sweeps there: "
                                          r"tune-window, tune-window-2, other"):
        resume_target(_cfg(**{"sweep.name": "tune-windw"}), str(storage), named=True)


def test_resume_of_a_named_sweep_targets_it(storage):
    assert resume_target(_cfg(**{"sweep.name": "tune-window"}), str(storage), named=True).sweep.name == "tune-window"


def test_bare_resume_targets_the_latest_interrupted_sweep_of_the_name(storage):
    # tune-window-3 finished and "other" is another sweep: the latest interrupted tune-window* is -2
    assert resume_target(_cfg(), str(storage), named=False).sweep.name == "tune-window-2"


def test_bare_resume_with_nothing_to_resume_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no interrupted sweep named tune-window or tune-window-N"):
        resume_target(_cfg(), str(tmp_path / "sweeps"), named=False)


def test_names_sweep_sees_only_a_sweep_name_override():
    assert names_sweep(["train.steps=3", "sweep.name=x"]) and not names_sweep(["sweep.name_x=1", "train.steps=3"])


def test_resume_with_another_config_is_refused_naming_the_keys(storage):
    changed = _cfg(**{"sweep.name": "tune-window", "sweep.search_space": {**SPACE, "objective.reco_weight": {
        "type": "loguniform", "low": 0.01, "high": 1.0}}, "sweep.metric": "eval/fd_recon"})
    with pytest.raises(ConfigError, match=r"differs from interrupted sweep tune-window's in sweep.metric: "
                                          r"'eval/fd_synthc3d' -> 'eval/fd_recon'; sweep.search_space"):
        check_resume_config(changed, str(storage))
    # how the sweep runs may change on a resume; what it searches may not
    check_resume_config(_cfg(**{"sweep.name": "tune-window", "experiment.verbose": True,
                                "sweep.max_concurrent_trials": 1}), str(storage))


def test_resume_after_an_upgrade_that_added_or_removed_config_fields(storage):
    """A sweep interrupted under an older arvid-ray: a field added since (at its default) or removed
    since does not block its resume; a new field set to other than its default does."""
    import json

    from arvid_ray.sweep.state import SWEEP_STATE, config_differences

    path = storage / "tune-window" / SWEEP_STATE
    state = json.loads(path.read_text())
    del state["config"]["train.lr"]  # "added since": the saved config never had it
    state["config"]["train.retired_knob"] = 30.0  # "removed since": this config has no such key
    path.write_text(json.dumps(state))
    cfg = _cfg(**{"sweep.name": "tune-window"})
    assert config_differences(state["config"], cfg) == []
    check_resume_config(cfg, str(storage))
    with pytest.raises(ConfigError, match=r"train.lr: '\(not set\)' -> 0.5"):
        check_resume_config(_cfg(**{"sweep.name": "tune-window", "train.lr": 0.5}), str(storage))


def test_run_sweep_refuses_a_changed_resume_before_starting_anything(storage):
    changed = _cfg(**{"sweep.name": "tune-window", "train.steps": 7})
    with pytest.raises(ConfigError, match=r"train.steps: 200 -> 7"):
        run_sweep(changed, storage_path=str(storage), restore=True)


def test_tune_window_resume_of_a_typo_exits_2_instead_of_starting_a_sweep(storage, tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "experiments"))
    import tune_window

    rc = tune_window.main(["--resume", "sweep.name=tune-windw", f"train.storage_path={storage}",
                           f"experiment.workdir={tmp_path / 'work'}", f"storage.root={tmp_path / 'root'}"])
    assert rc == 2
    assert "no sweep named sweep.name=tune-windw" in capsys.readouterr().err
    assert sorted(p.name for p in storage.iterdir()) == ["not-a-sweep", "other", "tune-window", "tune-window-2",
                                                          "tune-window-3"]  # nothing new started


def test_cli_sweep_resume_of_a_typo_exits_2(storage, tmp_path, capsys):
    from arvid_ray.cli import main

    rc = main(["sweep", "--resume", "sweep.name=tune-windw", f"train.storage_path={storage}",
               f"experiment.workdir={tmp_path / 'work'}", f"storage.root={tmp_path / 'root'}"])
    assert rc == 2
    assert "no sweep named sweep.name=tune-windw" in capsys.readouterr().err


# every name arvid_ray/sweep.py had before it became a package (issue 25)
OLD_SWEEP_NAMES = [
    "DRIVER_CPUS", "DefineByRun", "INCOMPLETE", "LOCAL_UI", "RESUME_MAY_DIFFER", "ROLE_KEY", "ROLE_TAG", "ROW_KEY",
    "RUN_DIR_TAG", "SWEEP_STATE", "SWEEP_TAG", "SweepResult", "TRIAL_TAG", "TUNE_STATE", "TrialSummary", "_child_run",
    "_client", "_end_child_runs_callback", "_end_trial_runs", "_error_line", "_experiment_id", "_fail_open_runs",
    "_finished_result", "_graceful_stop", "_log_report", "_parent_run", "_progress_reporter", "_scheduler",
    "_searcher", "_summaries", "_sweep_states", "_tag_run", "_tracking_refusal", "_trial_driver", "_trial_statuses",
    "_tune_storage_args", "_tuner", "_write_sweep_state", "check_batch", "check_metrics", "check_resumable",
    "check_resume_config", "check_sweep", "config_differences", "dry_run", "fresh_sweep_name", "interrupted_sweeps",
    "log", "max_concurrent_trials", "names_sweep", "pareto_front", "parse_space", "prepare_inputs", "print_dry_run",
    "refusals", "resume_target", "run_sweep", "sweep_storage", "tracking_lines", "tracking_uri", "trial_overrides",
    "trial_run_dir", "ui_links",
]
# what Tune state pickled before the split refers to by module path (cloudpickle: module-level functions and
# classes by reference; the child-run callback by value, its globals by reference)
OLD_PICKLED = [("arvid_ray.sweep", "_trial_driver"), ("arvid_ray.sweep", "_end_trial_runs"),
               ("arvid_ray.search", "DefineByRun"), ("arvid_ray.search", "Dimension"),
               ("arvid_ray.searcher", "SweepSearcher")]


def test_an_interrupted_sweep_pickled_before_the_split_still_finds_every_name():
    import io
    import pickle

    import ray.cloudpickle

    import arvid_ray.sweep as sweep

    assert not [n for n in OLD_SWEEP_NAMES if not hasattr(sweep, n)]
    for module, name in OLD_PICKLED:
        assert pickle.Unpickler(io.BytesIO(b"")).find_class(module, name) is not None, (module, name)
    old = pickle.dumps(sweep._trial_driver)  # by reference, at its new home; the old path resolves to it too
    assert ray.cloudpickle.loads(old) is sweep._trial_driver is sweep.driver._trial_driver
