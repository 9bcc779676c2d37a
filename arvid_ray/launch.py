"""ExperimentConfig → a training run: a Ray Train ``TorchTrainer`` (or the same loop in-process).

Design trade-off: the MLflow run is created here, in the driver, and handed to rank 0 by id, so that
worker-group restarts keep logging into one run; the run's name and where its files live come from
``arvid_ray.runs`` (stable names: a relaunch resumes from the run's latest checkpoint). The end-of-run
evaluation is ``arvid_ray.evaluate.final_eval``, handed to the workers as a hook, so this module calls
into evaluation and never the reverse.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from arvid_ray.config import ExperimentConfig
from arvid_ray.runs import local_run_dir as _local_run_dir
from arvid_ray.runs import resolve_for_workers, run_location, run_name, sync_run_dir, train_storage
from arvid_ray.tracking import Tracker

log = logging.getLogger(__name__)

# run_name, train_storage, run_location, resolve_for_workers (and _local_run_dir, sync_run_dir): arvid_ray.runs,
# importable from here as before
__all__ = ["launch", "build_trainer", "run_name", "train_storage", "run_location", "resolve_for_workers",
           "LaunchResult", "sync_run_dir"]


@dataclass
class LaunchResult:
    run_name: str
    run_dir: str
    checkpoint: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    mlflow_run_id: str | None = None


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

    from arvid_ray.evaluate import final_eval
    from arvid_ray.evaluate.during import QualityWatch
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
            "final_hook": final_eval if cfg.train.final_eval else None,
            "quality_watch": QualityWatch if cfg.eval.quality_every > 0 else None,
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
    from arvid_ray.evaluate import final_eval
    from arvid_ray.evaluate.during import QualityWatch
    from arvid_ray.train import checkpoint as ckpt
    from arvid_ray.train.cost import COST_UNIT_TAG, cost_unit, detect_accelerator
    from arvid_ray.train.loop import LocalReporter, cycle, train_loop

    run_dir = _local_run_dir(cfg)
    tracker = Tracker(cfg, run_dir)
    run_id = tracker.start(run_name=cfg.train.run_name, resume_by_name=True)
    tracker.log_config()
    tracker.set_tags({COST_UNIT_TAG: cost_unit(detect_accelerator(cfg.cost.accelerator))})
    ckpt_root = run_dir / "checkpoints"
    resume = ckpt.latest_checkpoint(ckpt_root)
    from arvid_ray.tokenizer import load_tokenizer

    tok = load_tokenizer(cfg.tokenizer) if not cfg.data.tokens_path else None  # loaded once, not per epoch
    bs, seed = cfg.data.batch_size, cfg.experiment.seed
    batches = cycle(
        lambda epoch: local_token_batches(cfg, cfg.data.train_split, bs, seed=seed + epoch, tokenizer=tok)
    )
    val = lambda: local_token_batches(cfg, cfg.data.val_split, bs, seed=seed, tokenizer=tok)  # noqa: E731
    # one process, no Ray: the evaluations during training run in line, after each due checkpoint
    quality = QualityWatch(cfg, run_id, tracker, inline=True) if cfg.eval.quality_every > 0 else None
    try:
        result = train_loop(
            cfg,
            batches,
            reporter=LocalReporter(tracker, ckpt_root, cfg.train.keep_checkpoints, quality=quality),
            val_batches=val,
            resume_from=resume,
            final_hook=partial(final_eval, tracker=tracker, out_dir=run_dir / "eval")
            if cfg.train.final_eval
            else None,
        )
    except BaseException:
        tracker.end("FAILED")
        raise
    if quality is not None:
        quality.finish()
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
    (with every CPU taken by workers the dataset never starts — see docs/ray_notes.md)."""
    from arvid_ray.ray_session import connect, cpus_for_workers

    connect(max(os.cpu_count() or 1, cpus_for_workers(cfg.train.num_workers, cfg.train.cpus_per_worker)))


def launch(cfg: ExperimentConfig, datasets: dict[str, Any] | None = None) -> LaunchResult:
    """Train ``cfg``: in-process when train.num_workers == 0, else a Ray Train run (resumes by name)."""
    from arvid_ray.preflight import check_inputs, check_resources

    cfg = resolve_for_workers(cfg)
    check_inputs(cfg, cluster=bool(os.environ.get("RAY_ADDRESS")))  # before Ray starts or any run exists
    if cfg.train.num_workers == 0:
        return _launch_local(cfg)
    _init_local_ray(cfg)  # a process already connected (a sweep's trial, a test session) stays as it is
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

