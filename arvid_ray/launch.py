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

__all__ = ["launch", "build_trainer", "run_name", "storage_root", "resolve_for_workers", "LaunchResult"]

# Fields that do not change what is trained; they are left out of the run-name hash.
_NOT_IDENTITY = (
    "tracking.",
    "sweep.",
    "experiment.workdir",
    "train.run_name",
    "train.storage_path",
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


def storage_root(cfg: ExperimentConfig) -> str:
    """Ray Train storage: cfg.train.storage_path (local dir or s3://) or <workdir>/runs (absolute)."""
    path = cfg.train.storage_path
    if path and "://" in path:
        return path
    return str(Path(path).expanduser().resolve()) if path else str(cfg.experiment.workdir_path() / "runs")


def resolve_for_workers(cfg: ExperimentConfig) -> ExperimentConfig:
    """Make every path and URI absolute and fix the run name: Ray workers run in another directory."""
    return cfg.replace(
        **{
            "experiment.workdir": str(cfg.experiment.workdir_path()),
            "tracking.uri": resolve_tracking_uri(cfg) if cfg.tracking.enabled else cfg.tracking.uri,
            "train.run_name": run_name(cfg),
        }
    )


def _local_run_dir(cfg: ExperimentConfig) -> Path:
    """Where metrics.jsonl and the fault-injection marker live (storage itself may be s3://)."""
    root = storage_root(cfg)
    base = Path(root) if "://" not in root else cfg.experiment.workdir_path() / "runs"
    return base / run_name(cfg)


def _final_eval(cfg: ExperimentConfig, model, tracker=None, out_dir=None) -> dict[str, float]:
    """The end-of-run evaluation (rank 0, before the last report): samples, FD, consistency, drift."""
    from arvid_ray.evaluate import evaluate_model
    from arvid_ray.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(cfg.tokenizer, device=str(next(model.parameters()).device))
    return evaluate_model(cfg, model, tokenizer, out_dir=out_dir, tracker=tracker, step=cfg.train.steps)


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
    use_gpu = cfg.train.use_gpu
    if use_gpu and ray.is_initialized() and not ray.cluster_resources().get("GPU", 0):
        log.warning("train.use_gpu=true but the Ray cluster has no GPU; falling back to CPU workers (gloo)")
        use_gpu = False
        cfg = cfg.replace(**{"train.use_gpu": False})
    workers = max(1, cfg.train.num_workers)
    return TorchTrainer(
        train_worker,
        train_loop_config={
            "cfg": cfg.to_dict(),
            "run_dir": str(run_dir),
            "has_val": "val" in datasets,
            "fixed_train_rows": fixed_rows,
            "final_hook": _final_eval if cfg.train.final_eval else None,
        },
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": cfg.train.cpus_per_worker}
        ),
        run_config=ray.train.RunConfig(
            name=cfg.train.run_name,
            storage_path=storage_root(cfg),
            callbacks=callbacks or None,
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
        ),
        datasets=datasets,
    )


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
    cfg = resolve_for_workers(cfg)
    if cfg.train.num_workers == 0:
        return _launch_local(cfg)
    import ray

    if not ray.is_initialized():
        _init_local_ray(cfg)
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
