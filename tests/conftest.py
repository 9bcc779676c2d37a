"""Shared fixtures for tests/unit, tests/integration and tests/e2e: one local Ray instance per session, and
real servers on 127.0.0.1.

The folders: unit/ needs no Ray, no server process and no whole CLI/script run (`make test-fast`);
integration/ uses the shared Ray instance or a server; e2e/ runs whole sweeps, CLIs and scripts, the
multi-node cluster and the browser. Helpers shared across them live in tests/support/ (on sys.path here).

Ray is started once with more logical CPUs than the 2 physical cores of CI so that a Tune driver,
Train workers and Ray Data tasks never starve each other (see docs/ray_notes.md). Servers (MLflow, an
S3-compatible moto server) are real processes the tests start themselves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny ops on 2 shared cores: a second thread only spins
# credentials for the local S3 server: set before Ray starts so its workers inherit them
for _key, _value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                     ("AWS_DEFAULT_REGION", "us-east-1")):
    os.environ.setdefault(_key, _value)

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS.parent / "experiments"))  # tune_window, reproduce_paper
sys.path.insert(0, str(TESTS / "support"))  # servers, browser, fake_cluster, video_fixtures, launch_cfg
from servers import MlflowServer, free_port, wait_http  # noqa: E402 - the one copy of the server helpers

__all__ = ["free_port", "wait_http"]


@pytest.fixture()
def one_torch_thread():
    """Tiny tensors: one intra-op thread avoids spin contention on the shared 2-core CI machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ray_session():
    """The session's one local Ray instance (4 logical CPUs on a 2-core machine)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=True, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent.parent)}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def smoke_data(ray_session, tmp_path_factory):
    """The `--smoke-test` dataset (built-in synthetic videos, ingested, tokenized) made once per session by
    the sweep's own prepare_inputs; ``smoke_data(workdir)`` copies it into a workdir so a sweep there
    finds its cache (the synthetic/<n-digest> folder, keyed by the config) instead of remaking it."""
    import tune_window

    from arvid_ray.config import load_config
    from arvid_ray.sweep import prepare_inputs

    root = tmp_path_factory.mktemp("smoke-data")
    cfg = load_config(tune_window.DEFAULT_CONFIG,
                      [*tune_window.SMOKE_OVERRIDES, f"experiment.workdir={root}", f"storage.root={root}"])
    tokens = Path(prepare_inputs(cfg).data.tokens_path)
    assert tokens.is_relative_to(root / "synthetic"), tokens

    def seed(workdir: Path) -> Path:
        shutil.copytree(root / "synthetic", Path(workdir) / "synthetic", dirs_exist_ok=True)
        return Path(workdir)

    return seed


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 with a sqlite backend; yields its tracking URI."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()  # waits up to 300 s: a slow import
    try:
        yield server.uri
    finally:
        server.kill()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto's server mode) on 127.0.0.1; yields the endpoint URL."""
    # the venv's moto first: an older moto_server on PATH (5.2.1) breaks pyarrow's multipart uploads
    venv_exe = Path(sys.executable).parent / "moto_server"
    exe = str(venv_exe) if venv_exe.exists() else shutil.which("moto_server")
    port = free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(endpoint + "/moto-api/", proc, 60)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests keep artifacts worth looking at (screenshots, plots)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


_RAY_FIXTURES = {"ray_session", "smoke_data"}
_SERVER_FIXTURES = {"mlflow_server", "s3_server"}
UNIT = TESTS / "unit"


def pytest_collection_modifyitems(config, items):
    """Markers follow fixture use: a test that needs the shared Ray instance is `ray`, one that needs a
    server process is `server`, so `-m` still selects by kind across the folders. A test under tests/unit
    that needs either (directly or through another fixture) is a collection error: move it to
    tests/integration (or tests/e2e), so `make test-fast` stays free of Ray and servers."""
    misplaced = []
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & _RAY_FIXTURES:
            item.add_marker(pytest.mark.ray)
        if names & _SERVER_FIXTURES:
            item.add_marker(pytest.mark.server)
        if Path(str(item.fspath)).resolve().is_relative_to(UNIT):
            needs = sorted(names & (_RAY_FIXTURES | _SERVER_FIXTURES))
            marks = sorted(m for m in ("ray", "server", "slow") if item.get_closest_marker(m) is not None)
            if needs or marks:
                misplaced.append(f"{item.nodeid}: {', '.join(needs + [f'@{m}' for m in marks])}")
    if misplaced:
        raise pytest.UsageError("tests/unit must not use Ray, a server or be slow; move these to "
                                "tests/integration or tests/e2e:\n  " + "\n  ".join(misplaced))
