"""Every YAML under experiments/configs/ (sweeps included) loads into a validated ExperimentConfig
whose sweep search space names real config keys.

The dataset configs are documentation as much as configuration, so the tests also hold them to what
their comment block promises: where the data comes from, how to ingest it, and the paper's settings.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from arvid_ray.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"
ALL_YAMLS = sorted(p for p in CONFIGS.rglob("*") if p.suffix in (".yaml", ".yml"))
REAL_DATASETS = {  # file -> (conditioning, num_classes or None when unused)
    "ucf101.yaml": ("class", 101),
    "sky_timelapse.yaml": ("none", None),
    "taichi.yaml": ("none", None),
    "ffs.yaml": ("none", None),
    "t2v_captions.yaml": ("text", None),
}
PAPER_PRESETS = [*REAL_DATASETS, "paper_B.yaml"]


def _rel(path: Path) -> str:
    return str(path.relative_to(CONFIGS))


def test_the_promised_configs_exist():
    names = {p.name for p in CONFIGS.glob("*.yaml")}
    assert {*REAL_DATASETS, "synthetic_debug.yaml", "paper_B.yaml"} <= names


@pytest.mark.parametrize("path", ALL_YAMLS, ids=_rel)
def test_config_loads_and_validates(path):
    cfg = load_config(path)
    # Round trip: what MLflow records as params rebuilds the same config.
    assert type(cfg).from_flat(cfg.to_flat()) == cfg
    # Every key written in the file is a real config field (load_config already rejects unknown keys;
    # this also catches a section written as a scalar, which YAML allows).
    raw = yaml.safe_load(path.read_text()) or {}
    flat = cfg.to_flat()
    for section, fields in raw.items():
        assert isinstance(fields, dict), f"{_rel(path)}: section '{section}' must be a mapping"
        for key in fields:
            dotted = f"{section}.{key}"
            assert dotted in flat or any(k.startswith(dotted + ".") for k in flat), dotted


@pytest.mark.parametrize("path", ALL_YAMLS, ids=_rel)
def test_search_space_names_real_keys(path):
    """`tune_window.py --config FILE` sweeps FILE's `sweep.search_space`: every key must be a config key,
    and every pre-launch sweep check (when:, metric vs extractor, batch divisibility) passes."""
    from arvid_ray.search import check_sweep

    cfg = load_config(path)
    dims = check_sweep(cfg)
    if path.name in PAPER_PRESETS or path.name == "synthetic_debug.yaml":
        swept = {d.key for d in dims}
        assert {"objective.window_frames", "objective.reco_weight"} <= swept, "the knobs the paper leaves open"


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_settings(name):
    """lr 1e-4, 17 frames (5 latent), local window 2 of 5, balanced first frame 0.5, ReCo 0.1, preset B."""
    cfg = load_config(CONFIGS / name)
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.data.num_frames == 17 and cfg.latent_frames() == 5
    assert (cfg.objective.kind, cfg.objective.window_frames) == ("local", 2)
    assert cfg.objective.first_frame_prob == pytest.approx(0.5)
    assert cfg.objective.reco_weight == pytest.approx(0.1)
    assert cfg.model.preset == "B" and cfg.data.resolution == 128
    assert cfg.train.use_gpu, "paper-scale presets are meant for GPU clusters"


@pytest.mark.parametrize("name", sorted(REAL_DATASETS))
def test_real_dataset_configs(name):
    conditioning, num_classes = REAL_DATASETS[name]
    cfg = load_config(CONFIGS / name)
    assert cfg.model.conditioning == conditioning
    if num_classes is not None:
        assert cfg.model.num_classes == num_classes
    assert cfg.data.source != "synthetic", "a real-dataset config must point at its ingested videos.parquet"
    assert cfg.data.source.endswith("videos.parquet")
    # FVD is only honest from a real I3D; the built-in SynthC3D extractor knows only synthetic shapes.
    assert cfg.eval.extractor == "i3d" and cfg.sweep.metric == "eval/fvd"


@pytest.mark.parametrize("name", sorted(REAL_DATASETS))
def test_dataset_comment_block_says_where_and_how(name):
    text = (CONFIGS / name).read_text()
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    header_text = "\n".join(header)
    assert re.search(r"https://\S+", header_text), f"{name}: the header must give the official data URL"
    ingest = re.search(r"arvid-ray ingest (\S+) (\S+) --config (\S+)", header_text)
    assert ingest, f"{name}: the header must show the `arvid-ray ingest SRC OUT --config ...` command"
    assert ingest.group(3) == f"experiments/configs/{name}"
    # The ingest output is where data.source points.
    cfg = load_config(CONFIGS / name)
    assert cfg.data.source == ingest.group(2).rstrip("/") + "/videos.parquet"
    assert "17" in header_text and "Paper" in header_text


def test_typo_key_fails_naming_the_field(tmp_path):
    text = (CONFIGS / "ucf101.yaml").read_text().replace("  window_frames: 2", "  window_frame: 2")
    bad = tmp_path / "typo.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=r"objective\.window_frame\b.*allowed in 'objective'.*window_frames"):
        load_config(bad)


def test_typo_section_fails_naming_the_section(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text((CONFIGS / "synthetic_debug.yaml").read_text().replace("objective:", "objectives:"))
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) objectives"):
        load_config(bad)
