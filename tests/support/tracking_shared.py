"""What test_tracking.py and test_tracking_integration.py share (moved here from both when the tests were split)."""

from __future__ import annotations

from arvid_ray.config import ExperimentConfig


def _cfg(uri: str | None, **extra) -> ExperimentConfig:
    return ExperimentConfig().replace(
        **{
            "tracking.uri": uri,
            "experiment.name": "arvid-tracking-test",
            "tracking.system_metrics": False,
            **extra,
        }
    )
