"""MLflow tracking: the only module (besides the sweep's callback) that talks to MLflow.

Design trade-off: tracking must never be the reason a training run dies. Every MLflow call goes through
``MlflowClient`` with an explicit run id (no global "active run", so a sweep driver, a Train worker and
an evaluation can log into different runs from one process), is guarded, and on the first failure the
tracker logs one warning and turns itself off. Independently of MLflow, metrics are appended to
``<run_dir>/metrics.jsonl`` so nothing is lost when the server is down; the cost is a second, plain copy
of the metrics on local disk.

Only rank 0 creates a Tracker with MLflow enabled; other ranks get a disabled one (all methods no-op).
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from arvid_ray.config import ExperimentConfig

log = logging.getLogger(__name__)

__all__ = ["Tracker", "resolve_tracking_uri", "end_run", "read_metrics_jsonl", "ui_hint", "RUN_NAME_TAG"]

_STATUSES = ("FINISHED", "FAILED", "KILLED", "RUNNING")
RUN_NAME_TAG = "arvid.run_name"  # the stable training-run name; a re-launch resumes the run carrying it


def resolve_tracking_uri(cfg: ExperimentConfig) -> str:
    """cfg.tracking.uri, else MLFLOW_TRACKING_URI, else an absolute sqlite file under the workdir.

    Always absolute: Ray workers change directory, so a relative sqlite path would point elsewhere.
    """
    uri = cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            return "sqlite:///" + str(Path(uri[len("sqlite:///") :]).expanduser().resolve())
        return uri
    return f"sqlite:///{cfg.experiment.workdir_path() / 'mlruns.db'}"


def ui_hint(uri: str) -> str:
    """How to open the MLflow UI for ``uri``: a running server is opened in a browser (through an SSH
    tunnel on a cluster); a local store (sqlite / directory) is served with ``mlflow ui``."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser (tunnel the port first when it is on a remote head node)"
    return f"mlflow ui --backend-store-uri {uri}"


