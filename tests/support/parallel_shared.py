"""What test_parallel.py and test_parallel_integration.py share (moved here from both when the tests were split)."""

from __future__ import annotations

import torch

from arvid_ray.config import ExperimentConfig

ATOL = 2e-5


CFG = ExperimentConfig().replace(
    **{
        "data.num_frames": 9,
        "data.resolution": 32,  # latent grid [3, 4, 4]
        "data.batch_size": 2,
        "train.global_batch_size": 4,
        "train.steps": 4,
        "train.lr": 5e-3,
        "train.warmup_steps": 1,
        "train.log_every": 2,
        "train.ckpt_every": 2,
        "tracking.enabled": False,
        # window of 2 of 3 latent frames that never starts at 0: every step runs the no-grad prefix, the
        # cached condition and the window through the sharded model's registered entry points
        "objective.kind": "local",
        "objective.window_frames": 2,
        "objective.first_frame_prob": 0.0,
        "objective.reco_weight": 0.1,
        "model.cfg_dropout": 0.0,
    }
)


# The full method as the paper's table trains it: frame 0 always in the loss beside a balanced window, ReCo.
# Its "+ first frame" path runs the FSDP root twice with grad per micro-batch (frame 0, then the window on
# frame 0's condition K/V), which died in backward before issue 24. Window starts are drawn per (step,
# micro-batch), so one process matches 2 ranks when it runs both ranks' micro-batches as one (batch 4):
# every rank draws micro-batch 0's start, and so does the single process (steps 1-4 draw 1, 1, 1, 0).
FULL_METHOD = CFG.replace(**{"objective.first_frame_in_loss": True, "objective.first_frame_prob": 0.5,
                             "objective.reco_weight": 0.1})


def micro_batches(n: int = 16, batch_size: int = 2) -> list[dict]:
    """The global stream of micro-batches: class-patterned [B, 3, 4, 4] token grids plus noise."""
    g = torch.Generator().manual_seed(7)
    t, i, j = torch.arange(3).view(1, 3, 1, 1), torch.arange(4).view(1, 1, 4, 1), torch.arange(4).view(1, 1, 1, 4)
    out = []
    for _ in range(n):
        label = torch.randint(16, (batch_size,), generator=g)
        noise = torch.randint(0, 3, (batch_size, 3, 4, 4), generator=g)
        out.append({"tokens": (label.view(-1, 1, 1, 1) * 37 + t * 5 + i * 3 + j + noise) % 1000, "label": label})
    return out


def _assert_same(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst < ATOL, f"{what}: max |Δparam| {worst:.2e}"
