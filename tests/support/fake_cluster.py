"""A real multi-node autoscaling Ray cluster on this machine (Ray's ``fake_multinode`` provider).

The autoscaler is Ray's own and launches/terminates fake nodes (real raylets) on demand: a head with
CPUs and no GPU and a ``gpu_worker`` type declaring ``GPU: 1`` for scheduling (training runs on CPU
with gloo there), ``min_workers: 0`` so GPU workers scale from zero. The cluster has its own
``--temp-dir`` and ports, and is stopped by the pids whose command line names that temp dir — never
``ray stop --force`` or ``AutoscalingCluster.start()``, which kill every Ray process on the machine
(the test suite's shared local Ray included).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from servers import free_port

HEAD_CPUS = 4  # logical CPUs: sweep driver + trial drivers + Ray Data decode (docs/ray_notes.md: never starve Data)
WORKER_CPUS = 2
HEAD_NODE_ID = "f" * 51 + "00000"  # the fake provider's id for the head (workers count up from 00001)


def _pids_with(needle: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmd:
            out.append(int(entry.name))
    return out


class FakeCluster:
    """``with FakeCluster() as c:`` → ``c.address`` (GCS, for RAY_ADDRESS), ``c.dashboard`` (job API)."""

    def __init__(self, max_workers: int = 2, idle_timeout_minutes: float = 0.1, env: dict | None = None):
        self.max_workers = max_workers
        self.idle_timeout_minutes = idle_timeout_minutes
        self.env = dict(env or {})
        self.temp_dir = tempfile.mkdtemp(prefix="arvfc-", dir="/tmp")  # short: raylet socket paths < 108 chars
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.log = Path(self.temp_dir) / "start.log"

    # ------------------------------------------------------------------------------ lifecycle
    def config(self) -> dict:
        return {
            "cluster_name": f"fake-{Path(self.temp_dir).name}",
            "max_workers": self.max_workers,
            "idle_timeout_minutes": self.idle_timeout_minutes,
            "upscaling_speed": 1.0,
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True, "gcs_address": self.address},
            "available_node_types": {
                "ray.head.default": {"resources": {"CPU": HEAD_CPUS, "arvid_driver": 100}, "node_config": {},
                                     "max_workers": 0},
                "gpu_worker": {"resources": {"CPU": WORKER_CPUS, "GPU": 1}, "node_config": {},
                               "min_workers": 0, "max_workers": self.max_workers},
            },
            "head_node_type": "ray.head.default",
            "auth": {"ssh_user": "root"},
            "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
            "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
            "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
        }

    def driver_env(self) -> dict[str, str]:
        """Environment for a driver of this cluster. Token auth is off: the token file (~/.ray/auth_token)
        is shared by every Ray instance of this user, the suite's own included."""
        return {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}

    def start(self) -> FakeCluster:
        cfg_path = Path(self.temp_dir) / "autoscaler.yaml"
        cfg_path.write_text(yaml.safe_dump(self.config()))
        ray_exe = str(Path(sys.executable).parent / "ray")
        env = {**os.environ, **self.driver_env(), "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
               **self.env}
        env.pop("RAY_ADDRESS", None)  # `ray start --head` waits on it
        # every process of the cluster knows its API server: with another Ray on the machine (the suite's
        # shared instance) Ray's own state-API helpers (e.g. Train's placement-group cleaner) would
        # otherwise find several GCS processes and refuse to guess ("Found multiple active Ray instances")
        env["RAY_API_SERVER_ADDRESS"] = self.dashboard
        cmd = [ray_exe, "start", "--head", f"--temp-dir={self.temp_dir}", f"--port={self.gcs_port}",
               "--node-ip-address=127.0.0.1",
               f"--num-cpus={HEAD_CPUS}", "--num-gpus=0", f"--resources={json.dumps({'arvid_driver': 100})}",
               f"--autoscaling-config={cfg_path}", "--include-dashboard=true",
               "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
               f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
               f"--metrics-export-port={free_port()}", "--disable-usage-stats"]
        try:
            with open(self.log, "w") as log:
                proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=300)
        except BaseException:  # a timeout or an interrupt must not leak a half-started cluster
            self.stop()
            raise
        if proc.returncode != 0:
            self.stop()
            raise RuntimeError(f"fake cluster did not start:\n{self.log.read_text()[-3000:]}")
        return self

    def stop(self) -> None:
        """SIGTERM then SIGKILL every process whose command line names this cluster's temp dir."""
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            pids = _pids_with(self.temp_dir)
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + wait
            while pids and time.time() < deadline:
                pids = [p for p in pids if Path(f"/proc/{p}").exists() and _alive(p)]
                time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> FakeCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------------------ inspection
    def worker_raylets(self) -> list[int]:
        """Pids of raylets of fake worker nodes (the autoscaler starts them with a node id override)."""
        return [pid for pid in _pids_with(self.temp_dir)
                if "raylet/raylet" in _cmdline(pid) and b"RAY_OVERRIDE_NODE_ID_FOR_TESTING=" in _environ(pid)
                and HEAD_NODE_ID.encode() not in _environ(pid)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (OSError, IndexError):
        return False
    return state != "Z"