def _reachable(uri: str, timeout: float = 3.0) -> str | None:
    """None if the tracking URI looks usable, else the reason (fast: no MLflow client retries)."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
                return None if resp.status < 500 else f"HTTP {resp.status}"
        except Exception as exc:  # noqa: BLE001 - any network failure means unreachable
            return f"{type(exc).__name__}: {exc}"
    if uri.startswith("sqlite:///"):
        parent = Path(uri[len("sqlite:///") :]).parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot create {parent}: {exc}"
    return None


def _param_value(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def read_metrics_jsonl(run_dir: str | Path) -> list[dict[str, Any]]:
    """The metrics a run kept locally, one dict per logged step."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Tracker:
    """One MLflow run (created, or resumed by id) plus a local JSONL copy of its metrics.

    ``enabled=False`` (or ``cfg.tracking.enabled=False``) disables MLflow; the JSONL copy is still written
    when ``run_dir`` is given.
    """

    def __init__(
        self, cfg: ExperimentConfig, run_dir: str | Path | None = None, *, enabled: bool | None = None
    ):
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.enabled = cfg.tracking.enabled if enabled is None else enabled
        self.uri = resolve_tracking_uri(cfg) if self.enabled else None
        self.run_id: str | None = None
        self._client = None
        self._monitor = None

    # ---------------------------------------------------------------------------------- lifecycle
    def start(
        self,
        run_name: str | None = None,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        resume_by_name: bool = False,
    ) -> str | None:
        """Create a run (nested under cfg.tracking.parent_run_id if set), or resume ``run_id`` /
        cfg.tracking.run_id, or (``resume_by_name``) the run tagged with this stable ``run_name``.
        Returns the run id, or None when tracking is off or unreachable."""
        if not self.enabled:
            return None
        reason = _reachable(self.uri)
        if reason is not None:
            return self._disable(f"tracking server {self.uri} is unreachable ({reason})")
        resume_id = run_id or self.cfg.tracking.run_id
        try:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
            if not resume_id and resume_by_name and run_name:
                resume_id = self._find_by_name(run_name)
            if resume_id:
                self._client.update_run(resume_id, status="RUNNING")
                self.run_id = resume_id
            else:
                all_tags = {**dict(tags or {}), **({RUN_NAME_TAG: run_name} if run_name else {})}
                if self.cfg.tracking.parent_run_id:
                    all_tags["mlflow.parentRunId"] = self.cfg.tracking.parent_run_id
                run = self._client.create_run(self._experiment_id(), tags=all_tags, run_name=run_name)
                self.run_id = run.info.run_id
        except Exception as exc:  # noqa: BLE001 - tracking must not kill training
            return self._disable(f"could not start an MLflow run at {self.uri}: {exc}")
        if self.cfg.tracking.system_metrics:
            self._start_system_metrics(resume=bool(resume_id))
        log.info("MLflow run %s (experiment '%s') at %s", self.run_id, self.cfg.experiment.name, self.uri)
        return self.run_id

    def end(self, status: str = "FINISHED") -> None:
        """End the run with an MLflow status (FINISHED, FAILED, KILLED)."""
        if status not in _STATUSES:
            raise ValueError(f"run status {status!r} is not one of {', '.join(_STATUSES)}")
        if self._monitor is not None:
            self._guard(self._monitor.finish)
            self._monitor = None
        if self.active:
            self._guard(self._client.set_terminated, self.run_id, status=status)

    @property
    def active(self) -> bool:
        return self._client is not None and self.run_id is not None

    # ---------------------------------------------------------------------------------- logging
    def log_params(self, params: Mapping[str, Any] | None = None) -> None:
        """Log params (default: the resolved config flattened with dotted keys)."""
        if not self.active:
            return
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)[:6000]) for k, v in (params or self.cfg.to_flat()).items()]
        for i in range(0, len(items), 100):  # MLflow's per-batch limit
            if not self._guard(self._client.log_batch, self.run_id, params=items[i : i + 100]):
                return

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Append to the run directory's metrics.jsonl and log to MLflow (slash-separated names)."""
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": int(step), "time": time.time(), **clean}) + "\n")
        if not self.active:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, int(step)) for k, v in clean.items()]
        for i in range(0, len(items), 1000):
            if not self._guard(self._client.log_batch, self.run_id, metrics=items[i : i + 1000]):
                return

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.active:
            return
        from mlflow.entities import RunTag

        self._guard(self._client.log_batch, self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.active:
            self._guard(self._client.log_artifact, self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        if self.active:
            self._guard(self._client.log_artifacts, self.run_id, str(directory), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.active:
            self._guard(self._client.log_text, self.run_id, text, artifact_file)

    def log_config(self) -> None:
        """Params = flattened config, artifact config.yaml (also kept in the run directory)."""
        text = self.cfg.to_yaml()
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(text)
        self.log_params()
        self.log_text(text, "config.yaml")

    # ---------------------------------------------------------------------------------- internals
    def _experiment_id(self) -> str:
        name = self.cfg.experiment.name
        exp = self._client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return self._client.create_experiment(name)
        except Exception:  # another process created it first
            exp = self._client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def _find_by_name(self, run_name: str) -> str | None:
        found = self._client.search_runs(
            [self._experiment_id()],
            filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        return found[0].info.run_id if found else None

    def _start_system_metrics(self, resume: bool) -> None:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._monitor = SystemMetricsMonitor(
                self.run_id, sampling_interval=10, resume_logging=resume, tracking_uri=self.uri
            )
            self._monitor.start()
        except Exception as exc:  # noqa: BLE001 - optional (needs psutil)
            log.warning("MLflow system metrics are off: %s", exc)
            self._monitor = None

    def _guard(self, fn, *args, **kwargs) -> bool:
        try:
            fn(*args, **kwargs)
            return True
        except Exception as exc:  # noqa: BLE001 - tracking must not kill training
            self._disable(f"MLflow call {getattr(fn, '__name__', fn)} failed: {exc}")
            return False

    def _disable(self, why: str) -> None:
        where = f"; metrics are kept in {self.run_dir / 'metrics.jsonl'}" if self.run_dir else ""
        log.warning("%s — continuing without MLflow%s", why, where)
        self._client = None
        return None


def end_run(cfg: ExperimentConfig, run_id: str, status: str = "FINISHED") -> None:
    """End an existing run by id (e.g. a sweep's child run of a trial that ASHA stopped)."""
    tracker = Tracker(cfg.replace(**{"tracking.system_metrics": False}))
    if tracker.start(run_id=run_id):
        tracker.end(status)
