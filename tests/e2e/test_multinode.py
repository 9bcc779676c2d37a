"""End to end on a real multi-node autoscaling Ray cluster on this machine, as users run it.

The cluster (tests/support/fake_cluster.py: Ray's fake_multinode autoscaler) starts with only a head node (CPUs,
no GPU) and a ``gpu_worker`` type (``GPU: 1``, min 0, max 2) — GPU workers scale from zero. All data and
storage live on a real S3-compatible server (moto) on 127.0.0.1, tracking on a real ``mlflow server``.
The driver — ``experiments/tune_window.py --smoke-test``, the command cluster/README.md gives — runs
with ``RAY_ADDRESS`` in a private mount namespace (``unshare --mount``) with tmpfs over its workdir and
home cache: whatever it writes to its own disk is invisible to the cluster, exactly as on a real
cluster, so a trial that needed a driver-local file would fail. While the first trial trains, the test
kills the raylet of a worker node that hosts a Train worker (by pid); the trial must resume from its
last checkpoint on another node and every trial must finish. The cluster has its own temp dir and
ports and is stopped by its own pids; the suite's shared local Ray is untouched.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fake_cluster import FakeCluster

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "arvid"
SECRET = "MultinodeSecretKeyNeverInTheBucket0000042"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                                                   reason="needs root and util-linux unshare")]


def _driver_command(workdir: Path, s3: str, steps: int, bootstrap: Path | None = None,
                    gpu: bool = True, ckpt_every: int = 10) -> list[str]:
    """The README's cluster line, in a private mount namespace (tmpfs over workdir and ~/.cache).

    ``bootstrap``: the cluster's autoscaling config, bind-mounted read-only at ``~/ray_bootstrap_config.yaml``
    inside the namespace (HOME is a private directory there) — where `ray up` puts it on a launcher head
    and where the pre-flight reads the declared node types; nothing names it in the environment. Without
    it the cluster declares nothing (as on a cluster whose config the driver cannot read)."""
    home_cache = Path.home() / ".cache"
    home_cache.mkdir(exist_ok=True)
    home = workdir / "home"
    sweep = [sys.executable, "experiments/tune_window.py", "--smoke-test",
             f"storage.root=s3://{BUCKET}/rf", f"storage.s3_endpoint={s3}", f"experiment.workdir={workdir}",
             f"train.steps={steps}", f"train.ckpt_every={ckpt_every}", "eval.quality_every=0", "train.log_every=10", "train.report_every=10",
             "train.resource_timeout_s=300", "data.decode_cpus=1", "train.num_workers=1",
             "train.cpus_per_worker=1"]
    if gpu:  # scheduling asks for a GPU per worker; the fake GPUs are labels, so train on CPU with gloo
        sweep += ["train.use_gpu=true", "train.device=cpu"]
    else:
        sweep += ["train.use_gpu=false", "sweep.name=cpu-smoke"]
    mount = (f"touch {home}/ray_bootstrap_config.yaml && mount --bind -o ro {bootstrap} "
             f"{home}/ray_bootstrap_config.yaml && " if bootstrap else "")
    inner = (f"mount -t tmpfs tmpfs {home_cache} && mount -t tmpfs tmpfs {workdir} && mkdir -p {home} && "
             f"{mount}export HOME={home} && cd {ROOT} && exec " + " ".join(sweep))
    return ["unshare", "--mount", "--propagation", "private", "bash", "-c", inner]


def _train_worker_nodes(dashboard: str) -> set[str]:
    from ray.util.state import list_actors

    actors = list_actors(address=dashboard, filters=[("state", "=", "ALIVE")], limit=1000, raise_on_missing_output=False)
    return {a.node_id for a in actors if "RayTrainWorker" in (a.class_name or "")}


def _raylet_of(cluster: FakeCluster, node_id: str) -> int | None:
    for pid in cluster.worker_raylets():
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RAY_OVERRIDE_NODE_ID_FOR_TESTING={node_id}".encode() in env:
            return pid
    return None


def _checkpoints(s3) -> list[str]:
    """Train runs under the storage root with a registered checkpoint (Ray Train's controller writes its
    checkpoint-manager snapshot once a reported checkpoint is committed)."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="rf/runs/")
    return sorted({k["Key"].rsplit("/", 1)[0] for p in pages for k in p.get("Contents", [])
                   if k["Key"].endswith("/checkpoint_manager_snapshot.json")})


def _kill_a_training_node(cluster: FakeCluster, s3, stop: threading.Event, killed: list, trials: int = 2,
                          log_path: Path | None = None) -> None:
    """Once every trial of the sweep has a registered checkpoint in S3, kill the raylet of a node running a
    Train worker: whichever trial it serves must then resume from its checkpoint, not from step 0. Every
    poll is written to ``log_path`` (when the kill came, what was seen) for a look after a failure."""
    t0 = time.time()
    with open(log_path or os.devnull, "w") as log:
        while not stop.is_set():
            ckpts = _checkpoints(s3)
            nodes = _train_worker_nodes(cluster.dashboard) if len(ckpts) >= trials else set()
            print(f"{time.time() - t0:7.1f}s checkpoints={ckpts} train_nodes={sorted(nodes)}", file=log, flush=True)
            for node in nodes:
                pid = _raylet_of(cluster, node)
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                    killed.append((node, pid, time.time()))
                    print(f"{time.time() - t0:7.1f}s killed raylet {pid} of node {node}", file=log, flush=True)
                    return
            stop.wait(0.5)


