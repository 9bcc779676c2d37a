"""Tracking under faults and load: step time while the MLflow server is down, and concurrent writers.

    nice -n 10 python experiments/benchmarks/bench_tracking.py [--quick] [--only outage|cadence|load]

- ``outage``: a real training loop (debug model, in one process) logs every step through a Tracker to a
  real `mlflow server` that is killed after a few steps and restarted later. ``RATIO
  step_time_down_over_up`` is the median step time (wall clock between consecutive metrics.jsonl lines)
  while the server is down over the median of the whole run (target <= 1.5); every step must be in
  MLflow afterwards (``lost_points``).
- ``cadence`` (issue 27): what `arvid-ray train` does — the driver creates the run, the training process
  resumes it by id with MLflow system metrics on, logs every 10 steps and checkpoints every 20 — with the
  server killed after step 20 (checkpoints inside the outage) and restarted 10 intervals later. ``RATIO
  worst_interval_down_over_median_up``: the slowest 10-step interval (the loop's own metrics.jsonl
  timestamps) while the server is down over the median interval while it is up (target <= 1.5); nothing
  may be lost, and ``end_s`` is how long the run took to end after its last step.
- ``load``: 16 writer processes x 500 ``log_batch`` calls (10 metrics each) against a real `mlflow
  server` on PostgreSQL (Debian's server, started here on 127.0.0.1 with initdb in a temp dir) and on
  sqlite: lost points and errors per backend, batches/s, ``RATIO load_postgres_over_sqlite_batches_per_s``.

Also used by the tests (``train-run`` child mode, ``PostgresServer``, ``run_outage``, ``run_load``). The
server helpers (``MlflowServer``, ``free_port``, ``wait_http``) live in tests/support/servers.py, shared with
tests/conftest.py.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "support"))
from servers import MlflowServer, free_port, wait_http  # noqa: E402 - the one copy, shared with the tests

__all__ = ["MlflowServer", "PostgresServer", "free_port", "wait_http"]

EXPERIMENT = "bench-tracking"


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[::-1]), None)
    if not found:
        raise FileNotFoundError(f"PostgreSQL's {name} not found: apt-get install postgresql")
    return found


def postgres_available() -> bool:
    try:
        _pg_bin("initdb")
        import psycopg2  # noqa: F401 - the driver MLflow's SQLAlchemy store uses for postgresql://
    except (FileNotFoundError, ImportError):
        return False
    return True


class PostgresServer:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (initdb in a temp dir; as the `postgres` user when
    run as root, which PostgreSQL refuses to run as)."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="arvid-pg-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.user = None
        if os.geteuid() == 0:
            import pwd

            for name in ("postgres", "nobody"):
                try:
                    self.user = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue

    def _run_as(self) -> dict:
        return {"user": self.user.pw_uid, "group": self.user.pw_gid} if self.user else {}

    def start(self, database: str = "mlflow") -> str:
        """Start it and create ``database``; returns the SQLAlchemy URI."""
        if self.user:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        data = self.dir / "data"
        subprocess.run([_pg_bin("initdb"), "-D", str(data), "-U", "arvid", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True, cwd=self.dir, **self._run_as())
        log = open(self.dir / "postgres.log", "a")  # noqa: SIM115 - owned by the child
        if self.user:
            os.chown(self.dir / "postgres.log", self.user.pw_uid, self.user.pw_gid)
        self.proc = subprocess.Popen(
            [_pg_bin("postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(self.port), "-k", str(self.dir),
             "-c", "max_connections=200", "-c", "fsync=off"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.dir, start_new_session=True, **self._run_as())
        deadline = time.time() + 60
        while subprocess.run([_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                             capture_output=True).returncode != 0:
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {(self.dir / 'postgres.log').read_text()[-2000:]}")
            time.sleep(0.3)
        subprocess.run([_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "arvid", database],
                       check=True, capture_output=True)
        return f"postgresql+psycopg2://arvid@127.0.0.1:{self.port}/{database}"  # the driver pyproject names

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------------------------------ outage
def _pattern_batches(epoch: int, batch_size: int = 4, n_batches: int = 8):
    """Class-conditioned token grids [B, 3, 4, 4] a debug model can fit (as tests/unit/test_train_loop.py)."""
    import torch

    g = torch.Generator().manual_seed(1000 + epoch)
    t, i, j = torch.arange(3).view(1, 3, 1, 1), torch.arange(4).view(1, 1, 4, 1), torch.arange(4).view(1, 1, 1, 4)
    for _ in range(n_batches):
        label = torch.randint(16, (batch_size,), generator=g)
        tokens = (label.view(-1, 1, 1, 1) * 37 + t * 5 + i * 3 + j) % 1000  # (B, t, h, w)
        yield {"tokens": tokens.long(), "label": label, "caption": [""] * batch_size}


def train_run(uri: str, run_dir: str, steps: int, flush_s: float, name: str, step_sleep: float = 0.0,
              log_every: int = 1, ckpt_every: int = 0, eval_every: int = 20, like_train: bool = False) -> int:
    """A real training loop (debug model, one process) logging every ``log_every`` steps through a Tracker to
    ``uri``; ends the run FINISHED and prints tracking_summary (what `arvid-ray train` prints).
    ``like_train``: as `arvid-ray train` — a first Tracker creates the run (the driver), the loop's Tracker
    resumes it by id with MLflow system metrics on (rank 0 of the workers)."""
    import torch

    from arvid_ray.config import ExperimentConfig
    from arvid_ray.tracking import Tracker, tracking_summary
    from arvid_ray.train.loop import LocalReporter, cycle, train_loop

    torch.set_num_threads(1)
    cfg = ExperimentConfig().replace(**{
        "experiment.name": EXPERIMENT, "tracking.uri": uri, "tracking.system_metrics": False,
        "tracking.flush_timeout_s": flush_s, "model.preset": "debug", "data.num_frames": 9, "data.resolution": 32,
        "data.batch_size": 4, "train.global_batch_size": 4, "train.steps": steps, "train.log_every": log_every,
        "train.eval_every": eval_every, "train.val_batches": 2, "train.ckpt_every": ckpt_every, "train.run_name": name,
    })
    if like_train:  # launch._start_tracking, then train_worker's rank 0
        created = Tracker(cfg, run_dir).start(run_name=name, resume_by_name=True)
        cfg = cfg.replace(**{"tracking.run_id": created, "tracking.system_metrics": True})
    tracker = Tracker(cfg, run_dir)
    run_id = tracker.start(run_name=name, resume_by_name=like_train)
    tracker.log_config()
    batches = cycle(_pattern_batches)
    if step_sleep:  # stands in for a longer step (a bigger model) where a blocked logger would show
        batches = (time.sleep(step_sleep) or b for b in batches)
    try:
        train_loop(cfg, batches, reporter=LocalReporter(tracker, Path(run_dir) / "checkpoints", 1),
                   val_batches=lambda: _pattern_batches(99, n_batches=2))
    except BaseException:
        tracker.end("FAILED")
        raise
    last = time.time()
    tracker.end("FINISHED")
    print(f"MLflow run: {run_id}")
    print(f"end_s {time.time() - last:.3f}")
    note = tracking_summary(run_dir)
    if note:
        print(note)
    return 0


def _lines(run_dir: Path) -> list[dict]:
    try:
        return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    except (OSError, ValueError):
        return []


def _wait_lines(run_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 900) -> int:
    deadline = time.time() + timeout
    while len(_lines(run_dir)) < n:
        if proc.poll() is not None:
            raise RuntimeError(f"training exited early ({proc.returncode})")
        if time.time() > deadline:
            raise TimeoutError(f"fewer than {n} metric lines after {timeout}s")
        time.sleep(0.1)
    return len(_lines(run_dir))


def run_outage(root: Path, steps: int, kill_at: int, down_steps: int, restart: bool = True,
               flush_s: float = 300.0, step_sleep: float = 0.05, extra: tuple[str, ...] = ()) -> dict:
    """Kill the server after ``kill_at`` metric lines, keep it down for ``down_steps`` more lines, then
    restart it (or not); ``extra``: more ``train-run`` flags (cadence). Returns the child's output, the gaps
    between lines, the outage window (in lines), the step of every line and the run directory."""
    server = MlflowServer(root / "server").start()
    run_dir = root / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, __file__, "train-run", "--uri", server.uri, "--run-dir", str(run_dir), "--steps",
           str(steps), "--flush-s", str(flush_s), "--name", root.name, "--step-sleep", str(step_sleep), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        down_from = _wait_lines(run_dir, kill_at, proc)
        server.kill()
        down_to = _wait_lines(run_dir, down_from + down_steps, proc)
        if restart:
            server.start()
        out, err = proc.communicate(timeout=1800)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = _lines(run_dir)
    times = [r["time"] for r in lines]
    gaps = [b - a for a, b in zip(times, times[1:])]
    return {"rc": proc.returncode, "stdout": out, "stderr": err, "gaps": gaps, "down": (down_from, down_to),
            "server": server, "run_dir": run_dir, "steps": [int(r["step"]) for r in lines]}


CADENCE = ("--log-every", "10", "--ckpt-every", "20", "--eval-every", "0", "--like-train")


def interval_ratio(res: dict) -> tuple[float, float, float]:
    """(worst interval while the server was down / median interval while it was up, that median, that
    worst) over the gaps between metrics.jsonl lines. Gap k runs from line k to line k + 1 (0-based); lines
    ``lo`` .. ``hi - 1`` were written while the server was down, so a gap is "down" when it ends at one of
    them (the first one spans the kill, the moment requests start failing) and "up" when it lies wholly
    before the kill or after the restart."""
    lo, hi = res["down"]
    down = [g for k, g in enumerate(res["gaps"]) if lo <= k + 1 <= hi - 1]
    up = [g for k, g in enumerate(res["gaps"]) if k + 1 <= lo - 1 or k >= hi]
    median = statistics.median(up)
    return max(down) / median, median, max(down)


def bench_cadence(quick: bool) -> list[str]:
    """Issue 27's cadence: log every 10 steps, checkpoints every 20 (inside the outage), run resumed by id
    with system metrics on, the server away for 10 intervals (the issue: 60 s)."""
    from mlflow import MlflowClient

    steps, down, sleep = (100, 6, 0.05) if quick else (400, 20, 0.1)
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
        res = run_outage(Path(tmp) / "cadence", steps=steps, kill_at=2, down_steps=down, step_sleep=sleep,
                         extra=CADENCE)
        try:
            assert res["rc"] == 0, res["stderr"][-2000:]
            ratio, median, worst = interval_ratio(res)
            run_id = json.loads((res["run_dir"] / "tracking.json").read_text())["run_id"]
            logged = {m.step for m in MlflowClient(res["server"].uri).get_metric_history(run_id, "train/loss")}
            lost = len(set(res["steps"]) - logged)
            status = MlflowClient(res["server"].uri).get_run(run_id).info.status
        finally:
            res["server"].kill()
    lo, hi = res["down"]
    end_s = next((float(x.split()[1]) for x in res["stdout"].splitlines() if x.startswith("end_s ")), float("nan"))
    return [f"cadence: {steps} steps, log every 10, checkpoint every 20, resumed by id with system metrics; server "
            f"down for steps {res['steps'][lo - 1]}..{res['steps'][hi - 1]}; median 10-step interval up "
            f"{median:.2f} s, worst while down {worst:.2f} s; lost_points {lost}; run {status}; end_s {end_s:.1f}",
            f"RATIO worst_interval_down_over_median_up {ratio:.3f}"]


def _step_ratio(res: dict) -> tuple[float, float, float]:
    lo, hi = res["down"]
    gaps = [g for k, g in enumerate(res["gaps"]) if (k + 2) % 20 != 0]  # drop the validation steps
    during = [g for k, g in enumerate(res["gaps"][lo:hi - 1], start=lo) if (k + 2) % 20 != 0]
    median, down = statistics.median(gaps), statistics.median(during)
    return down / median, median, max(during)


def bench_outage(quick: bool) -> list[str]:
    from mlflow import MlflowClient

    steps = 120 if quick else 300
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
        res = run_outage(Path(tmp) / "outage", steps=steps, kill_at=20, down_steps=40 if quick else 100)
        try:
            assert res["rc"] == 0, res["stderr"][-2000:]
            ratio, median, worst = _step_ratio(res)
            run_id = json.loads((res["run_dir"] / "tracking.json").read_text())["run_id"]
            logged = {m.step for m in MlflowClient(res["server"].uri).get_metric_history(run_id, "train/loss")}
            lost = steps - len(logged & set(range(1, steps + 1)))
            status = MlflowClient(res["server"].uri).get_run(run_id).info.status
        finally:
            res["server"].kill()
    return [f"outage: {steps} steps, server down for steps {res['down'][0]}..{res['down'][1]}; median step "
            f"{median * 1000:.1f} ms, slowest step while down {worst * 1000:.1f} ms; lost_points {lost}; run {status}",
            f"RATIO step_time_down_over_up {ratio:.3f}"]


# ------------------------------------------------------------------------------------------ load
def _writer(uri: str, run_id: str, writer: int, batches: int, metrics_per_batch: int, out: str) -> None:
    """One process: ``batches`` log_batch calls of ``metrics_per_batch`` metrics into its own run."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client, errors, t0 = MlflowClient(uri), [], time.time()
    for step in range(batches):
        now = int(time.time() * 1000)
        items = [Metric(f"load/m{k}", float(writer * 1e6 + step * 100 + k), now, step) for k in range(metrics_per_batch)]
        try:
            client.log_batch(run_id, metrics=items)
        except Exception as exc:  # noqa: BLE001 - counted, the test wants zero
            errors.append(str(exc).splitlines()[0][:300])
    Path(out).write_text(json.dumps({"errors": errors, "seconds": time.time() - t0}))


