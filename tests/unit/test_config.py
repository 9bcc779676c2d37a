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


# ---- override parsing traps (issue 25) --------------------------------------------------------------
@pytest.mark.parametrize("word", ["yes", "no", "on", "off", "Yes", "y"])
def test_yaml11_booleans_are_refused_for_bool_fields(word):
    """YAML 1.1 reads yes/on as true: `train.use_gpu=yes` would launch GPU workers nobody asked for."""
    with pytest.raises(ConfigError, match=rf"'train.use_gpu' = '{word}' is invalid: must be true or false"):
        load_config(None, [f"train.use_gpu={word}"])


def test_yaml11_booleans_are_refused_in_files_too(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  use_gpu: yes\n")
    with pytest.raises(ConfigError, match="train.use_gpu"):
        load_config(path)


def test_true_false_and_on_off_literals_still_parse():
    cfg = load_config(None, ["train.use_gpu=true", "train.compile=False", "sampling.compile=on"])
    assert cfg.train.use_gpu is True and cfg.train.compile is False and cfg.sampling.compile == "on"


@pytest.mark.parametrize("raw, expected", [("2026", "2026"), ("1e3", "1e3"), ("yes", "yes"), ("'2026'", "2026"),
                                           ("run: 1", "run: 1")])
def test_str_fields_take_the_override_text(raw, expected):
    assert load_config(None, [f"experiment.name={raw}"]).experiment.name == expected


def test_optional_str_fields_still_take_null():
    assert load_config(None, ["train.storage_path=null"]).train.storage_path is None
    assert load_config(None, ["train.storage_path=2026"]).train.storage_path == "2026"


def test_config_files_layer_later_over_earlier(tmp_path):
    base, small = tmp_path / "base.yaml", tmp_path / "small.yaml"
    base.write_text("train:\n  steps: 400\n  lr: 0.001\nsweep:\n  search_space:\n"
                    "    objective.reco_weight: {type: loguniform, low: 0.01, high: 1.0}\n"
                    "    objective.window_frames: {type: int, low: 1, high: 4}\n")
    small.write_text("train:\n  steps: 12\nsweep:\n  search_space:\n"
                     "    objective.window_frames: {type: int, low: 1, high: 2}\n")
    cfg = load_config([base, small], ["train.lr=0.01"])
    assert cfg.train.steps == 12  # the later file wins
    assert cfg.train.lr == 0.01  # overrides win over every file
    assert load_config([base, small]).train.lr == 0.001  # fields the later file does not set are kept
    # a field is replaced whole: the later file's search space, not a merge of both
    assert list(cfg.sweep.search_space) == ["objective.window_frames"]
    with pytest.raises(ConfigError, match="'missing.yaml' does not exist"):
        load_config([base, "missing.yaml"])


def test_every_config_key_is_listed_with_its_default_and_docstring():
    from arvid_ray.config import config_keys

    keys = config_keys()
    assert [k for k, _, _ in keys] == list(ExperimentConfig().to_flat())  # every key, in declaration order
    assert all(doc for _, _, doc in keys), [k for k, _, doc in keys if not doc]
    listed = {k: (default, doc) for k, default, doc in keys}
    assert listed["train.steps"] == (200, "Optimizer steps (with train.budget_gpu_hours: the most it may take).")


def test_a_negative_price_is_refused_even_when_the_peak_table_has_the_same_key():
    with pytest.raises(ConfigError, match="cost table entry 'cpu'"):
        load_config(None, ["cost.price_per_hour={cpu: -1}"])
    with pytest.raises(ConfigError, match="cost table entry 'H100'"):
        load_config(None, ["cost.peak_tflops={H100: -1}"])


def test_the_deprecated_report_interval_still_loads_and_says_what_replaced_it():
    """train.report_interval_s is read by nothing since train.report_every replaced it: a config that sets it
    loads (it stays a key) and a warning names the replacement."""
    with pytest.warns(DeprecationWarning, match="train.report_every"):
        cfg = ExperimentConfig().replace(**{"train.report_interval_s": 1.0})
    assert cfg.train.report_interval_s == 1.0