@pytest.mark.timeout(1500)
def test_sweep_on_autoscaling_cluster_with_private_driver_disk(s3_server, mlflow_server, tmp_path, artifacts_dir):
    import boto3
    from mlflow.tracking import MlflowClient

    # this test's own keys, on the driver and every node: Arrow reads them from the environment; none may
    # end up in an object under the storage root (Tune pickles the storage filesystem into tuner.pkl)
    keys = {"AWS_ACCESS_KEY_ID": "AKIAMULTINODETEST001", "AWS_SECRET_ACCESS_KEY": SECRET}
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                      aws_access_key_id=keys["AWS_ACCESS_KEY_ID"], aws_secret_access_key=SECRET)
    s3.create_bucket(Bucket=BUCKET)
    workdir = tmp_path / "driver-disk"
    workdir.mkdir()
    node_env = {"AWS_ENDPOINT_URL": s3_server, "OMP_NUM_THREADS": "1", **keys}
    with FakeCluster(max_workers=2, env=node_env) as cluster:
        assert cluster.worker_raylets() == []  # scaled to zero: only the head
        env = {**os.environ, **cluster.driver_env(), "MLFLOW_TRACKING_URI": mlflow_server,
               "PYTHONUNBUFFERED": "1", "RAY_AIR_NEW_OUTPUT": "0", **keys}
        for name in ("ARVID_STORAGE", "ARVID_AUTOSCALING_CONFIG", "ARVID_RAYCLUSTER", "RAY_CLUSTER_NAME"):
            env.pop(name, None)  # node types only from the mounted bootstrap config
        log_path = artifacts_dir / "multinode-driver.log"  # kept for a look after a failure
        stop, killed = threading.Event(), []
        killer = threading.Thread(target=_kill_a_training_node, args=(cluster, s3, stop, killed),
                                  kwargs={"log_path": artifacts_dir / "multinode-killer.log"}, daemon=True)
        killer.start()
        with open(log_path, "w") as log:
            # ~0.1 s a step here: 300 steps leave tens of seconds between the first registered checkpoint
            # (step 50; Ray Train writes its snapshot seconds after the report) and the trial's end, so
            # the kill lands mid-training even on a loaded machine (60 steps left ~4 s: a flake in CI)
            proc = subprocess.run(_driver_command(workdir, s3_server, steps=300, ckpt_every=50,
                                                  bootstrap=Path(cluster.temp_dir) / "autoscaler.yaml"),
                                  env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=1400)
        stop.set()
        killer.join(5)
        out = log_path.read_text()
        assert proc.returncode == 0, out[-6000:]
        assert "declares no node types" not in out  # the mounted config was found and used
        assert killed, "no worker node was killed mid-trial (no checkpoint seen while a Train worker ran)"
        # nothing the cluster read came from the driver's disk: the private tmpfs is gone with the driver
        leaked = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
        assert not leaked, f"cluster processes wrote into the driver's workdir path: {leaked[:10]}"
        keys = {o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
                for o in p.get("Contents", [])}
        assert any(k.startswith("rf/synthetic/") and k.endswith("tokens.parquet") for k in keys)
        assert any(k.startswith("rf/sweeps/smoke/") for k in keys)
        runs_with_ckpt = _checkpoints(s3)
        assert runs_with_ckpt, "no Train checkpoint under the storage root"

        client = MlflowClient(mlflow_server)
        exp = client.get_experiment_by_name("arvid-synthetic")
        runs = client.search_runs([exp.experiment_id])
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
        trial_runs = [r for r in children if r.data.tags.get("arvid.role") != "evaluation"]
        assert len(trial_runs) >= 2 and all(r.info.status == "FINISHED" for r in trial_runs), \
            [(r.info.run_name, r.info.status) for r in trial_runs]
        assert all("eval/fd_synthc3d" in r.data.metrics for r in trial_runs)
        # the killed trial resumed from its checkpoint (tagged by rank 0 of the new attempt)
        resumed = [r.data.tags["arvid.resumed_from"] for r in trial_runs if "arvid.resumed_from" in r.data.tags]
        assert resumed and all(f"{BUCKET}/rf/runs/" in t and "/step_" in t for t in resumed), \
            (resumed, (artifacts_dir / "multinode-killer.log").read_text()[-3000:], out[-3000:])
        # trial workers ran on autoscaled GPU worker nodes, and the cluster scaled back down afterwards
        assert "gpu_worker" in (Path(cluster.temp_dir) / "session_latest" / "logs" / "monitor.log").read_text()
        deadline = time.time() + 120
        while cluster.worker_raylets() and time.time() < deadline:
            time.sleep(2)
        assert cluster.worker_raylets() == [], "idle GPU worker nodes were not scaled down"

        # no declared source at all (no mounted config, nothing in the environment): the pre-flight warns
        # and leaves it to the autoscaler; the CPU sweep still finishes
        cpu_log = artifacts_dir / "multinode-driver-undeclared.log"
        with open(cpu_log, "w") as log:
            proc = subprocess.run(_driver_command(workdir, s3_server, steps=12, gpu=False), env=env, cwd=ROOT,
                                  stdout=log, stderr=subprocess.STDOUT, timeout=900)
        out = cpu_log.read_text()
        assert proc.returncode == 0, out[-6000:]
        assert "this cluster declares no node types" in out and "the autoscaler decides" in out, out[-4000:]
        assert re.search(r"Sweep 'cpu-smoke[^']*': 2 trials \(2 complete, 0 failed", out), out[-3000:]

    # every object under the storage root, scanned for the secret key: Tune's tuner.pkl, Train's state,
    # checkpoints, run directories, token caches
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    objects = [o["Key"] for p in pages for o in p.get("Contents", [])]
    assert any(k.endswith("tuner.pkl") for k in objects), "no tuner.pkl: the scan would prove nothing"
    hits = [k for k in objects if SECRET.encode() in s3.get_object(Bucket=BUCKET, Key=k)["Body"].read()]
    assert not hits, f"the secret access key is written in clear text in {hits[:5]}"
