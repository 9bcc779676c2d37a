"""The one way arvid-ray connects to or starts Ray.

With ``RAY_ADDRESS`` set (a cluster's head, ``ray job submit``, KubeRay's RayJob) the process connects
to that cluster and never starts one; otherwise it starts a local Ray instance. Either way an already
connected process (a test session's shared instance, a notebook) is left as it is.
"""

from __future__ import annotations

import math
import os


def local_cpus(minimum: int = 4) -> int:
    """Logical CPUs for a local Ray: the machine's, and at least ``minimum`` (Ray Data's decode and
    tokenize stages need CPUs beside the training workers, or the dataset never starts)."""
    return max(minimum, os.cpu_count() or 1)


def cpus_for_workers(num_workers: int, cpus_per_worker: float, spare: int = 2) -> int:
    """Logical CPUs a local Ray needs for ``num_workers`` Train workers plus ``spare`` for Ray Data."""
    return math.ceil(max(1, num_workers) * cpus_per_worker) + spare


def connect(num_cpus: int | None = None, *, log_to_driver: bool = True) -> bool:
    """Connect to ``RAY_ADDRESS``, or start local Ray with ``num_cpus`` logical CPUs (default
    :func:`local_cpus`). Returns True if this call connected, False if the process already was."""
    import ray

    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:  # a cluster decides its own resources: Ray refuses num_cpus when connecting
        ray.init(address=address, log_to_driver=log_to_driver)
    else:
        ray.init(num_cpus=num_cpus or local_cpus(), log_to_driver=log_to_driver)
    return True
