"""Ray Train integration: 2 CPU workers stream a Ray Dataset, checkpoint, log to MLflow, survive a crash.

Each Train run costs ~15–20 s of start-up on 2 cores, so there are only two Ray runs here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from launch_cfg import launch_cfg as _cfg  # tests/support

from arvid_ray.config import ExperimentConfig
from arvid_ray.tracking import read_metrics_jsonl
from arvid_ray.train.worker import FAIL_MARKER


def _datasets(n_train: int = 32, n_val: int = 8):
    """Pattern tokens (class-determined [3, 4, 4] grids) as real Ray Datasets, streamed to the workers."""
    import ray.data

    def rows(n, seed):
        rng = np.random.default_rng(seed)
        t, i, j = np.ogrid[:3, :4, :4]
        out = []
        for k in range(n):
            label = int(rng.integers(16))
            tokens = ((label * 37 + t * 5 + i * 3 + j) % 1000).astype(np.int32)
            out.append(
                {
                    "tokens": tokens,
                    "label": label,
                    "caption": f"clip {k}",
                    "video_id": f"v{k}",
                    "clip_start": 0,
                }
            )
        return out

    return {"train": ray.data.from_items(rows(n_train, 0)), "val": ray.data.from_items(rows(n_val, 1))}


@pytest.mark.ray
def test_torch_trainer_two_workers_checkpoints_and_mlflow(ray_session, mlflow_server, tmp_path):
    from mlflow import MlflowClient

    from arvid_ray.launch import launch

    cfg = _cfg(
        tmp_path,
        **{
            "train.steps": 4,
            "train.ckpt_every": 2,
            "train.eval_every": 2,
            "tracking.uri": mlflow_server,
            "train.run_name": "two-workers",
        },
    )
    result = launch(cfg, datasets=_datasets())
    assert result.checkpoint.endswith("two-workers/step_0000004")
    files = sorted(p.name for p in (tmp_path / "runs" / "two-workers" / "step_0000004").iterdir())
    assert files == ["config.yaml", "model.pt", "rng_rank0.pt", "rng_rank1.pt", "train_state.pt"]
    assert (tmp_path / "runs" / "two-workers" / "step_0000002").is_dir()  # keep_checkpoints=2
    assert result.metrics["step"] == 4 and np.isfinite(result.metrics["eval/val_ce"])

    client = MlflowClient(mlflow_server)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.num_workers"] == "2" and run.data.params["objective.kind"] == "local"
    for key in (
        "train/loss",
        "train/ce",
        "train/reco",
        "train/tokens_per_s",
        "train/step_time_s",
        "train/data_wait_frac",
        "train/peak_mem_gb",
        "cost/gpu_hours",
        "cost/usd",
        "cost/train_flops",
        "eval/val_ce",
    ):
        assert key in run.data.metrics, key
    assert [m.step for m in client.get_metric_history(result.mlflow_run_id, "train/loss")] == [1, 2, 3, 4]
    assert run.data.metrics["cost/gpu_hours"] > 0 and run.data.metrics["cost/train_flops"] > 0
    assert "config.yaml" in [a.path for a in client.list_artifacts(result.mlflow_run_id)]


@pytest.mark.ray
def test_worker_crash_restarts_from_the_last_checkpoint(ray_session, tmp_path):
    from arvid_ray.launch import launch

    cfg = _cfg(
        tmp_path,
        **{
            "train.steps": 6,
            "train.ckpt_every": 2,
            "train.fail_at_step": 4,
            "train.max_failures": 1,
            "tracking.enabled": False,
            "train.run_name": "crash",
        },
    )
    result = launch(cfg, datasets=_datasets())
    run_dir = tmp_path / "runs" / "crash"
    assert (run_dir / FAIL_MARKER).read_text().startswith("rank 1 exited at step 4")
    steps = [int(r["step"]) for r in read_metrics_jsonl(run_dir)]
    restart = next(i for i in range(1, len(steps)) if steps[i] <= steps[i - 1])
    assert steps[:3] == [1, 2, 3] and steps[restart:] == [3, 4, 5, 6], steps  # resumed after step_0000002
    assert result.metrics["step"] == 6
    assert result.checkpoint.endswith("crash/step_0000006")


class _CountingShard:
    """A real Ray DataIterator that also counts how many times a pass was started."""

    def __init__(self, it):
        self.it, self.passes = it, 0

    def iter_batches(self, **kwargs):
        self.passes += 1
        return self.it.iter_batches(**kwargs)


def _ids(batches) -> list[int]:
    return [int(v) for b in batches for v in b["label"]]


def test_worker_replays_a_fitting_token_shard_from_memory_after_one_pass(ray_session):
    import ray

    from arvid_ray.train.worker import epoch_batches

    rows = [{"tokens": np.full((2, 2, 2), i, np.int32), "label": i, "caption": f"c{i}"} for i in range(20)]
    cfg = ExperimentConfig.from_flat({"data.batch_size": 4})
    shard = _CountingShard(ray.data.from_items(rows).iterator())
    epochs = epoch_batches(shard, cfg, train=True, fixed_rows=True)

    first = list(epochs(0))
    second, third = list(epochs(1)), list(epochs(2))
    assert shard.passes == 1  # epochs 1 and 2 never restarted the Ray Data stream
    assert sorted(_ids(first)) == sorted(_ids(second)) == sorted(_ids(third)) == list(range(20))
    assert _ids(second) != _ids(third)  # reshuffled per epoch, seeded
    assert _ids(list(epochs(1))) == _ids(second)
    for batch in second:
        assert batch["tokens"].dtype == torch.long and batch["tokens"].shape == (4, 2, 2, 2)
        assert (batch["tokens"][:, 0, 0, 0] == batch["label"]).all()  # rows stay whole
        assert batch["caption"] == [f"c{int(i)}" for i in batch["label"]]

    # an interrupted first pass caches nothing; on-the-fly clips (no token cache) and a 0 MiB budget stream
    partial = _CountingShard(ray.data.from_items(rows).iterator())
    epochs = epoch_batches(partial, cfg, train=True, fixed_rows=True)
    next(iter(epochs(0)))
    list(epochs(1))
    assert partial.passes == 2
    for fixed, override in ((False, {}), (True, {"data.worker_cache_mb": 0})):
        streamed = _CountingShard(ray.data.from_items(rows).iterator())
        epochs = epoch_batches(streamed, cfg.replace(**override), train=True, fixed_rows=fixed)
        list(epochs(0)), list(epochs(1))
        assert streamed.passes == 2
