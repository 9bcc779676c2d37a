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

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from arvid_ray.config import ExperimentConfig

log = logging.getLogger(__name__)

__all__ = ["Tracker", "resolve_tracking_uri", "end_run", "read_metrics_jsonl", "ui_hint", "RUN_NAME_TAG",
           "mask_uri", "config_params",
           "sync_run", "tracking_summary", "read_journal", "end_open_run", "METRICS_FILE", "JOURNAL_FILE"]

_STATUSES = ("FINISHED", "FAILED", "KILLED", "RUNNING")
RUN_NAME_TAG = "arvid.run_name"  # the stable training-run name; a re-launch resumes the run carrying it
METRICS_FILE = "metrics.jsonl"
JOURNAL_FILE = "tracking.json"
_READ_BYTES = 1 << 20  # metrics.jsonl read per shipping round
_PROBE_S = 2.0  # while the server is away: how often to knock
_QUIET_S = 0.0  # check /health before a send when the last reply is older than this: a send into a dead
# server would sit in urllib3's retries for minutes (harmless to training, but the outage would go unseen)
_STALL_S = 5.0  # a send that has had no reply this long (urllib3 retrying a dead server) counts as an outage
_BOOKKEEPING = ("step", "time")


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
        return f"open {mask_uri(uri)} in a browser (tunnel the port first when it is on a remote head node)"
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


_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
# bookkeeping, not hyper-parameters: where things are stored and logged, how loud the console is
TAG_PREFIXES = ("tracking.", "storage.", "experiment.workdir", "experiment.verbose", "train.storage_path",
                "train.run_name")


def mask_uri(text: str) -> str:
    """``scheme://user:token@host/...`` → ``scheme://***@host/...`` anywhere in ``text``."""
    return _USERINFO.sub(r"\g<scheme>***@", text)


def _param_value(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        return mask_uri(json.dumps(value, sort_keys=True))
    return mask_uri(str(value))


def _accelerator_key(cfg: ExperimentConfig) -> str | None:
    """The cost-table key of this run's accelerator; None when only the GPU workers can tell (a driver
    without a GPU, cost.accelerator=auto). Matches the table's own keys (longest first: H200 before H20)."""
    if cfg.cost.accelerator != "auto":
        return cfg.cost.accelerator
    if not cfg.train.use_gpu:
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0).upper()
    keys = sorted({*cfg.cost.price_per_hour, *cfg.cost.peak_tflops}, key=len, reverse=True)
    return next((k for k in keys if k != "cpu" and k.upper() in name), name)


def config_params(cfg: ExperimentConfig) -> tuple[dict[str, str], dict[str, str]]:
    """(params, tags) of a run: the flattened config as hyper-parameters, bookkeeping fields as tags.

    The price and peak tables are reduced to this run's accelerator (``cost.price_per_hour`` = its USD/h,
    ``cost.peak_tflops`` = its peak); URIs never carry credentials (user:token@ is masked)."""
    flat = cfg.to_flat()
    acc = _accelerator_key(cfg)
    for table in ("cost.price_per_hour", "cost.peak_tflops"):
        entries = flat.pop(table, {}) or {}
        if acc is not None:
            flat[table] = entries.get(acc, "none")
    if acc is not None and cfg.cost.accelerator == "auto":
        flat["cost.accelerator"] = f"auto ({acc})"
    params, tags = {}, {}
    for key, value in flat.items():
        if key.startswith(TAG_PREFIXES):
            if value is not None:  # an unset bookkeeping field says nothing
                tags[key] = _param_value(value)[:6000]
        else:
            params[key] = _param_value(value)[:6000]
    return params, tags


