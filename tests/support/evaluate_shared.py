"""What test_evaluate.py and test_evaluate_integration.py share (moved here from both when the tests were split)."""

from __future__ import annotations

from arvid_ray.config import ExperimentConfig


def _cfg(tmp_path, **over):
    base = {"experiment.workdir": str(tmp_path / "wd"), "tokenizer.name": "fsq", "eval.num_videos": 4,
            "eval.batch_size": 4, "eval.num_sample_videos": 2, "eval.drift_multipliers": [2],
            "synth.num_videos": 48, "tracking.enabled": False}
    return ExperimentConfig().replace(**{**base, **over})
