"""Every file under cluster/ is checked against the schema of the tool that will read it.

Launcher YAMLs: Ray's own `ray/autoscaler/ray-schema.json` and Ray's config preparation; AWS node configs
also against botocore's EC2 RunInstances model (the launcher passes them to boto3 verbatim). KubeRay
manifests: the RayCluster/RayJob CRD openAPIV3Schema vendored in tests/data/crds (see SOURCE.md there).
Schema validation lets unknown keys through (node_config is free-form, CRDs prune silently), so each
check also walks the file and requires every key it sets to be a known property. The head start command
is run for real: the MLflow server it starts must answer on 127.0.0.1 and on the head's private address
and store artifacts in S3 (a moto server here).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from cluster_shared import (
    CLUSTER,
    DATASET_CONFIGS,
    ENTRY,
    IMAGE_ROOT,
    ROOT,
    _commands,
    _load,
)


# --------------------------------------------------------------- the head's MLflow command, for real
def _mlflow_command(cfg: dict) -> str:
    (cmd,) = [c for c in cfg["head_start_ray_commands"] if "mlflow server" in c]
    return cmd


def _pg_command(cfg: dict) -> str:
    (cmd,) = [c for c in cfg["head_start_ray_commands"] if "initdb" in c]
    return cmd


def _as_postgres_user() -> dict:
    """PostgreSQL refuses to run as root: run the head's database command as Debian's `postgres` user."""
    if os.geteuid() != 0:
        return {}
    import pwd

    user = pwd.getpwnam("postgres")
    return {"user": user.pw_uid, "group": user.pw_gid}


@pytest.mark.slow
@pytest.mark.skipif(not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")),
                    reason="Debian's postgresql not installed (.ci/run installs it)")
def test_head_mlflow_server_on_postgres_binds_loopback_and_private_ip_with_s3_artifacts(s3_server):
    """Run aws.yaml's database and MLflow start commands here: 127.0.0.2 plays the head's private address."""
    import tempfile

    import boto3
    from servers import free_port

    cfg = _load(CLUSTER / "aws.yaml")
    port, pg_port = free_port(), free_port()
    bucket = re.search(r"ARVID_STORAGE=s3://([^/\s]+)", _commands(cfg, "setup_commands")).group(1)
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket=bucket)
    home = Path(tempfile.mkdtemp(prefix="arvid-head-"))  # under /tmp: the postgres user must reach it
    (home / "mlflow").mkdir(parents=True)
    (home / ".arvid-ray.env").write_text(re.search(r"echo '(export ARVID_STORAGE=\S+)'",
                                                   _commands(cfg, "setup_commands")).group(1) + "\n")
    run_as = _as_postgres_user()
    if run_as:
        for path in (home, home / "mlflow", home / ".arvid-ray.env"):
            os.chown(path, run_as["user"], run_as["group"])
    env = {**os.environ, "HOME": str(home), "MLFLOW_S3_ENDPOINT_URL": s3_server,
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    pg = _pg_command(cfg).replace("5432", str(pg_port))
    subprocess.run(["bash", "-c", pg], env=env, check=True, timeout=300, cwd=home, **run_as)
    # one server worker instead of four only saves CPU on the test machine
    cmd = (_mlflow_command(cfg).replace("$(hostname -I | awk '{print $1}')", "127.0.0.2")
           .replace("--workers 4", "--workers 1").replace(":5000", f":{port}").replace("--port 5000", f"--port {port}")
           .replace("5432", str(pg_port)).replace("/home/ray/", f"{home}/"))
    assert "postgresql+psycopg2://mlflow@127.0.0.1:" in cmd  # the default backend is the head's PostgreSQL
    subprocess.run(["bash", "-c", cmd], env=env, check=True, timeout=30)
    # the command starts the server in its own session and records its id, as the head's stop command uses
    pgid = int((home / "mlflow" / "server.pid").read_text())
    try:
        for host in ("127.0.0.1", "127.0.0.2"):
            _wait_ok(f"http://{host}:{port}/health", home / "mlflow" / "server.log", timeout=600)
        # a client inside the cluster (the private address) logs an artifact; it lands in the bucket
        code = (f"import mlflow; mlflow.set_tracking_uri('http://127.0.0.2:{port}'); mlflow.set_experiment('e')\n"
                "with mlflow.start_run(): mlflow.log_text('hello', 'note.txt'); mlflow.log_metric('m', 1.0)")
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert any(k.startswith("arvid-ray/mlflow-artifacts/") and k.endswith("/note.txt") for k in keys), keys
        tables = subprocess.run([next(Path("/usr/lib/postgresql").glob("*/bin/psql")), "-h", "127.0.0.1", "-p",
                                 str(pg_port), "-U", "mlflow", "-d", "mlflow", "-Atc", "SELECT count(*) FROM runs"],
                                capture_output=True, text=True, check=True)
        assert tables.stdout.strip() == "1"  # the run is in PostgreSQL, not in a sqlite file
    finally:  # the head's own stop command (re-run by every `ray up`) must take the whole server down
        (stop,) = [c for c in cfg["head_start_ray_commands"] if "server.pid" in c and "kill" in c]
        subprocess.run(["bash", "-c", stop], env=env, timeout=30)
        stopped = _wait_group_gone(pgid)
        if not stopped:
            os.killpg(pgid, signal.SIGKILL)
        pg_ctl = next(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        subprocess.run([pg_ctl, "-D", str(home / "mlflow" / "pg"), "stop", "-m", "immediate"], env=env,
                       capture_output=True, timeout=60, **run_as)
        assert stopped, "the stop command in head_start_ray_commands left the MLflow server running"
        assert not (home / "mlflow" / "server.pid").exists()
        import shutil

        shutil.rmtree(home, ignore_errors=True)


def _wait_group_gone(pgid: int, grace: float = 60.0) -> bool:
    """Wait for gunicorn's graceful exit: True once no process of the group is left."""
    deadline = time.time() + grace
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.5)
    return False


