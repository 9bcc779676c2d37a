"""What test_ingest.py and test_ingest_integration.py share (moved here from both when the tests were split)."""

from __future__ import annotations

from arvid_ray.config import ExperimentConfig


def _cfg(**flat) -> ExperimentConfig:
    return ExperimentConfig.from_flat({"data.decode_cpus": 0.5, **flat})
