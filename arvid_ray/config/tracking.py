"""Where a run's files go (storage) and where it is logged (tracking): bookkeeping, never identity."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from arvid_ray.config.base import BOOKKEEPING, _check_range, _fail, role


@dataclass(frozen=True)
class StorageConfig:
    root: Optional[str] = field(default=None, metadata=role(BOOKKEEPING))
    """Storage root every node can read (s3://bucket/prefix, gs://bucket/prefix or a shared mount): ingested
    videos, token caches, synthetic data, Tune/Train storage, run directories, eval samples and tracking
    fallbacks live under it. None = $ARVID_STORAGE, else experiment.workdir (one machine)."""
    s3_endpoint: Optional[str] = field(default=None, metadata=role(BOOKKEEPING))
    """S3-compatible endpoint URL (e.g. http://127.0.0.1:9000); None = AWS default / AWS_ENDPOINT_URL."""
    s3_region: Optional[str] = field(default=None, metadata=role(BOOKKEEPING))
    """S3 region; None = AWS_REGION / AWS_DEFAULT_REGION, else asked of the bucket (cached per bucket)."""
    s3_anonymous: bool = field(default=False, metadata=role(BOOKKEEPING))
    """Access public buckets without credentials."""
    gcs_endpoint: Optional[str] = field(default=None, metadata=role(BOOKKEEPING))
    """GCS endpoint (host:port or http://host:port, e.g. an emulator); None = Google's / STORAGE_EMULATOR_HOST."""
    gcs_project: Optional[str] = field(default=None, metadata=role(BOOKKEEPING))
    """GCP project for gs:// buckets; None = the environment's default credentials' project."""
    gcs_anonymous: bool = field(default=False, metadata=role(BOOKKEEPING))
    """Access public gs:// buckets without credentials."""

    def __post_init__(self) -> None:
        if self.root is not None and (not self.root.strip() or self.root.rstrip("/").endswith(":/")):
            _fail("storage.root", self.root, "must be a path or a URI with a bucket, e.g. s3://bucket/arvid")


@dataclass(frozen=True)
class TrackingConfig:
    enabled: bool = field(default=True, metadata=role(BOOKKEEPING))
    """Log to MLflow (False = no-op; metrics still go to the run directory)."""
    uri: Optional[str] = field(default=None, metadata=role(BOOKKEEPING))
    """Tracking URI; None = MLFLOW_TRACKING_URI or sqlite:///<workdir>/mlruns.db."""
    system_metrics: bool = field(default=True, metadata=role(BOOKKEEPING))
    """Log MLflow system metrics (CPU, memory, GPU)."""
    parent_run_id: Optional[str] = field(default=None, metadata=role(BOOKKEEPING))
    """Set by the sweep: child runs are nested under this run."""
    run_id: Optional[str] = field(default=None, metadata=role(BOOKKEEPING))
    """Set by the sweep: log into this existing (child) run instead of creating one."""
    flush_timeout_s: float = field(default=30.0, metadata=role(BOOKKEEPING))
    """At a run's end, wait at most this long for MLflow to take the backlog (the rest: `arvid-ray sync`)."""

    def __post_init__(self) -> None:
        _check_range("tracking.flush_timeout_s", self.flush_timeout_s, 0)