def _wait_ok(url: str, log: Path, timeout: float = 180.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout}s; server log:\n{log.read_text()[-3000:]}")


def _readme_submit_argv() -> list[str]:
    """The argv after `--` of cluster/README.md's `ray job submit` (dry-run) command."""
    text = (CLUSTER / "README.md").read_text().replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if ln.startswith("ray job submit") and "--dry-run" in ln]
    argv = shlex.split(line)
    return argv[argv.index("--") + 1:]


@pytest.fixture()
def west_bucket(s3_server, monkeypatch, tmp_path):
    """The README's bucket on a local S3 server, created in us-west-2, with no region in the environment;
    every dataset ingested (one object each) and an I3D file; MLflow on a sqlite file."""
    import boto3

    from arvid_ray import storage as st

    for var in ("AWS_REGION", "AWS_DEFAULT_REGION", "RAY_ADDRESS", "ARVID_RAYCLUSTER", "RAY_CLUSTER_NAME",
                "ARVID_I3D_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(st, "_REGIONS", {})
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/ray_bootstrap_config.yaml but the one a test writes
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-west-2")
    made = set()

    def make(bucket: str) -> str:
        if bucket not in made:
            with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):  # the server is per session
                s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
            for name in DATASET_CONFIGS:
                s3.put_object(Bucket=bucket, Key=f"{name}/videos.parquet/part-0.parquet", Body=b"rows")
            s3.put_object(Bucket=bucket, Key="i3d/i3d_torchscript.pt", Body=b"torchscript")
            made.add(bucket)
        return bucket

    return make


@pytest.fixture
def starts_no_ray(monkeypatch):
    """Fails the test if it calls ``ray.init`` (another test of the session may already have connected
    this process to the suite's shared Ray, so ``ray.is_initialized()`` alone cannot tell)."""
    import ray

    before, calls = ray.is_initialized(), []

    def refuse(*args, **kwargs):
        calls.append((args, kwargs))
        raise AssertionError(f"the dry run called ray.init{args or ''}{kwargs or ''}")

    monkeypatch.setattr(ray, "init", refuse)
    yield calls
    assert not calls and ray.is_initialized() == before


def _dry_run(argv: list[str], capsys) -> tuple[int, str, str]:
    import tune_window

    assert argv[0] == "python" and argv[1].endswith(ENTRY)
    code = tune_window.main(argv[2:])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("dataset", DATASET_CONFIGS)
