"""The run directory's own record of its tracking: ``metrics.jsonl`` (every logged point) and
``tracking.json`` (the journal: run id, acknowledged offset, pending operations, final status), and
putting what MLflow lacks into it (``arvid-ray sync``)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from arvid_ray.tracking.server import experiment_id, reachable

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
JOURNAL_FILE = "tracking.json"
_READ_BYTES = 1 << 20  # metrics.jsonl read per shipping round
_BOOKKEEPING = ("step", "time")


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


def write_journal(run_dir: Path, state: Mapping[str, Any]) -> None:
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
    elif kind == "reopen":  # a resumed run is RUNNING again (queued: the training thread never waits for it)
        client.update_run(run_id, status="RUNNING")
    elif kind == "terminate":
        client.set_terminated(run_id, status=op["status"], end_time=op.get("end_time"))
    else:
        raise ValueError(f"unknown tracking operation {kind!r}")


def send_ops(client, run_id: str, ops: list[dict[str, Any]], *, terminate: bool) -> int:
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


def send_lines(client, run_id: str, path: Path, offset: int) -> tuple[int, int]:
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


def end_open_run(run_dir: str | Path, status: str) -> None:
    """End the MLflow run a run directory's journal names, if it is still RUNNING (a driver that died or
    was interrupted before its workers could say so); never fails."""
    from arvid_ray import storage

    state = {} if storage.is_remote(str(run_dir)) else read_journal(storage.absolute(str(run_dir)))
    if not state.get("run_id") or not state.get("uri") or reachable(state["uri"]) is not None:
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
    reason = reachable(uri)
    if reason is not None:
        raise ConnectionError(f"tracking server {uri} is unreachable ({reason}); try again when it is up")
    client = MlflowClient(tracking_uri=uri)
    run_id = state.get("run_id")
    if not run_id:
        exp = experiment_id(client, state.get("experiment") or "Default")
        run_id = client.create_run(exp, tags=state.get("tags") or {}, run_name=state.get("run_name")).info.run_id
    ops = [op for op in state.get("pending_ops", []) if op.get("op") != "reopen"]  # sync only ends a run
    n_ops = send_ops(client, run_id, ops, terminate=False)
    offset, points = 0 if replay_all else int(state.get("sent_bytes", 0)), 0
    while True:
        new, sent = send_lines(client, run_id, run_dir / METRICS_FILE, offset)
        if new == offset:
            break
        offset, points = new, points + sent
    n_ops += send_ops(client, run_id, ops, terminate=True)
    state.update(run_id=run_id, uri=uri, sent_bytes=offset, pending_ops=ops, synced=time.time(),
                 sent_points=int(state.get("sent_points", 0)) + points,
                 synced_points=int(state.get("synced_points", 0)) + points)
    write_journal(run_dir, state)
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


# ------------------------------------------------------------------------------ a live Tracker's journal
class _JournalKeeper:
    """The journal upkeep of a ``Tracker`` (its base class; state set up by ``Tracker.__init__``): going
    on without MLflow, adopting an earlier attempt's journal, saving it, and — for a remote run directory —
    a local spool mirrored back to storage."""

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
                self._ops[:0] = [op for op in old.get("pending_ops", []) if op.get("op") not in ("terminate", "reopen")]
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
            write_journal(self.run_dir, state)
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
