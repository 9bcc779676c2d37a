"""Where a run lives and its stable name; what Ray workers need resolved on the driver.

Design trade-off: run names are *stable* — ``train.run_name`` or experiment name + a short hash of the
resolved config (no timestamp) — so re-launching the same config, a Ray retry or a Tune restore resumes
from the run's latest checkpoint instead of starting over; the price is that two deliberately separate
runs of one config must be given different ``train.run_name``s. Everything that says where a run's files
go (Train storage, the run directory, a local staging directory when that is remote) is derived here
from the config alone, so the launcher, the trial driver and the evaluator agree without talking.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from arvid_ray.config import ExperimentConfig, identity_params
from arvid_ray.tracking.server import resolve_tracking_uri

__all__ = ["run_name", "train_storage", "run_location", "resolve_for_workers", "local_run_dir", "sync_run_dir"]


def run_name(cfg: ExperimentConfig) -> str:
    """cfg.train.run_name, else '<experiment>-<8 hex of the config hash>' (stable, no timestamp)."""
    if cfg.train.run_name:
        return cfg.train.run_name
    # the keys hashed are the ones in the run's identity (field roles: arvid_ray/config/base.py)
    flat = identity_params(cfg)
    digest = hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{cfg.experiment.name}-{digest}"


def train_storage(cfg: ExperimentConfig) -> str:
    """Ray Train storage: ``train.storage_path`` (local dir or URI), else ``<storage root>/runs``."""
    from arvid_ray import storage as st

    path = cfg.train.storage_path
    return st.absolute(path) if path else st.join(st.storage_root(cfg), "runs")


def run_location(cfg: ExperimentConfig) -> str:
    """The run's directory under Train storage (metrics.jsonl, eval samples, fault marker): a local path
    on one machine, a URI under the storage root on a cluster."""
    from arvid_ray import storage as st

    return st.join(train_storage(cfg), run_name(cfg))


def resolve_for_workers(cfg: ExperimentConfig) -> ExperimentConfig:
    """Make every path and URI absolute and fix the run name and storage root: Ray workers run in another
    directory, on other nodes, with another environment (ARVID_STORAGE is read here, on the driver)."""
    from arvid_ray import storage as st

    return cfg.replace(
        **{
            "experiment.workdir": str(cfg.experiment.workdir_path()),
            "storage.root": st.storage_root(cfg),
            "tracking.uri": resolve_tracking_uri(cfg) if cfg.tracking.enabled else cfg.tracking.uri,
            "train.run_name": run_name(cfg),
        }
    )


def local_run_dir(cfg: ExperimentConfig) -> Path:
    """A local directory for the run's files: the run location itself when it is local, else a staging
    directory on this node whose contents are uploaded to the run location (``sync_run_dir``)."""
    import tempfile

    from arvid_ray import storage as st

    where = run_location(cfg)
    if not st.is_remote(where):
        return Path(where)
    return Path(tempfile.gettempdir()) / "arvid-ray-runs" / run_name(cfg)


def sync_run_dir(cfg: ExperimentConfig, local: Path) -> None:
    """Upload the staged run files to the run location when it is remote (no-op locally)."""
    from arvid_ray import storage as st

    where = run_location(cfg)
    if st.is_remote(where) and local.is_dir():
        st.upload_dir(str(local), where, cfg.storage)