def read_metrics_jsonl(run_dir: str | Path) -> list[dict[str, Any]]:
    """The metrics a run kept locally, one dict per logged step."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_journal(run_dir: str | Path) -> dict[str, Any]:
    """The run directory's tracking journal ({} when there is none)."""
    path = Path(run_dir) / JOURNAL_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_journal(run_dir: Path, state: Mapping[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{JOURNAL_FILE}.{os.getpid()}.{threading.get_ident()}"
    tmp.write_text(json.dumps(dict(state), indent=1, default=str))
    os.replace(tmp, run_dir / JOURNAL_FILE)


# ------------------------------------------------------------------------------------------ sending
def _rejected(exc: BaseException) -> bool:
    """A request MLflow refused on its merits (4xx: e.g. changing a param) — resending cannot help."""
    from mlflow.exceptions import MlflowException

    if not isinstance(exc, MlflowException):
        return False
    try:
        return 400 <= int(exc.get_http_status_code()) < 500
    except Exception:  # noqa: BLE001
        return False


def _apply(client, run_id: str, op: Mapping[str, Any]) -> None:
    """Carry out one journaled operation (params, tags, artifact(s), terminate) on ``run_id``."""
    from mlflow.entities import Param, RunTag

    kind = op["op"]
    if kind == "params":
        items = [Param(k, v) for k, v in op["params"].items()]
        for i in range(0, len(items), 100):  # MLflow's per-batch limit
            client.log_batch(run_id, params=items[i : i + 100])
    elif kind == "tags":
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in op["tags"].items()])
    elif kind == "artifact":
        if Path(op["path"]).exists():
            client.log_artifact(run_id, op["path"], op.get("artifact_path"))
    elif kind == "artifacts":
        if Path(op["path"]).is_dir():
            client.log_artifacts(run_id, op["path"], op.get("artifact_path"))
    elif kind == "terminate":
        client.set_terminated(run_id, status=op["status"], end_time=op.get("end_time"))
    else:
        raise ValueError(f"unknown tracking operation {kind!r}")


def _send_ops(client, run_id: str, ops: list[dict[str, Any]], *, terminate: bool) -> int:
    """Send queued operations in order (popping each once done); the terminate op only when
    ``terminate``. A refused operation is dropped with a warning. Returns how many were sent."""
    sent = 0
    while ops and (terminate or ops[0]["op"] != "terminate"):
        try:
            _apply(client, run_id, ops[0])
        except Exception as exc:  # noqa: BLE001
            if not _rejected(exc):
                raise
            log.warning("MLflow refused %s for run %s: %s", ops[0]["op"], run_id, str(exc).splitlines()[0])
        ops.pop(0)
        sent += 1
    return sent


def _send_lines(client, run_id: str, path: Path, offset: int) -> tuple[int, int]:
    """Send the complete metrics.jsonl lines after byte ``offset``; returns (new offset, points sent).

    Timestamps are the ones recorded in the file, so a replayed point equals the original and MLflow
    stores it once."""
    from mlflow.entities import Metric

    try:
        with open(path, "rb") as f:
            f.seek(offset)
            chunk = f.read(_READ_BYTES)
    except FileNotFoundError:
        return offset, 0
    end = chunk.rfind(b"\n") + 1  # only whole lines: the writer may be half-way through one
    if end == 0:
        return offset, 0
    items = []
    for line in chunk[:end].splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:  # a torn line from a killed writer: skip it, keep the rest
            continue
        ms, step = int(round(float(rec.get("time", time.time())) * 1000)), int(rec.get("step", 0))
        items += [Metric(k, float(v), ms, step) for k, v in rec.items()
                  if k not in _BOOKKEEPING and isinstance(v, (int, float))]
    for i in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[i : i + 1000])
    return offset + end, len(items)


