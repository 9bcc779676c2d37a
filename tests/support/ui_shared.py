"""What test_ui.py and test_ui_e2e.py share (moved here from both when the tests were split)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


_DRIVER = """
import sys, time, ray
from arvid_ray import console
verbose = sys.argv[1] == "1"
console.setup(verbose)
ray.init(runtime_env=console.runtime_env(verbose, {"env_vars": {"PYTHONPATH": %r}}))
import ray.data
def slow(b):
    time.sleep(0.3)
    return b
ray.data.range(64, override_num_blocks=8).map_batches(slow).materialize()   # consumed by this driver
@ray.remote
def in_worker():  # consumed inside a worker (as a Tune trial or Train worker does)
    import os, ray.data
    n = ray.data.range(64, override_num_blocks=8).map_batches(slow).count()
    return n, os.environ.get("RAY_ADDRESS") == ray.get_runtime_context().gcs_address
print("\\ncount, address pinned " + " ".join(map(str, ray.get(in_worker.remote()))), flush=True)  # one write
"""