def test_readme_command_passes_the_dry_run_for_every_dataset_config(dataset, west_bucket, monkeypatch, capsys,
                                                                      tmp_path, starts_no_ray):
    """cluster/README.md's submit command, as written (bucket name and dataset name filled in), passes
    `--dry-run` on each cluster file's declared node types: the launcher's bootstrap config on the head
    (aws.yaml, gcp.yaml), or the RayCluster (KubeRay); it starts no Ray and no MLflow run."""

    bucket = west_bucket("your-bucket")
    argv = [a.replace("YOUR-BUCKET", bucket).replace("ucf101", dataset) for a in _readme_submit_argv()]
    assert (ROOT / argv[argv.index("--config") + 1]).is_file()
    if dataset == "paper_B":  # the built-in synthetic data: no data.source (README says so)
        argv = [a for a in argv if not a.startswith("data.source=")]
    monkeypatch.setenv("ARVID_STORAGE", f"s3://{bucket}/arvid-ray")
    for cluster_file in ("aws.yaml", "gcp.yaml", "kuberay/raycluster.yaml"):
        if cluster_file.startswith("kuberay"):
            monkeypatch.setenv("ARVID_AUTOSCALING_CONFIG", str(CLUSTER / cluster_file))
        else:  # what `ray up` writes on the head
            monkeypatch.delenv("ARVID_AUTOSCALING_CONFIG", raising=False)
            (tmp_path / "ray_bootstrap_config.yaml").write_text((CLUSTER / cluster_file).read_text())
        code, out, err = _dry_run(argv, capsys)
        assert code == 0, (cluster_file, err)
        assert "region us-west-2" in out and "=> would launch" in out and "node types (declared)" in out
        assert "GPU: 1" in out and "per trial: 8 Train workers" in out
        accelerator = {"aws.yaml": "A10G", "gcp.yaml": "L4"}.get(cluster_file)  # the cheapest that hosts 8
        assert (f"accelerator: {accelerator} for every trial" in out) == bool(accelerator), out
    assert not starts_no_ray and not (tmp_path / "mlflow.db").exists()


def test_rayjob_entrypoint_passes_the_dry_run(west_bucket, monkeypatch, capsys):
    job = _load(CLUSTER / "kuberay" / "rayjob.yaml")
    env = {e["name"]: e.get("value") for e in job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
           ["containers"][0]["env"]}
    shipped = env["ARVID_STORAGE"].split("/")[2]  # the manifest's bucket, renamed as README step 0's sed does
    bucket = west_bucket("rayjob-west-bucket")
    monkeypatch.setenv("ARVID_STORAGE", env["ARVID_STORAGE"].replace(shipped, bucket))
    manifest = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "arvid-ray-sweep-x"},
                "spec": job["spec"]["rayClusterSpec"]}
    path = CLUSTER.parent / "test-artifacts"
    path.mkdir(exist_ok=True)
    (path / "rayjob-cluster.yaml").write_text(yaml.safe_dump(manifest))
    monkeypatch.setenv("ARVID_AUTOSCALING_CONFIG", str(path / "rayjob-cluster.yaml"))
    argv = [a.replace(IMAGE_ROOT, str(ROOT) + "/").replace(shipped, bucket)
            for a in shlex.split(job["spec"]["entrypoint"])]
    code, out, err = _dry_run([*argv, "--dry-run"], capsys)
    assert code == 0, err
    assert f"s3://{bucket}/" in out and "region us-west-2" in out


def test_dry_run_refuses_with_exit_2_and_names_every_problem(west_bucket, monkeypatch, capsys, tmp_path,
                                                             starts_no_ray):
    """A refused dry run: exit 2, one line per refusal, nothing started; the CLI's sweep does the same."""
    from servers import free_port

    from arvid_ray import cli

    bucket = west_bucket("refused-bucket")
    monkeypatch.setenv("ARVID_STORAGE", f"s3://{bucket}/arvid-ray")
    (tmp_path / "ray_bootstrap_config.yaml").write_text((CLUSTER / "aws.yaml").read_text())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    argv = [a.replace("YOUR-BUCKET", bucket) for a in _readme_submit_argv()]
    code, out, err = _dry_run([*argv, "train.num_workers=33"], capsys)  # aws.yaml declares 32 GPUs in all
    assert code == 2 and "=> refused (3)" in out
    assert "tracking server http://127.0.0.1:" in err and "train.num_workers=33" in err and "room for 32" in err
    assert "train.global_batch_size = 128 is not a multiple of train.num_workers (33)" in err  # 33 x 16 micro
    no_i3d = [a for a in argv if not a.startswith("eval.i3d_path=")]
    code, out, err = _dry_run(no_i3d, capsys)
    assert code == 2 and "eval.i3d_path" in err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    config = argv[argv.index("--config") + 1]
    assert cli.main(["sweep", "--config", str(ROOT / config), "--dry-run", f"data.source=s3://{bucket}/ucf101",
                     "eval.extractor=synthc3d", "sweep.metric=eval/fd_synthc3d"]) == 0  # FVD opted out explicitly
    assert "=> would launch" in capsys.readouterr().out
    assert cli.main(["sweep", "--config", str(ROOT / config), "--dry-run", f"data.source=s3://{bucket}/ucf101",
                     "eval.extractor=synthc3d"]) == 2  # the quality metric would never be logged
    assert "sweep.metric = 'eval/fvd' is never logged with eval.extractor=synthc3d" in capsys.readouterr().err
    assert cli.main(["sweep", "--config", str(ROOT / config), "--dry-run", f"data.source=s3://{bucket}/none"]) == 2
    assert not starts_no_ray and not (tmp_path / "mlflow.db").exists()
