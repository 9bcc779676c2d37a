"""ExperimentConfig → a training run: a Ray Train ``TorchTrainer`` (or the same loop in-process).

Design trade-off: run names are *stable* — ``train.run_name`` or experiment name + a short hash of the
resolved config (no timestamp) — so re-launching the same config, a Ray retry or a Tune restore resumes
from the run's latest checkpoint instead of starting over; the price is that two deliberately separate
runs of one config must be given different ``train.run_name``s. The MLflow run is created here, in the
driver, and handed to rank 0 by id, so that worker-group restarts keep logging into one run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from arvid_ray.config import ExperimentConfig
from arvid_ray.tracking import Tracker, resolve_tracking_uri

log = logging.getLogger(__name__)

__all__ = ["launch", "build_trainer", "run_name", "train_storage", "run_location", "resolve_for_workers",
           "LaunchResult"]

# Fields that do not change what is trained; they are left out of the run-name hash.
_NOT_IDENTITY = (
    "tracking.",
    "sweep.",
    "experiment.workdir",
    "storage.",
    "train.run_name",
    "train.storage_path",
    "train.resources_per_worker",
    "train.accelerator_type",
    "train.resource_timeout_s",
    "train.report_every",
    "train.parallelism",  # full state dicts: a run resumes under either parallelism
    "train.activation_checkpointing",
    "train.fail_at_step",
    "train.max_failures",
    "train.log_every",
    "train.num_workers",
    "train.cpus_per_worker",
    "train.final_eval",
)


@dataclass
class LaunchResult:
    run_name: str
    run_dir: str
    checkpoint: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    mlflow_run_id: str | None = None


def run_name(cfg: ExperimentConfig) -> str:
    """cfg.train.run_name, else '<experiment>-<8 hex of the config hash>' (stable, no timestamp)."""
    if cfg.train.run_name:
        return cfg.train.run_name
    flat = {k: v for k, v in cfg.to_flat().items() if not k.startswith(_NOT_IDENTITY)}
    digest = hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{cfg.experiment.name}-{digest}"


def train_storage(cfg: ExperimentConfig) -> str:
    """Ray Train storage: ``train.storage_path`` (local dir or URI), else ``<storage root>/runs``."""
    from arvid_ray import storage as st

    path = cfg.train.storage_path
    return st.absolute(path) if path else st.join(st.storage_root(cfg), "runs")


def run_location(cfg: ExperimentConfig) -> str:
    """The run's directory under Train storage (metrics.jsonl, eval samples, fault marker): a local path
    on one machine, a URI under the storage root on a cluster."""
    from arvid_ray import storage as st

    return st.join(train_storage(cfg), run_name(cfg))


def resolve_for_workers(cfg: ExperimentConfig) -> ExperimentConfig:
    """Make every path and URI absolute and fix the run name and storage root: Ray workers run in another
    directory, on other nodes, with another environment (ARVID_STORAGE is read here, on the driver)."""
    from arvid_ray import storage as st

    return cfg.replace(
        **{
            "experiment.workdir": str(cfg.experiment.workdir_path()),
            "storage.root": st.storage_root(cfg),
            "tracking.uri": resolve_tracking_uri(cfg) if cfg.tracking.enabled else cfg.tracking.uri,
            "train.run_name": run_name(cfg),
        }
    )


def _local_run_dir(cfg: ExperimentConfig) -> Path:
    """A local directory for the run's files: the run location itself when it is local, else a staging
    directory on this node whose contents are uploaded to the run location (``sync_run_dir``)."""
    import tempfile

    from arvid_ray import storage as st

    where = run_location(cfg)
    if not st.is_remote(where):
        return Path(where)
    return Path(tempfile.gettempdir()) / "arvid-ray-runs" / run_name(cfg)


def sync_run_dir(cfg: ExperimentConfig, local: Path) -> None:
    """Upload the staged run files to the run location when it is remote (no-op locally)."""
    from arvid_ray import storage as st

    where = run_location(cfg)
    if st.is_remote(where) and local.is_dir():
        st.upload_dir(str(local), where, cfg.storage)


def _final_eval(cfg: ExperimentConfig, model, tracker=None, out_dir=None) -> dict[str, float]:
    """The end-of-run evaluation (rank 0, before the last report): samples, FD, consistency, drift.
    Its files are uploaded to the run location when that is remote (rank 0 may be a spot node)."""
    from arvid_ray.evaluate import evaluate_model
    from arvid_ray.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(cfg.tokenizer, device=str(next(model.parameters()).device))
    local = _local_run_dir(cfg)
    out_dir = Path(out_dir) if out_dir is not None else local / "eval"
    metrics = evaluate_model(cfg, model, tokenizer, out_dir=out_dir, tracker=tracker, step=cfg.train.steps)
    sync_run_dir(cfg, local)
    return metrics


def _start_tracking(cfg: ExperimentConfig, run_dir: Path) -> tuple[ExperimentConfig, str | None]:
    """Create (or reuse cfg.tracking.run_id) the MLflow run in the driver; hand its id to the workers."""
    if not cfg.tracking.enabled or cfg.tracking.run_id:
        return cfg, cfg.tracking.run_id
    tracker = Tracker(cfg.replace(**{"tracking.system_metrics": False}), run_dir)
    run_id = tracker.start(run_name=cfg.train.run_name, resume_by_name=True)
    return (cfg.replace(**{"tracking.run_id": run_id}) if run_id else cfg), run_id


def build_trainer(
    cfg: ExperimentConfig, callbacks: list | None = None, datasets: dict[str, Any] | None = None
):
    """The TorchTrainer for ``cfg`` (not yet fitted). ``datasets`` defaults to the token datasets of
    cfg.data (train and val splits) from ``arvid_ray.data.token_dataset``."""
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from arvid_ray.train.worker import train_worker

    cfg = resolve_for_workers(cfg)
    run_dir = _local_run_dir(cfg)
    cfg, _ = _start_tracking(cfg, run_dir)
    # rows that are the same every epoch may be replayed from worker memory (data.worker_cache_mb): a
    # token cache, or datasets the caller built; clips tokenized on the fly get new random starts per pass
    fixed_rows = datasets is not None or bool(cfg.data.tokens_path)
    if datasets is None:
        from arvid_ray.data import token_dataset

        datasets = {
            "train": token_dataset(cfg, cfg.data.train_split, train=True),
            "val": token_dataset(cfg, cfg.data.val_split, train=False),
        }
    workers = max(1, cfg.train.num_workers)
    t = cfg.train
    # ask for exactly what the config says: on a cluster scaled to zero there is no GPU *yet*, and the
    # autoscaler launches one only when something asks (never fall back to CPU by looking)
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "60")  # propagated to the controller
    start_timeout = float(os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"])
    backend = t.backend if t.backend != "auto" else ("nccl" if t.use_gpu and t.device == "auto" else "gloo")
    extra = {k: v for k, v in t.resources_per_worker.items() if k != "GPU"}
    return TorchTrainer(
        train_worker,
        train_loop_config={
            "cfg": cfg.to_dict(),
            "run_dir": str(run_dir),
            "has_val": "val" in datasets,
            "fixed_train_rows": fixed_rows,
            "final_hook": _final_eval if cfg.train.final_eval else None,
        },
        torch_config=TorchConfig(backend=backend),
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, use_gpu=t.use_gpu, accelerator_type=t.accelerator_type,
            resources_per_worker={"CPU": t.cpus_per_worker, **({"GPU": t.resources_per_worker.get("GPU", 1)}
                                                               if t.use_gpu else {}), **extra},
        ),
        run_config=ray.train.RunConfig(
            name=cfg.train.run_name,
            **_train_storage_args(cfg),
            callbacks=callbacks or None,
            failure_config=ray.train.FailureConfig(
                max_failures=cfg.train.max_failures,
                # each failed attempt to get the workers' resources waits start_timeout; then fail with
                # Ray Train's WorkerGroupStartupTimeoutError instead of waiting forever
                controller_failure_limit=max(1, math.ceil(t.resource_timeout_s / start_timeout))),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
        ),
        datasets=datasets,
    )


def _train_storage_args(cfg: ExperimentConfig) -> dict[str, Any]:
    """RunConfig storage: a remote location goes with its pyarrow filesystem (endpoint and credentials
    travel to every node) and the path inside it, as Ray expects; a local one as a plain path."""
    from arvid_ray import storage as st

    where = train_storage(cfg)
    if not st.is_remote(where):
        return {"storage_path": where}
    filesystem, inner = st.resolve(where, cfg.storage)
    return {"storage_path": inner, "storage_filesystem": filesystem}


def _launch_local(cfg: ExperimentConfig) -> LaunchResult:
    """train.num_workers=0: the loop in this process over local_token_batches, no Ray."""
    from arvid_ray.data import local_token_batches
    from arvid_ray.train import checkpoint as ckpt
    from arvid_ray.train.loop import LocalReporter, cycle, train_loop

    run_dir = _local_run_dir(cfg)
    tracker = Tracker(cfg, run_dir)
    run_id = tracker.start(run_name=cfg.train.run_name, resume_by_name=True)
    tracker.log_config()
    ckpt_root = run_dir / "checkpoints"
    resume = ckpt.latest_checkpoint(ckpt_root)
    from arvid_ray.tokenizer import load_tokenizer

    tok = load_tokenizer(cfg.tokenizer) if not cfg.data.tokens_path else None  # loaded once, not per epoch
    bs, seed = cfg.data.batch_size, cfg.experiment.seed
    batches = cycle(
        lambda epoch: local_token_batches(cfg, cfg.data.train_split, bs, seed=seed + epoch, tokenizer=tok)
    )
    val = lambda: local_token_batches(cfg, cfg.data.val_split, bs, seed=seed, tokenizer=tok)  # noqa: E731
    try:
        result = train_loop(
            cfg,
            batches,
            reporter=LocalReporter(tracker, ckpt_root, cfg.train.keep_checkpoints),
            val_batches=val,
            resume_from=resume,
            final_hook=partial(_final_eval, tracker=tracker, out_dir=run_dir / "eval")
            if cfg.train.final_eval
            else None,
        )
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")
    latest = ckpt.latest_checkpoint(ckpt_root)
    return LaunchResult(
        run_name=cfg.train.run_name,
        run_dir=str(run_dir),
        checkpoint=str(latest) if latest else None,
        metrics=result.metrics,
        mlflow_run_id=run_id,
    )


def _init_local_ray(cfg: ExperimentConfig) -> None:
    """Connect to RAY_ADDRESS if set; else start local Ray with CPUs left for Ray Data beyond the workers
    (with every CPU taken by workers the dataset never starts — see RAY_NOTES.md)."""
    import ray

    if os.environ.get("RAY_ADDRESS"):
        ray.init()
        return
    needed = math.ceil(max(1, cfg.train.num_workers) * cfg.train.cpus_per_worker) + 2
    ray.init(num_cpus=max(os.cpu_count() or 1, needed))


def launch(cfg: ExperimentConfig, datasets: dict[str, Any] | None = None) -> LaunchResult:
    """Train ``cfg``: in-process when train.num_workers == 0, else a Ray Train run (resumes by name)."""
    from arvid_ray.preflight import check_inputs, check_resources

    cfg = resolve_for_workers(cfg)
    check_inputs(cfg, cluster=bool(os.environ.get("RAY_ADDRESS")))  # before Ray starts or any run exists
    if cfg.train.num_workers == 0:
        return _launch_local(cfg)
    import ray

    if not ray.is_initialized():
        _init_local_ray(cfg)
    check_resources(cfg)
    cfg, run_id = _start_tracking(cfg, _local_run_dir(cfg))
    result = build_trainer(cfg, datasets=datasets).fit()
    checkpoint = result.checkpoint.path if result.checkpoint is not None else None
    return LaunchResult(
        run_name=cfg.train.run_name,
        run_dir=str(_local_run_dir(cfg)),
        checkpoint=checkpoint,
        metrics=dict(result.metrics or {}),
        mlflow_run_id=run_id,
    )

