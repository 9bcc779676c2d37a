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
    assert changed["train"] == {"steps": 400, "global_batch_size": 8, "lr": 1.0e-3, "ckpt_every": 0}
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

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments"))
    import tune_window

    small = tmp_path / "small.yaml"
    small.write_text("sweep:\n  metric: eval/fvd\n")  # layered over the sweep file: refused in the dry run
    rc = tune_window.main(["--dry-run", "--config", SWEEP_YAML, "--config", str(small),
                           f"experiment.workdir={tmp_path / 'w'}", f"storage.root={tmp_path / 'r'}",
                           f"tracking.uri=sqlite:///{tmp_path}/m.db"])
    assert rc == 2
    assert "sweep.metric = 'eval/fvd' is never logged with eval.extractor=synthc3d" in capsys.readouterr().err
