"""Server helpers shared by the tests (tests/conftest.py) and the tracking benchmark
(experiments/benchmarks/bench_tracking.py): a free loopback port, waiting for an HTTP server, and a real
`mlflow server` that can be killed and come back as itself."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

__all__ = ["MlflowServer", "free_port", "wait_http"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until ``url`` answers below 500; fails at once when ``proc`` (the server) exits."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status < 500:
                    return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


class MlflowServer:
    """A real `mlflow server` on a fixed port and backend, so it can be killed and come back as itself."""

    def __init__(self, root: Path, backend: str | None = None, workers: int = 1):
        self.root, self.port, self.workers = Path(root), free_port(), workers
        self.backend = backend or f"sqlite:///{self.root / 'mlflow.db'}"
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> MlflowServer:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "mlflow-server.log", "a")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", self.backend, "--artifacts-destination", str(self.root / "artifacts"),
             "--workers", str(self.workers)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_http(self.uri + "/health", self.proc)
        return self

    def kill(self) -> None:
        """A crash, not a shutdown: the whole process group (gunicorn/uvicorn workers too) gets SIGKILL."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