class Tracker:
    """One MLflow run (created, or resumed by id) fed from the run directory's metrics.jsonl.

    ``enabled=False`` (or ``cfg.tracking.enabled=False``) disables MLflow; the JSONL copy is still written
    when ``run_dir`` is given. No method waits on the tracking server except ``start`` (a bounded check)
    and ``end``/``flush`` (at most ``cfg.tracking.flush_timeout_s``).
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
        self._ops: list[dict[str, Any]] = []
        self._lock = threading.Lock()
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
        reason = _reachable(self.uri)
        if reason is not None:
            return self._offline(f"tracking server {self.uri} is unreachable ({reason})", resume_id)
        try:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
            if not resume_id and resume_by_name and run_name:
                resume_id = self._find_by_name(run_name)
            if resume_id:
                if reopen:
                    self._client.update_run(resume_id, status="RUNNING")
                self._owns_status = reopen
                self.run_id = resume_id
            else:
                run = self._client.create_run(self._experiment_id(), tags=all_tags, run_name=run_name)
                self.run_id = run.info.run_id
        except Exception as exc:  # noqa: BLE001 - tracking must not kill training
            self._client = None
            return self._offline(f"could not start an MLflow run at {self.uri}: {exc}", resume_id)
        self._adopt_journal()
        if self.cfg.tracking.system_metrics:
            self._start_system_metrics(resume=bool(resume_id))
        log.info("MLflow run %s (experiment '%s') at %s", self.run_id, self.cfg.experiment.name, mask_uri(self.uri))
        return self.run_id

    def end(self, status: str = "FINISHED") -> None:
        """End the run with an MLflow status (FINISHED, FAILED, KILLED): wait (bounded) until MLflow has
        everything, else leave the rest in the journal for ``arvid-ray sync``."""
        if status not in _STATUSES:
            raise ValueError(f"run status {status!r} is not one of {', '.join(_STATUSES)}")
        if self._monitor is not None:
            try:
                self._monitor.finish()
            except Exception as exc:  # noqa: BLE001
                log.warning("MLflow system metrics did not stop cleanly: %s", exc)
            self._monitor = None
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
        items = ({k: _param_value(v)[:6000] for k, v in params.items()} if params is not None
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
        if self._thread is not None and self.cfg.train.steps > 0 and int(step) >= self.cfg.train.steps:
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

    # ---------------------------------------------------------------------------------- shipper
    def _wanted(self) -> bool:
        """Operations are kept when they can reach MLflow now or later (a run, or a journal to sync)."""
        return self.enabled and (self.run_id is not None or self.run_dir is not None)

    def _queue(self, op: dict[str, Any]) -> None:
        if not self._wanted():
            return
        with self._lock:
            self._ops.append(op)
        self._start_shipper()
        self._wake.set()

    def _metrics_path(self) -> Path | None:
        if self.run_dir is not None:
            return self.run_dir / METRICS_FILE
        return self._scratch() / METRICS_FILE if self.run_id is not None else None

    def _scratch(self) -> Path:
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="arvid-tracking-"))
        return self._tmp

    def _caught_up(self) -> bool:
        path = self._metrics_path()
        size = path.stat().st_size if path is not None and path.exists() else 0
        with self._lock:
            return not self._ops and self._state["sent_bytes"] >= size

    def _start_shipper(self) -> None:
        """Started on the first thing to send, and only for a run MLflow knows (by id)."""
        if self._thread is not None or self.run_id is None or not self.enabled or self._stop.is_set():
            return
        self._thread = threading.Thread(target=self._ship_loop, name=f"mlflow-shipper-{self.run_id}", daemon=True)
        self._thread.start()

    def _stop_shipper(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout=5)

    def _ship_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._ship_once()
            except Exception as exc:  # noqa: BLE001 - the shipper must outlive any one failure
                self._mark_down(exc)

    def _ship_once(self) -> None:
        now = time.monotonic()
        if self._down_since is not None and now < self._next_probe:
            return
        if self._caught_up():
            return  # nothing to send: no request, so an idle run never knocks
        if self._down_since is not None or now - self._last_ok > _QUIET_S:
            reason = _reachable(self.uri, timeout=2.0)
            if reason is not None:
                self._mark_down(reason)
                return
        if self._down_since is not None:
            self._mark_back()
        if self._client is None:  # resumed by id while the server was away
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        self._busy_since = time.monotonic()
        try:
            _send_ops(self._client, self.run_id, self._ops, terminate=False)
            path = self._metrics_path()
            while path is not None:
                offset, points = _send_lines(self._client, self.run_id, path, self._state["sent_bytes"])
                if offset == self._state["sent_bytes"]:
                    break
                if self._down_since is not None:  # a request that outlived an outage (urllib3's retries)
                    self._mark_back()
                with self._lock:
                    self._state["sent_bytes"], self._state["sent_points"] = offset, self._state["sent_points"] + points
                if self._catching_up:
                    self._state["replayed_points"] += points
                self._busy_since = time.monotonic()
            if self._caught_up_metrics():
                _send_ops(self._client, self.run_id, self._ops, terminate=True)
        finally:
            self._busy_since = None
        if self._down_since is not None:
            self._mark_back()
        self._mark_up()

    def _caught_up_metrics(self) -> bool:
        path = self._metrics_path()
        return path is None or not path.exists() or self._state["sent_bytes"] >= path.stat().st_size

    def _mark_down(self, why: Any) -> None:
        now = time.monotonic()
        self._next_probe = now + _PROBE_S
        if self._down_since is not None:
            return
        self._down_since = now
        self._state["outages"] += 1
        where = self.remote_dir or self.run_dir or "memory"
        log.warning("MLflow at %s is not answering (%s): training goes on; metrics are kept in %s and will "
                    "be replayed into run %s when it answers again", self.uri, str(why).splitlines()[0][:300],
                    where, self.run_id)
        self._save_journal()

    def _mark_back(self) -> None:
        """The server answers again: what follows is the backlog (counted as replayed)."""
        self._state["down_s"] += time.monotonic() - self._down_since
        self._down_since = None
        self._catching_up = True
        log.warning("MLflow at %s answers again: replaying the backlog into run %s", mask_uri(self.uri), self.run_id)

    def _mark_up(self) -> None:
        self._last_ok = time.monotonic()
        if self._catching_up and self._caught_up_metrics():
            self._catching_up = False
            log.warning("MLflow backlog replayed: %d points into run %s", self._state["replayed_points"], self.run_id)
            self._save_journal()

    # ---------------------------------------------------------------------------------- journal
    def _offline(self, why: str, resume_id: str | None) -> None:
        self.run_id = resume_id  # a known run is still the one to sync into later
        self._client = None
        self._state["outages"] += 1
        where = f"; metrics are kept in {self.remote_dir or self.run_dir / METRICS_FILE}" if self.run_dir else ""
        log.warning("%s — continuing without MLflow%s", why, where)
        if self.run_dir is not None:
            self._adopt_journal()
            self._save_journal()
        return None

    def _adopt_journal(self) -> None:
        """Continue the run directory's journal: what an earlier attempt of this run had acknowledged."""
        if self.run_dir is None:
            return
        old = read_journal(self.run_dir)
        path = self.run_dir / METRICS_FILE
        size = path.stat().st_size if path.exists() else 0
        if old.get("run_id") in (None, self.run_id):
            self._state["sent_bytes"] = min(int(old.get("sent_bytes", 0)), size)
            with self._lock:  # an earlier attempt's pending params/artifacts (not its terminate)
                self._ops[:0] = [op for op in old.get("pending_ops", []) if op.get("op") != "terminate"]
            for key in ("outages", "replayed_points", "down_s"):
                self._state[key] += old.get(key, 0)
        else:  # lines of another run: not ours to send
            self._state["sent_bytes"] = size
        self._save_journal()

    def _save_journal(self) -> None:
        if self.run_dir is None:
            return
        path = self.run_dir / METRICS_FILE
        with self._lock:
            state = {**self._state, "run_id": self.run_id, "pending_ops": list(self._ops),
                     "written_bytes": path.stat().st_size if path.exists() else 0, "updated": time.time()}
        try:
            _write_journal(self.run_dir, state)
            if self.remote_dir:
                self._mirror()
        except OSError as exc:
            log.warning("could not write the tracking journal in %s: %s", self.run_dir, exc)

    def _spool(self, uri: str) -> Path:
        """A local directory standing in for a remote run directory (mirrored back by ``_mirror``)."""
        from arvid_ray import storage

        local = Path(tempfile.mkdtemp(prefix="arvid-run-"))
        for name in (METRICS_FILE, JOURNAL_FILE):
            src = storage.join(uri, name)
            if storage.exists(src):
                storage.download_file(src, str(local / name))
        return local

    def _mirror(self) -> None:
        from arvid_ray import storage

        for name in (METRICS_FILE, JOURNAL_FILE):
            if (self.run_dir / name).exists():
                storage.write_bytes(storage.join(self.remote_dir, name), (self.run_dir / name).read_bytes())

    # ---------------------------------------------------------------------------------- internals
    def _experiment_id(self) -> str:
        return _experiment_id(self._client, self.cfg.experiment.name)

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


