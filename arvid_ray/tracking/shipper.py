"""The shipper: a Tracker's background thread that tails metrics.jsonl and sends what is new (and the
queued params, tags and artifacts) to MLflow, and notices when the server goes away and comes back.

Why a thread tailing a file (the trade-off): see the ``arvid_ray.tracking`` package docstring. ``_Shipper``
is one part of ``Tracker`` (its base class): the state it reads and writes (``_ops``, ``_state``, the
events, the outage clock) is set up by ``Tracker.__init__``, and it saves the journal through the
``_JournalKeeper`` part (``journal.py``).
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from arvid_ray.tracking.journal import METRICS_FILE, send_lines, send_ops
from arvid_ray.tracking.server import mask_uri, reachable

log = logging.getLogger(__name__)

_PROBE_S = 2.0  # while the server is away: how often to knock
_QUIET_S = 0.0  # check /health before a send when the last reply is older than this: a send into a dead
# server would sit in urllib3's retries for minutes (harmless to training, but the outage would go unseen)
_STALL_S = 5.0  # a send that has had no reply this long (urllib3 retrying a dead server) counts as an outage


class _Shipper:
    """The shipper thread and the outage bookkeeping of a ``Tracker`` (see the module docstring)."""

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
        with self._scratch_lock:  # one directory: a second one would hide the caller's metrics from the shipper
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
            reason = reachable(self.uri, timeout=2.0)
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
            send_ops(self._client, self.run_id, self._ops, terminate=False)
            path = self._metrics_path()
            while path is not None:
                offset, points = send_lines(self._client, self.run_id, path, self._state["sent_bytes"])
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
                send_ops(self._client, self.run_id, self._ops, terminate=True)
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
