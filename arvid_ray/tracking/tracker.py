"""``Tracker``: one MLflow run fed from the run directory's metrics.jsonl by a background shipper."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from arvid_ray.config import ExperimentConfig
from arvid_ray.tracking.journal import _JournalKeeper, tracking_summary
from arvid_ray.tracking.server import (
    RUN_NAME_TAG,
    config_params,
    experiment_id,
    mask_uri,
    param_value,
    reachable,
    resolve_tracking_uri,
)
from arvid_ray.tracking.shipper import _STALL_S, _Shipper

log = logging.getLogger(__name__)

_STATUSES = ("FINISHED", "FAILED", "KILLED", "RUNNING")
_MONITOR_STOP_S = 5.0  # end(): the longest wait for MLflow's system-metrics thread (its requests retry for minutes)


class Tracker(_Shipper, _JournalKeeper):
    """One MLflow run (created, or resumed by id) fed from the run directory's metrics.jsonl.

    ``enabled=False`` (or ``cfg.tracking.enabled=False``) disables MLflow; the JSONL copy is still written
    when ``run_dir`` is given. No method waits on the tracking server except ``start`` (a bounded check)
    and ``end``/``flush`` (at most ``cfg.tracking.flush_timeout_s``). A resumed run (by id, as every Ray
    Train worker resumes the run its driver created) is reopened by the shipper, and MLflow's system-metrics
    monitor (which looks the run up on start and every sample, each request retried for minutes while the
    server is away) is started and stopped off the caller's thread.
    """

    def __init__(
        self, cfg: ExperimentConfig, run_dir: str | Path | None = None, *, enabled: bool | None = None
    ):
        self.cfg = cfg
        self.enabled = cfg.tracking.enabled if enabled is None else enabled
        self.uri = resolve_tracking_uri(cfg) if self.enabled else None
        from arvid_ray import storage

        where = None if run_dir is None else str(run_dir)
        self.remote_dir = where if where is not None and storage.is_remote(where) else None
        self.run_dir = (self._spool(self.remote_dir) if self.remote_dir
                        else Path(storage.absolute(where)) if where is not None else None)
        self.run_id: str | None = None
        self._client = None
        self._monitor = None
        self._monitor_stop: threading.Event | None = None  # set once the system metrics are to stop
        self._ops: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._scratch_lock = threading.Lock()  # the shipper and the caller may both ask for it first
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._file = None
        self._tmp: Path | None = None
        self._down_since: float | None = None
        self._next_probe = 0.0
        self._last_ok = time.monotonic()
        self._catching_up = False
        self._busy_since: float | None = None  # when the shipper's current request started
        self._owns_status = True  # end() sets the run's status (not for a run logged into with reopen=False)
        self._state: dict[str, Any] = {"sent_bytes": 0, "sent_points": 0, "outages": 0, "down_s": 0.0,
                                       "replayed_points": 0, "status": None, "pending_ops": []}

    # ---------------------------------------------------------------------------------- lifecycle
    def start(
        self,
        run_name: str | None = None,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        resume_by_name: bool = False,
        reopen: bool = True,
    ) -> str | None:
        """Create a run (nested under cfg.tracking.parent_run_id if set), or resume ``run_id`` /
        cfg.tracking.run_id, or (``resume_by_name``) the run tagged with this stable ``run_name``.
        ``reopen=False``: log into a resumed run without touching its status (``end`` leaves it too).
        Returns the run id, or None when tracking is off or unreachable (then the journal keeps what
        ``arvid-ray sync`` needs to create the run later)."""
        if not self.enabled:
            return None
        all_tags = {**dict(tags or {}), **({RUN_NAME_TAG: run_name} if run_name else {})}
        if self.cfg.tracking.parent_run_id:
            all_tags["mlflow.parentRunId"] = self.cfg.tracking.parent_run_id
        self._state.update(uri=self.uri, experiment=self.cfg.experiment.name, run_name=run_name, tags=all_tags)
        resume_id = run_id or self.cfg.tracking.run_id
        reason = reachable(self.uri)
        if reason is not None:
            return self._offline(f"tracking server {self.uri} is unreachable ({reason})", resume_id)
        try:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
            if not resume_id and resume_by_name and run_name:
                resume_id = self._find_by_name(run_name)
            if resume_id:
                self._owns_status = reopen
                self.run_id = resume_id
            else:
                run = self._client.create_run(self._experiment_id(), tags=all_tags, run_name=run_name)
                self.run_id = run.info.run_id
        except Exception as exc:  # noqa: BLE001 - tracking must not kill training
            self._client = None
            return self._offline(f"could not start an MLflow run at {self.uri}: {exc}", resume_id)
        self._adopt_journal()
        if resume_id and reopen:  # sent first by the shipper: no request on this thread
            self._queue({"op": "reopen"})
        if self.cfg.tracking.system_metrics:
            self._start_system_metrics(resume=bool(resume_id))
        log.info("MLflow run %s (experiment '%s') at %s", self.run_id, self.cfg.experiment.name, mask_uri(self.uri))
        return self.run_id

    def end(self, status: str = "FINISHED") -> None:
        """End the run with an MLflow status (FINISHED, FAILED, KILLED): wait (bounded) until MLflow has
        everything, else leave the rest in the journal for ``arvid-ray sync``."""
        if status not in _STATUSES:
            raise ValueError(f"run status {status!r} is not one of {', '.join(_STATUSES)}")
        self._stop_system_metrics()
        if self.enabled and (self.run_id or self.run_dir is not None):
            if self._owns_status:
                self._queue({"op": "terminate", "status": status, "end_time": int(time.time() * 1000)})
                self._state["status"] = status
            done = self.flush(self.cfg.tracking.flush_timeout_s)
            self._stop_shipper()
            self._save_journal()
            if not done and self.run_dir is not None:
                log.warning("%s", tracking_summary(self.remote_dir or self.run_dir))
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until MLflow has every point and operation; True when it has."""
        if self._thread is None:
            return self._caught_up()
        deadline = time.monotonic() + max(0.0, timeout)
        while not self._caught_up():
            if time.monotonic() >= deadline or not self._thread.is_alive():
                return False
            self._wake.set()
            time.sleep(0.05)
        return True

    @property
    def active(self) -> bool:
        return self._client is not None and self.run_id is not None

    @property
    def interrupted(self) -> bool:
        """True once the tracking server failed to answer during this run."""
        return self._state["outages"] > 0

    # ---------------------------------------------------------------------------------- logging
    def log_params(self, params: Mapping[str, Any] | None = None) -> None:
        """Log params (default: the resolved config's hyper-parameters, see ``config_params``)."""
        items = ({k: param_value(v)[:6000] for k, v in params.items()} if params is not None
                 else config_params(self.cfg)[0])
        self._queue({"op": "params", "params": items})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Append to the run directory's metrics.jsonl; the shipper sends it to MLflow (never blocks on
        the server, except for a bounded flush after the run's last step: code after Ray Train's last
        report may never run under Tune)."""
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        path = self._metrics_path()
        if path is None:
            return
        if self._file is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a")  # noqa: SIM115 - kept open for the run (one write per step)
        self._file.write(json.dumps({"step": int(step), "time": time.time(), **clean}) + "\n")
        self._file.flush()
        self._start_shipper()
        self._wake.set()
        busy = self._busy_since
        if busy is not None and self._down_since is None and time.monotonic() - busy > _STALL_S:
            self._mark_down(f"no reply for {time.monotonic() - busy:.0f} s")  # cheap: state and one log line
        last = int(step) >= self.cfg.train.steps or clean.get("train/budget_stop", 0.0) > 0  # the run's end
        if self._thread is not None and self.cfg.train.steps > 0 and last:
            self.flush(self.cfg.tracking.flush_timeout_s)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._queue({"op": "tags", "tags": {k: str(v) for k, v in tags.items()}})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._queue({"op": "artifact", "path": str(Path(path).resolve()), "artifact_path": artifact_path})

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        self._queue({"op": "artifacts", "path": str(Path(directory).resolve()), "artifact_path": artifact_path})

    def log_text(self, text: str, artifact_file: str) -> None:
        if not self._wanted():
            return
        base = (self.run_dir / ".artifacts") if self.run_dir is not None else self._scratch()
        target = base / artifact_file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        sub = Path(artifact_file).parent.as_posix()
        self.log_artifact(target, None if sub == "." else sub)

    def log_config(self) -> None:
        """Params = the config's hyper-parameters, tags = its bookkeeping fields (``config_params``),
        artifact config.yaml with credentials masked (also kept in the run directory)."""
        text = mask_uri(self.cfg.to_yaml())
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(text)
        params, tags = config_params(self.cfg)
        self.log_params(params)
        self.set_tags(tags)
        self.log_text(text, "config.yaml")

    # ---------------------------------------------------------------------------------- internals
    def _experiment_id(self) -> str:
        return experiment_id(self._client, self.cfg.experiment.name)

    def _find_by_name(self, run_name: str) -> str | None:
        found = self._client.search_runs(
            [self._experiment_id()],
            filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        return found[0].info.run_id if found else None

    def _start_system_metrics(self, resume: bool) -> None:
        """MLflow's monitor, built on a thread of its own: on resume its constructor looks the run up
        (``runs/get``, retried for minutes when the server is away), which the caller must not wait for."""
        stop = self._monitor_stop = threading.Event()

        def build() -> None:
            try:
                from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

                monitor = SystemMetricsMonitor(self.run_id, sampling_interval=10, resume_logging=resume,
                                               tracking_uri=self.uri)
                with self._lock:
                    if stop.is_set():
                        return
                    self._monitor = monitor
                monitor.start()
            except Exception as exc:  # noqa: BLE001 - optional (needs psutil)
                log.warning("MLflow system metrics are off: %s", exc)

        threading.Thread(target=build, name=f"mlflow-system-metrics-{self.run_id}", daemon=True).start()

    def _stop_system_metrics(self) -> None:
        """Stop the monitor without waiting on the server: ``finish`` joins a thread that may sit in a
        retried ``runs/get`` and then sends the last sample (retried too), so it runs on a thread of its own
        and is waited for at most ``_MONITOR_STOP_S``; an unsent last sample is dropped (system metrics are
        samples, not the run's points)."""
        stop = self._monitor_stop
        if stop is None:
            return
        with self._lock:
            stop.set()
            monitor, self._monitor = self._monitor, None
        if monitor is None:
            return
        monitor._shutdown_event.set()  # the sampling loop checks it between samples
        done = threading.Thread(target=self._finish_monitor, args=(monitor,), daemon=True,
                                name=f"mlflow-system-metrics-stop-{self.run_id}")
        done.start()
        done.join(_MONITOR_STOP_S)
        if done.is_alive():
            log.warning("MLflow system metrics of run %s stopped without their last sample (the server does not "
                        "answer)", self.run_id)

    @staticmethod
    def _finish_monitor(monitor) -> None:
        try:
            monitor.finish()
        except Exception as exc:  # noqa: BLE001
            log.warning("MLflow system metrics did not stop cleanly: %s", exc)


