"""Checkpoints: round trip of every piece of state, refusal of unsafe and incompatible checkpoints."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from arvid_ray.config import ExperimentConfig
from arvid_ray.train.checkpoint import (
    CheckpointError,
    checkpoint_name,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from arvid_ray.train.loop import build_training_model
from arvid_ray.train.step import build_optimizer, build_scheduler

CFG = ExperimentConfig().replace(**{"data.num_frames": 9, "data.resolution": 32, "tracking.enabled": False})


def _trained_state():
    model = build_training_model(CFG)
    opt = build_optimizer(model, CFG.train)
    sched = build_scheduler(opt, CFG.train)
    model(
        torch.zeros(1, 3, 4, 4, dtype=torch.long), model.condition(torch.tensor([1]))
    ).logits.sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched


def test_round_trip_restores_model_optimizer_scheduler_step_and_rng(tmp_path):
    model, opt, sched = _trained_state()
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(11)
    np.random.seed(12)
    random.seed(13)
    path = save_checkpoint(
        tmp_path / checkpoint_name(7),
        CFG,
        step=7,
        data_position=14,
        model=model,
        optimizer=opt,
        scheduler=sched,
        generator=gen,
        cost={"device_s": 36.0, "usd": 0.01, "tokens": 480.0, "flops": 1e9, "wall_s": 36.0},
        data={"epoch": 1, "offset": 3, "world": 2},
    )
    expect = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=gen))

    model2 = build_training_model(CFG.replace(**{"experiment.seed": 99}))
    opt2 = build_optimizer(model2, CFG.train)
    sched2 = build_scheduler(opt2, CFG.train)
    gen2 = torch.Generator()
    state = load_checkpoint(path, CFG, model=model2, optimizer=opt2, scheduler=sched2, generator=gen2)
    assert (state.step, state.data_position, path.name) == (7, 14, "step_0000007")
    assert state.cost["tokens"] == 480.0 and state.data == {"epoch": 1, "offset": 3, "world": 2}
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    assert opt2.state_dict()["state"][0]["exp_avg"].equal(opt.state_dict()["state"][0]["exp_avg"])
    assert sched2.last_epoch == sched.last_epoch == 1
    got = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=gen2))
    assert torch.equal(got[0], expect[0]) and np.array_equal(got[1], expect[1])
    assert got[2] == expect[2] and torch.equal(got[3], expect[3])


def test_checkpoint_that_executes_code_on_load_is_refused(tmp_path):
    model, opt, sched = _trained_state()
    path = save_checkpoint(tmp_path / "step_0000001", CFG, step=1, data_position=1, model=model)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"weights": torch.zeros(1), "payload": Evil()}, path / "model.pt")
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path, CFG, model=build_training_model(CFG))
    assert not marker.exists()


def test_incompatible_config_is_refused_naming_the_field(tmp_path):
    model, _, _ = _trained_state()
    path = save_checkpoint(tmp_path / "step_0000001", CFG, step=1, data_position=1, model=model)
    for key, value in (("model.d_model", 32), ("tokenizer.fsq_levels", [8, 8]), ("objective.kind", "full")):
        with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
            load_checkpoint(path, CFG.replace(**{key: value}))
    load_checkpoint(path, CFG.replace(**{"train.lr": 1e-2}))  # optimisation settings may change


def test_not_a_checkpoint_and_latest(tmp_path):
    with pytest.raises(CheckpointError, match="no model.pt"):
        load_checkpoint(tmp_path)
    model, _, _ = _trained_state()
    for step in (3, 12, 7):
        save_checkpoint(tmp_path / checkpoint_name(step), CFG, step=step, data_position=step, model=model)
    (tmp_path / "step_0000099").mkdir()  # an incomplete directory is ignored
    assert latest_checkpoint(tmp_path).name == "step_0000012"
    assert latest_checkpoint(tmp_path / "missing") is None


def test_rank_files_merge_into_one_directory(tmp_path):
    model, _, _ = _trained_state()
    save_checkpoint(tmp_path, CFG, step=2, data_position=4, model=model, rank=0)
    save_checkpoint(tmp_path, CFG, step=2, data_position=4, rank=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.yaml",
        "model.pt",
        "rng_rank0.pt",
        "rng_rank1.pt",
        "train_state.pt",
    ]
    assert load_checkpoint(tmp_path, CFG, rank=1).rng is not None


def test_rng_restore_takes_only_the_gpus_this_process_can_see(monkeypatch):
    """Saved on a node with 2 visible GPUs, resumed where 1 is visible: GPU 0's state is restored, the other
    skipped (restoring every saved ordinal raises 'invalid device ordinal' on real hardware)."""
    from arvid_ray.train.checkpoint import capture_rng, restore_rng

    state = capture_rng()
    state["cuda"] = [torch.full((8,), 1, dtype=torch.uint8), torch.full((8,), 2, dtype=torch.uint8)]
    restored = []

    def set_rng_state(new_state, device="cuda"):
        index = device if isinstance(device, int) else torch.device(device).index or 0
        if index >= 1:
            raise RuntimeError(f"CUDA error: invalid device ordinal {index}")
        restored.append((index, int(new_state[0])))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", set_rng_state)  # what set_rng_state_all calls
    restore_rng(state)
    assert restored == [(0, 1)]


def test_checkpoint_step_reads_the_directory_name_locally_and_in_uris():
    from arvid_ray.train.checkpoint import checkpoint_name, checkpoint_step

    assert checkpoint_step(f"/runs/r/{checkpoint_name(350)}") == 350
    assert checkpoint_step(f"s3://bucket/runs/r/{checkpoint_name(100)}/") == 100
    assert checkpoint_step("/runs/r/step_12") is None and checkpoint_step("/runs/r/model.pt") is None