def _experiment_id(client, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # another process created it first
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def end_run(cfg: ExperimentConfig, run_id: str, status: str = "FINISHED") -> None:
    """End an existing run by id (e.g. a sweep's child run of a trial that ASHA stopped); never fails."""
    from mlflow import MlflowClient

    try:
        MlflowClient(tracking_uri=resolve_tracking_uri(cfg)).set_terminated(run_id, status=status)
    except Exception as exc:  # noqa: BLE001 - tracking must not kill the caller
        log.warning("could not end MLflow run %s as %s: %s", run_id, status, exc)


def end_open_run(run_dir: str | Path, status: str) -> None:
    """End the MLflow run a run directory's journal names, if it is still RUNNING (a driver that died or
    was interrupted before its workers could say so); never fails."""
    from arvid_ray import storage

    state = {} if storage.is_remote(str(run_dir)) else read_journal(storage.absolute(str(run_dir)))
    if not state.get("run_id") or not state.get("uri") or _reachable(state["uri"]) is not None:
        return
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=state["uri"])
        if client.get_run(state["run_id"]).info.status == "RUNNING":
            client.set_terminated(state["run_id"], status=status)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not end MLflow run %s as %s: %s", state["run_id"], status, exc)


# ------------------------------------------------------------------------------------------ sync
def sync_run(run_dir: str | Path, uri: str | None = None, *, replay_all: bool = False) -> dict[str, Any]:
    """Put what a run directory holds and MLflow lacks into the run (``arvid-ray sync RUN_DIR``).

    Creates the run first when it never reached MLflow (from the journal's experiment, name and tags).
    ``replay_all`` resends every line (harmless: MLflow stores a point with the same timestamp once).
    Returns {"run_id", "uri", "points", "ops", "status"}; raises when the server still does not answer.
    """
    from mlflow import MlflowClient

    run_dir = Path(run_dir)
    if not (run_dir / METRICS_FILE).exists() and not (run_dir / JOURNAL_FILE).exists():
        raise FileNotFoundError(f"{run_dir} holds neither {METRICS_FILE} nor {JOURNAL_FILE}: not a run directory")
    state = read_journal(run_dir)
    uri = uri or state.get("uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ValueError(f"{run_dir}/{JOURNAL_FILE} names no tracking server; pass --uri")
    reason = _reachable(uri)
    if reason is not None:
        raise ConnectionError(f"tracking server {uri} is unreachable ({reason}); try again when it is up")
    client = MlflowClient(tracking_uri=uri)
    run_id = state.get("run_id")
    if not run_id:
        exp = _experiment_id(client, state.get("experiment") or "Default")
        run_id = client.create_run(exp, tags=state.get("tags") or {}, run_name=state.get("run_name")).info.run_id
    ops = list(state.get("pending_ops", []))
    n_ops = _send_ops(client, run_id, ops, terminate=False)
    offset, points = 0 if replay_all else int(state.get("sent_bytes", 0)), 0
    while True:
        new, sent = _send_lines(client, run_id, run_dir / METRICS_FILE, offset)
        if new == offset:
            break
        offset, points = new, points + sent
    n_ops += _send_ops(client, run_id, ops, terminate=True)
    state.update(run_id=run_id, uri=uri, sent_bytes=offset, pending_ops=ops, synced=time.time(),
                 sent_points=int(state.get("sent_points", 0)) + points,
                 synced_points=int(state.get("synced_points", 0)) + points)
    _write_journal(run_dir, state)
    return {"run_id": run_id, "uri": uri, "points": points, "ops": n_ops,
            "status": client.get_run(run_id).info.status}


def tracking_summary(run_dir: str | Path) -> str:
    """One plain line on whether MLflow has everything of this run; '' when nothing went wrong."""
    from arvid_ray import storage

    if storage.is_remote(str(run_dir)):
        return ""  # a remote run directory: the tracker's own log lines say it
    run_dir = storage.absolute(str(run_dir))
    state = read_journal(run_dir)
    if not state:
        return ""
    path = Path(run_dir) / METRICS_FILE
    written = path.stat().st_size if path.exists() else 0
    missing_bytes = max(0, written - int(state.get("sent_bytes", 0)))
    pending = [op["op"] for op in state.get("pending_ops", [])]
    run = state.get("run_id") or "(not created yet)"
    if missing_bytes or pending:
        lines = 0
        if path.exists():
            with open(path, "rb") as f:
                f.seek(int(state.get("sent_bytes", 0)))
                lines = sum(1 for line in f if line.strip())
        what = " and ".join(filter(None, [
            f"{lines} metrics.jsonl line(s)" if lines else "",
            f"{len(pending)} pending operation(s) ({', '.join(sorted(set(pending)))})" if pending else ""]))
        return (f"tracking INTERRUPTED: MLflow at {state.get('uri')} lacks {what} of run {run}; they are kept "
                f"in {run_dir} — put them in with: arvid-ray sync {run_dir}")
    if state.get("outages"):
        replayed = int(state.get("replayed_points", 0)) + int(state.get("synced_points", 0))
        return (f"tracking was interrupted ({state['outages']} outage(s), {float(state.get('down_s', 0)):.0f} s "
                f"without MLflow); {replayed} metric points were replayed into run {run} afterwards; "
                f"nothing is missing")
    return ""
