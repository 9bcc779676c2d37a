"""What test_quality_during.py and test_quality_during_integration.py share (moved here from both when the tests were split)."""

from __future__ import annotations

# 17 frames: the quality extractor needs clips of >= 16 frames (5 latent frames of 4x4 tokens at 32 px)
QUALITY = {"eval.quality_every": 2, "eval.quality_videos": 4, "eval.trajectory_videos": 2, "eval.batch_size": 4,
           "train.final_eval": False, "train.num_workers": 1, "train.steps": 4, "train.ckpt_every": 2,
           "train.global_batch_size": 4, "data.num_frames": 17, "synth.num_frames": 17}


def _history(client, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


# ---- the sweep prunes on the quality during training (sweep.prune_on=quality, issue 26 item 4) ---------------
PRUNE = {"sweep.mode": "single", "sweep.prune_on": "quality", "sweep.metric": "eval/fd_synthc3d",
         "sweep.search_space": {"objective.window_frames": {"type": "int", "low": 1, "high": 4}},
         "eval.quality_every": 100, "train.ckpt_every": 50, "train.steps": 400, "sweep.asha_grace_steps": 50}
