"""The small Ray Train config the launch tests and the quality-during tests share (2 CPU workers, 9 frames
at 32 px, MLflow system metrics off)."""

from __future__ import annotations

from arvid_ray.config import ExperimentConfig


def launch_cfg(tmp_path, **extra) -> ExperimentConfig:
    return ExperimentConfig().replace(
        **{
            "experiment.name": "arvid-launch-test",
            "experiment.workdir": str(tmp_path / "work"),
            "data.num_frames": 9,
            "data.resolution": 32,
            "data.batch_size": 2,
            "data.shuffle_buffer": 8,
            "train.global_batch_size": 8,
            "train.num_workers": 2,
            "train.cpus_per_worker": 1.0,
            "train.lr": 3e-3,
            "train.warmup_steps": 1,
            "train.log_every": 1,
            "train.val_batches": 1,
            "train.storage_path": str(tmp_path / "runs"),
            "tracking.system_metrics": False,
            **extra,
        }
    )