def run_load(uri: str, writers: int, batches: int, metrics_per_batch: int = 10) -> dict:
    """``writers`` processes write concurrently, each into its own run; then count what arrived."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp else client.create_experiment(EXPERIMENT)
    runs = [client.create_run(exp_id, run_name=f"writer-{w}").info.run_id for w in range(writers)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.time()
    procs = [subprocess.Popen([sys.executable, __file__, "writer", uri, runs[w], str(w), str(batches),
                               str(metrics_per_batch), str(tmp / f"{w}.json")], env=env) for w in range(writers)]
    for p in procs:
        p.wait()
    wall = time.time() - t0
    errors, lost = [], 0
    for w, run_id in enumerate(runs):
        res = json.loads((tmp / f"{w}.json").read_text()) if (tmp / f"{w}.json").exists() else {"errors": ["no result"]}
        errors += res["errors"]
        for k in range(metrics_per_batch):
            got = {m.step for m in client.get_metric_history(run_id, f"load/m{k}")}
            lost += batches - len(got & set(range(batches)))
    shutil.rmtree(tmp, ignore_errors=True)
    return {"errors": errors, "lost": lost, "wall_s": wall, "batches_per_s": writers * batches / wall,
            "points": writers * batches * metrics_per_batch}


def bench_load(quick: bool, args_workers: int = 2) -> None:
    writers, batches = 16, (30 if quick else 500)
    rates = {}
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        backends = [("sqlite", None)]
        pg = PostgresServer() if postgres_available() else None
        if pg is not None:
            backends.insert(0, ("postgres", pg.start()))
        try:
            for name, backend in backends:
                server = MlflowServer(Path(tmp) / name, backend, workers=args_workers).start()
                try:
                    res = run_load(server.uri, writers, batches)
                finally:
                    server.kill()
                rates[name] = res["batches_per_s"]
                print(f"load {name}: {writers} writers x {batches} batches ({res['points']} points) in "
                      f"{res['wall_s']:.1f} s = {res['batches_per_s']:.1f} batches/s; lost_points {res['lost']}; "
                      f"errors {len(res['errors'])}" + (f" (first: {res['errors'][0]})" if res["errors"] else ""))
        finally:
            if pg is not None:
                pg.stop()
    if "postgres" in rates:
        print(f"RATIO load_postgres_over_sqlite_batches_per_s {rates['postgres'] / rates['sqlite']:.3f}")
    else:
        print("load postgres: skipped (no PostgreSQL server binaries or psycopg2 here)")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["writer"]:
        uri, run_id, w, batches, per, out = argv[1:7]
        _writer(uri, run_id, int(w), int(batches), int(per), out)
        return 0
    if argv[:1] == ["train-run"]:
        p = argparse.ArgumentParser()
        for flag in ("--uri", "--run-dir", "--name"):
            p.add_argument(flag, required=True)
        p.add_argument("--steps", type=int, required=True)
        p.add_argument("--flush-s", type=float, default=30.0)
        p.add_argument("--step-sleep", type=float, default=0.0)
        p.add_argument("--log-every", type=int, default=1)
        p.add_argument("--ckpt-every", type=int, default=0)
        p.add_argument("--eval-every", type=int, default=20)
        p.add_argument("--like-train", action="store_true")
        a = p.parse_args(argv[1:])
        return train_run(a.uri, a.run_dir, a.steps, a.flush_s, a.name, a.step_sleep, a.log_every, a.ckpt_every,
                         a.eval_every, a.like_train)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and batches")
    parser.add_argument("--only", choices=["outage", "cadence", "load"], default=None,
                        help="outage: both outage cases (mean and cadence); cadence: issue 27's case alone")
    parser.add_argument("--server-workers", type=int, default=2,
                        help="mlflow server workers in the load test (uvicorn restarts workers that miss their "
                             "health check, so keep it small on an overloaded machine)")
    args = parser.parse_args(argv)
    t0 = time.time()
    if args.only in (None, "outage", "cadence"):
        cases = [bench_cadence] if args.only == "cadence" else [bench_outage, bench_cadence]
        results = [case(args.quick) for case in cases]
        for lines in results:
            print("\n".join(lines))
        print(f"outage cases: {time.time() - t0:.0f} s wall")
    if args.only in (None, "load"):
        t0 = time.time()
        bench_load(args.quick, args.server_workers)
        print(f"load: {time.time() - t0:.0f} s wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
