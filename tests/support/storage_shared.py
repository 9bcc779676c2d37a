"""What test_storage.py and test_storage_integration.py share (moved here from both when the tests were split)."""

from __future__ import annotations

from arvid_ray.preflight import (
    NodeType,
)

HEAD = NodeType("head", {"CPU": 4.0, "arvid_driver": 100.0}, 1)


GPU8 = NodeType("gpu", {"CPU": 96.0, "GPU": 8.0, "accelerator_type:H100": 1.0}, 4)
