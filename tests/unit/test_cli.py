"""`arvid-ray` entry point (issue 25's CLI traps): --version, `arvid-ray config` (every key with its default
and docstring, the resolved config as a loadable YAML), layered --config files. Unit level: no Ray."""

from __future__ import annotations

import pytest
import yaml

from arvid_ray import __version__
from arvid_ray.cli import main
from arvid_ray.config import ExperimentConfig, config_keys, load_config

SWEEP_YAML = "experiments/configs/sweeps/tune_window.yaml"


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"arvid-ray {__version__}"


def test_help_says_where_the_config_keys_are_listed(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "arvid-ray config" in out and "repeatable" in out


def test_config_lists_every_key_with_its_default_and_docstring(capsys):
    assert main(["config", "train.steps=12"]) == 0
    out = capsys.readouterr().out
    for key, _, doc in config_keys():
        assert f"  {key.partition('.')[2]}: " in out, key
        assert f"  # {doc}" in out, key
    assert "  steps: 12  # default: 200\n" in out
    assert "  lr: 0.0003\n" in out  # unchanged: no default note


def test_config_prints_a_resolved_config_that_loads_back(tmp_path, capsys):
    assert main(["config", "--config", SWEEP_YAML, "train.steps=7", "experiment.name=2026"]) == 0
    printed = tmp_path / "resolved.yaml"
    printed.write_text(capsys.readouterr().out)
    expected = load_config(SWEEP_YAML, ["train.steps=7", "experiment.name=2026"])
    assert load_config(printed) == expected  # search-space order (when:) survives the round trip
    assert main(["config", "--changed", "--config", SWEEP_YAML]) == 0
    changed = yaml.safe_load(capsys.readouterr().out)
    assert changed["train"] == {"steps": 400, "global_batch_size": 8, "lr": 1.0e-3}  # ckpt_every 100 is the default
    assert "seed" not in changed.get("experiment", {})


def test_config_files_layer_on_the_command_line(tmp_path, capsys):
    small = tmp_path / "small.yaml"
    small.write_text("train:\n  steps: 12\n")
    assert main(["config", "--changed", "--config", SWEEP_YAML, "--config", str(small)]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["train"]["steps"] == 12 and out["train"]["lr"] == 1.0e-3  # later file wins, earlier kept
    assert out["sweep"]["num_samples"] == 3
    assert ExperimentConfig().train.steps == 200


def test_config_refuses_a_yaml11_boolean_naming_the_field(capsys):
    assert main(["config", "train.use_gpu=yes"]) == 2
    assert "'train.use_gpu' = 'yes' is invalid: must be true or false" in capsys.readouterr().err


def test_tune_window_layers_config_files_too(tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
    import tune_window

    small = tmp_path / "small.yaml"
    small.write_text("sweep:\n  metric: eval/fvd\n")  # layered over the sweep file: refused in the dry run
    rc = tune_window.main(["--dry-run", "--config", SWEEP_YAML, "--config", str(small),
                           f"experiment.workdir={tmp_path / 'w'}", f"storage.root={tmp_path / 'r'}",
                           f"tracking.uri=sqlite:///{tmp_path}/m.db"])
    assert rc == 2
    assert "sweep.metric = 'eval/fvd' is never logged with eval.extractor=synthc3d" in capsys.readouterr().err


# ------------------------------------------------------------------------------- one sweep start-up
def _experiments():
    import sys
    from pathlib import Path

    path = str(Path(__file__).resolve().parents[2] / "experiments")
    if path not in sys.path:
        sys.path.insert(0, path)


@pytest.fixture
def no_ray_init(monkeypatch):
    """Fails the test if anything calls ``ray.init`` (the suite's shared Ray may already be connected)."""
    import ray

    calls = []
    monkeypatch.setattr(ray, "init", lambda *a, **k: calls.append((a, k)) or (_ for _ in ()).throw(
        AssertionError(f"ray.init{a}{k} called")))
    yield calls
    assert not calls


@pytest.fixture
def recorded_startup(monkeypatch, tmp_path):
    """The start-up's steps recorded in order, Ray, data preparation and the Tuner replaced by stubs."""
    from arvid_ray import preflight, ray_session
    from arvid_ray.sweep import startup, tuner
    from arvid_ray.sweep.results import SweepResult, TrialSummary

    steps: list[tuple[str, object]] = []
    check_inputs = preflight.check_inputs

    def record_inputs(cfg, cluster=False):
        steps.append(("check_inputs", cfg.storage.root))
        check_inputs(cfg, cluster=cluster)

    def run_sweep(cfg, *, storage_path=None, restore=True, rows=None):
        steps.append(("run_sweep", (cfg.sweep.name, restore, None if rows is None else len(rows))))
        trial = TrialSummary("t1", "baseline", "TERMINATED", {}, {cfg.sweep.metric: 1.0, cfg.sweep.cost_metric: 0.1})
        return SweepResult(cfg.sweep.name, cfg.sweep.metric, cfg.sweep.cost_metric, trials=[trial], pareto=["t1"],
                           parent_run_id="p", tracking_uri=f"sqlite:///{tmp_path}/none.db")

    monkeypatch.setattr(preflight, "check_inputs", record_inputs)
    monkeypatch.setattr(ray_session, "connect", lambda num_cpus=None, **k: steps.append(("connect", num_cpus)))
    monkeypatch.setattr(startup, "prepare_inputs", lambda cfg: steps.append(("prepare_inputs", None)) or cfg)
    monkeypatch.setattr(tuner, "run_sweep", run_sweep)
    monkeypatch.setattr("arvid_ray.tracking.runs.ui_links", lambda result: {})
    monkeypatch.setenv("ARVID_STORAGE", str(tmp_path / "root"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/none.db")
    return steps


def _entry(name: str, tmp_path):
    """(main, argv prefix) of each entry point that launches a sweep."""
    _experiments()
    common = [f"experiment.workdir={tmp_path / 'work'}"]
    if name == "cli":
        return main, ["sweep", "--config", SWEEP_YAML, *common]
    if name == "tune_window":
        import tune_window

        return tune_window.main, common
    import reproduce_paper

    return reproduce_paper.main, ["--out-dir", str(tmp_path / "tables"), *common]


@pytest.mark.parametrize("entry", ["cli", "tune_window", "reproduce_paper"])
def test_every_sweep_entry_point_runs_the_same_startup(entry, recorded_startup, tmp_path, monkeypatch, capsys):
    """arvid-ray sweep, tune_window.py and reproduce_paper.py: storage root pinned on the driver, input
    pre-flight, then Ray through ray_session (local_cpus, or --num-cpus), then inputs, then the sweep."""
    from arvid_ray.ray_session import local_cpus

    fn, argv = _entry(entry, tmp_path)
    if entry == "reproduce_paper":
        import reproduce_paper

        monkeypatch.setattr(reproduce_paper, "_log_table", lambda *a, **k: None)
        monkeypatch.setattr(reproduce_paper, "trajectory_plot", lambda *a, **k: None)
    assert fn([*argv, "--smoke-test"]) == 0, capsys.readouterr().err
    names = [step for step, _ in recorded_startup]
    assert names == ["check_inputs", "connect", "prepare_inputs", "run_sweep"], recorded_startup
    assert dict(recorded_startup)["check_inputs"] == str(tmp_path / "root")  # ARVID_STORAGE read on the driver
    assert dict(recorded_startup)["connect"] == local_cpus()
    name, restore, rows = dict(recorded_startup)["run_sweep"]
    assert name == ("reproduce-smoke" if entry == "reproduce_paper" else "smoke") and restore is False
    assert (rows is not None) == (entry == "reproduce_paper")
    if entry != "reproduce_paper":
        out = capsys.readouterr().out
        assert "Sweep 'smoke': 1 trials (1 complete" in out and "mlflow ui --backend-store-uri" in out


def test_cli_sweep_refuses_a_missing_input_before_ray(recorded_startup, tmp_path, capsys, no_ray_init):
    """The pre-flight `arvid-ray sweep` skipped before: a missing data.source is one line and exit 2,
    before Ray starts or any run exists (the same line tune_window prints)."""
    missing = f"data.source={tmp_path / 'nowhere' / 'videos.parquet'}"
    assert main(["sweep", "--config", SWEEP_YAML, "--num-cpus", "3", missing]) == 2
    err = capsys.readouterr().err
    assert err.startswith("arvid-ray sweep: data.source=") and "does not exist" in err
    assert [step for step, _ in recorded_startup] == ["check_inputs"]
    _experiments()
    import tune_window

    assert tune_window.main([missing]) == 2
    assert capsys.readouterr().err.replace("tune_window", "arvid-ray sweep") == err


def test_cli_sweep_smoke_test_dry_run_is_tune_windows(tmp_path, monkeypatch, capsys, no_ray_init):
    """`arvid-ray sweep --smoke-test --dry-run` plans exactly what tune_window.py's does, starting nothing."""
    _experiments()
    import tune_window

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/m.db")
    common = [f"experiment.workdir={tmp_path / 'w'}", f"storage.root={tmp_path / 'r'}", "--num-cpus", "4"]
    assert main(["sweep", "--config", SWEEP_YAML, "--smoke-test", "--dry-run", *common]) == 0
    cli_out = capsys.readouterr().out
    assert tune_window.main(["--smoke-test", "--dry-run", *common]) == 0
    tw_out = capsys.readouterr().out
    assert "sweep: smoke under" in cli_out and "trials: 2 (1 sampled" in cli_out and "=> would launch" in cli_out
    assert cli_out.replace("arvid-ray sweep", "tune_window") == tw_out
    assert not (tmp_path / "m.db").exists() and not (tmp_path / "r" / "sweeps").exists()


def test_a_tokenizer_and_a_training_checkpoint_refusal_are_one_class_and_one_clean_exit_2(tmp_path, capsys):
    """Issue 25: two classes named CheckpointError (the CLI caught one). One class now: a bad tokenizer
    file and a bad training checkpoint are both refused in one line with exit 2 (the training one with its
    way out), both count as refusals of the sweep start-up, and the way out survives pickling (Ray)."""
    import pickle

    from arvid_ray.sweep.startup import refusals
    from arvid_ray.tokenizer import checkpoint_format, pretrained
    from arvid_ray.train import checkpoint as train_ckpt

    assert train_ckpt.CheckpointError is checkpoint_format.CheckpointError is pretrained.CheckpointError
    assert issubclass(train_ckpt.CheckpointError, ValueError) and issubclass(train_ckpt.CheckpointError, RuntimeError)

    step = tmp_path / "run" / "checkpoints" / "step_0000002"
    step.mkdir(parents=True)
    cfg = ExperimentConfig().replace(**{"experiment.workdir": str(tmp_path / "w"), "tracking.enabled": False})
    (step / "config.yaml").write_text(cfg.to_yaml())
    (step / "model.pt").write_bytes(b"not a torch file")  # a truncated or foreign weights file
    bad_tokenizer = tmp_path / "tokenizer.pt"
    bad_tokenizer.write_bytes(b"not a torch file either")

    with pytest.raises(train_ckpt.CheckpointError) as training:
        train_ckpt.load_checkpoint(step)
    with pytest.raises(train_ckpt.CheckpointError) as tokenizer:
        pretrained.load_checkpoint(bad_tokenizer)
    for refusal in (training.value, tokenizer.value):
        assert isinstance(refusal, refusals())
        again = pickle.loads(pickle.dumps(refusal))
        assert type(again) is type(refusal) and str(again) == str(refusal) and again.way_out == refusal.way_out
    assert training.value.way_out == train_ckpt.WAY_OUT and tokenizer.value.way_out == ""

    assert main(["evaluate", str(step)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("arvid-ray evaluate: error: ")
    assert str(step / "model.pt") in err and err.endswith(f"Way out: {train_ckpt.WAY_OUT}")

    assert main(["evaluate", str(step), f"tokenizer.name={bad_tokenizer}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("arvid-ray evaluate: error: ")
    assert str(bad_tokenizer) in err and "Way out" not in err  # no step_* advice for a tokenizer file
