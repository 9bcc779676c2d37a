"""Ray Train integration: 2 CPU workers stream a Ray Dataset, checkpoint, log to MLflow, survive a crash.

Each Train run costs ~15–20 s of start-up on 2 cores, so there are only two Ray runs here.
"""

from __future__ import annotations

from launch_cfg import launch_cfg as _cfg  # tests/support

from arvid_ray.runs import resolve_for_workers, run_name, train_storage
from arvid_ray.tracking import read_metrics_jsonl


def test_run_name_is_stable_and_ignores_bookkeeping(tmp_path):
    cfg = _cfg(tmp_path)
    assert run_name(cfg) == run_name(cfg.replace(**{"train.fail_at_step": 3, "tracking.enabled": False}))
    assert run_name(cfg) != run_name(cfg.replace(**{"objective.window_frames": 1}))
    assert (
        run_name(cfg).startswith("arvid-launch-test-") and len(run_name(cfg)) == len("arvid-launch-test-") + 8
    )
    assert run_name(cfg.replace(**{"train.run_name": "mine"})) == "mine"
    resolved = resolve_for_workers(cfg.replace(**{"tracking.uri": None}))
    assert resolved.tracking.uri == f"sqlite:///{tmp_path / 'work' / 'mlruns.db'}"
    assert train_storage(cfg.replace(**{"train.storage_path": "s3://bucket/runs"})) == "s3://bucket/runs"


def test_cli_train_in_process_on_the_synthetic_dataset_and_relaunch_resumes(tmp_path, capsys):
    """train.num_workers=0: the real data path (synthetic videos → fsq tokens) in one process, no Ray."""
    from arvid_ray.cli import main

    args = [
        "train",
        "train.num_workers=0",
        f"experiment.workdir={tmp_path / 'work'}",
        "synth.num_videos=20",
        "synth.resolution=32",
        "synth.num_frames=9",
        "data.num_frames=9",
        "data.resolution=32",
        "tokenizer.name=fsq",
        "data.batch_size=4",
        "train.global_batch_size=4",
        "train.steps=3",
        "train.ckpt_every=2",
        "train.val_batches=1",
        "tracking.system_metrics=false",
        "train.run_name=local",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "step 3" in out and "local/checkpoints/step_0000003" in out
    run_dir = tmp_path / "work" / "runs" / "local"
    assert [r["step"] for r in read_metrics_jsonl(run_dir)] == [2, 3]  # log_every=10: ckpt and last step
    assert main(args) == 0  # same run name: resumes at step 3, nothing left to train, one final report
    assert [r["step"] for r in read_metrics_jsonl(run_dir)] == [2, 3, 3]
