"""MLflow tracking: the only module (besides the sweep's callback) that talks to MLflow.

Design trade-off: tracking must never be the reason a training run stalls, dies or loses a point. A
training step only appends a line to ``<run_dir>/metrics.jsonl`` (the run's own, plain record); a
background *shipper* thread tails that file and sends what is new to MLflow, together with queued
params, tags and artifacts. The file is the queue, so memory stays bounded however long the server is
away; when it answers again the shipper simply carries on from the last byte MLflow acknowledged (the
backlog is replayed into the same run, with the original timestamps, so a point sent twice is stored
once). What MLflow has not acknowledged when the run ends is written to ``<run_dir>/tracking.json``
(the journal: run id, acknowledged offset, pending operations, final status) and ``arvid-ray sync
RUN_DIR`` puts it in later. The cost is a second copy of every metric on disk and a thread per run.

Every MLflow call uses ``MlflowClient`` with an explicit run id (no global "active run"), so a sweep
driver, a Train worker and an evaluation can log into different runs from one process. Only rank 0
creates a Tracker with MLflow enabled; other ranks get none.
"""


from arvid_ray.tracking.journal import (
    JOURNAL_FILE,
    METRICS_FILE,
    end_open_run,
    read_journal,
    read_metrics_jsonl,
    sync_run,
    tracking_summary,
)
from arvid_ray.tracking.server import (
    RUN_NAME_TAG,
    TAG_PREFIXES,
    config_params,
    end_run,
    mask_uri,
    resolve_tracking_uri,
    ui_hint,
)
from arvid_ray.tracking.tracker import Tracker

__all__ = ["Tracker", "resolve_tracking_uri", "end_run", "read_metrics_jsonl", "ui_hint", "RUN_NAME_TAG",
           "TAG_PREFIXES", "mask_uri", "config_params",
           "sync_run", "tracking_summary", "read_journal", "end_open_run", "METRICS_FILE", "JOURNAL_FILE"]
