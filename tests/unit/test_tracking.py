"""MLflow tracking against a real `mlflow server`: params, metrics, config artifact, nesting, failures."""

from __future__ import annotations

import logging
import time

import pytest
from tracking_shared import _cfg

from arvid_ray.config import ExperimentConfig
from arvid_ray.tracking import Tracker, read_metrics_jsonl, resolve_tracking_uri


def test_unreachable_server_warns_and_keeps_metrics_locally(tmp_path, caplog):
    from servers import free_port

    cfg = _cfg(f"http://127.0.0.1:{free_port()}")
    tracker = Tracker(cfg, tmp_path)
    t0 = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="arvid_ray.tracking"):
        assert tracker.start() is None
    assert time.perf_counter() - t0 < 10
    assert "unreachable" in caplog.text and "metrics.jsonl" in caplog.text
    tracker.log_config()
    tracker.log_metrics({"train/loss": 1.25}, step=7)
    tracker.end("FAILED")
    assert read_metrics_jsonl(tmp_path) == [
        pytest.approx({"step": 7, "time": read_metrics_jsonl(tmp_path)[0]["time"], "train/loss": 1.25})
    ]


def test_disabled_tracking_is_a_no_op_but_keeps_the_jsonl(tmp_path):
    tracker = Tracker(_cfg(None, **{"tracking.enabled": False}), tmp_path)
    assert tracker.start() is None and not tracker.active
    tracker.log_metrics({"train/loss": 1.0}, step=1)
    tracker.end()
    assert len(read_metrics_jsonl(tmp_path)) == 1
    assert not list(tmp_path.glob("*.db"))


def test_a_file_uri_run_dir_is_the_local_directory(tmp_path):
    """file:///x is local: the journal and metrics.jsonl go to /x itself, not to a spooled temp copy."""
    from arvid_ray.tracking import tracking_summary

    tracker = Tracker(_cfg(None, **{"tracking.enabled": False}), f"file://{tmp_path}")
    assert tracker.remote_dir is None and tracker.run_dir == tmp_path
    tracker.log_metrics({"train/loss": 1.0}, step=1)
    tracker.end()
    assert len(read_metrics_jsonl(tmp_path)) == 1
    assert tracking_summary(f"file://{tmp_path}") == tracking_summary(tmp_path)


def test_default_uri_is_an_absolute_sqlite_file(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = ExperimentConfig().replace(**{"experiment.workdir": "rel/work"})
    assert resolve_tracking_uri(cfg) == f"sqlite:///{tmp_path / 'rel/work/mlruns.db'}"
    assert resolve_tracking_uri(_cfg("sqlite:///x.db")) == f"sqlite:///{tmp_path / 'x.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example.invalid:5000")
    assert resolve_tracking_uri(cfg) == "http://example.invalid:5000"


def test_sqlite_store_works_with_system_metrics(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    tracker = Tracker(_cfg(uri, **{"tracking.system_metrics": True}))
    run_id = tracker.start(run_name="stable-name", resume_by_name=True)
    tracker.log_metrics({"train/loss": 2.0}, step=1)
    tracker.end()
    assert MlflowClient(uri).get_run(run_id).data.metrics["train/loss"] == 2.0
    again = Tracker(_cfg(uri))  # a re-launch of the same training run continues its MLflow run
    assert again.start(run_name="stable-name", resume_by_name=True) == run_id
    assert Tracker(_cfg(uri)).start(run_name="stable-name") != run_id  # without resume_by_name: a new run


def test_ui_hint_serves_local_stores_and_opens_servers():
    from arvid_ray.tracking import ui_hint

    assert ui_hint("sqlite:////tmp/x/mlflow.db") == "mlflow ui --backend-store-uri sqlite:////tmp/x/mlflow.db"
    assert ui_hint("http://127.0.0.1:5000").startswith("open http://127.0.0.1:5000 ")


def test_a_resumed_run_is_never_waited_on_by_the_training_thread(tmp_path):
    """Issue 27: resumed by id (as every Ray Train worker resumes its driver's run) with system metrics on,
    against a server that answers /health but holds every API request until the test lets go: start,
    log_metrics and end return first. Were any of them waiting on a request (the old synchronous reopen,
    MLflow's system-metrics run lookup and its joined thread), that request would be let go by its own
    30 s timeout instead, and is recorded so."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    release, seen = threading.Event(), []

    class Held(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            if self.path.startswith("/health"):
                code, body = 200, b"OK"
            else:
                seen.append((self.path.split("?")[0], release.wait(30)))  # False: let go by the timeout
                code, body = 404, json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "held"}).encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = _answer

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Held)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = _cfg(f"http://127.0.0.1:{server.server_address[1]}",
                   **{"tracking.system_metrics": True, "tracking.flush_timeout_s": 1.0})
        tracker = Tracker(cfg, tmp_path)
        assert tracker.start(run_name="held", run_id="0123456789abcdef") == "0123456789abcdef"
        tracker.log_metrics({"train/loss": 1.0}, step=1)
        tracker.end("FINISHED")
        release.set()
        deadline = time.monotonic() + 10
        while not any(path.endswith("/runs/get") for path, _ in seen) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        release.set()
        server.shutdown()
    # the reopen (update_run looks the run up first) went out, from the shipper's thread, and was answered
    # only after the caller had finished
    assert any(path.endswith("/runs/get") for path, _ in seen), seen
    assert all(in_time for _, in_time in seen), seen
    assert read_metrics_jsonl(tmp_path)[0]["train/loss"] == 1.0
