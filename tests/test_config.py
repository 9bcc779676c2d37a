from __future__ import annotations

import pytest

from arvid_ray.config import ConfigError, ExperimentConfig, load_config


def test_defaults_validate_and_round_trip():
    cfg = ExperimentConfig()
    assert cfg.latent_shape() == (5, 8, 8)
    again = ExperimentConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert ExperimentConfig.from_flat(cfg.to_flat()) == cfg


def test_overrides_parse_yaml_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("objective:\n  kind: full\ntrain:\n  steps: 7\n")
    cfg = load_config(path, ["train.lr=1e-3", "tokenizer.fsq_levels=[8,8,8]", "objective.first_frame_prob=null"])
    assert cfg.objective.kind == "full"
    assert cfg.train.steps == 7 and cfg.train.lr == pytest.approx(1e-3)
    assert cfg.tokenizer.fsq_levels == (8, 8, 8)
    assert cfg.objective.first_frame_prob is None


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("objective.kind=half", "allowed values"),
        ("objective.window_frames=9", "window is larger than the clip"),
        ("objective.stride_frames=3", "objective.stride_frames"),
        ("objective.reco_weight=-0.1", "objective.reco_weight"),
        ("train.steps=abc", "must be an integer"),
        ("trian.steps=3", "unknown config key"),
        ("data.num_frames=16", r"1 \+ k\*4"),
        ("badly-formed", "section.field=value"),
        # a 1-frame Fewer-Frames model trained to the end and then failed evaluation (no previous frame to
        # condition a block on): refused at config time, naming the field
        ("fewer_frames.num_frames=1", r"'fewer_frames.num_frames' = 1 is invalid: must be >= 2"),
    ],
)
def test_invalid_values_name_the_field(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(None, [override])


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_replace_is_typed():
    cfg = ExperimentConfig().replace(**{"objective.kind": "full", "train.steps": 3})
    assert cfg.objective.kind == "full" and cfg.train.steps == 3
