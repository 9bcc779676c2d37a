"""Data parallelism applied from outside the model: DDP and FSDP2 on 2 gloo ranks equal 1 rank with the same
global batch; checkpoints gathered at world size 2 resume at 1 and 2; rank-shared window starts; compiled
blocks reach Local Opt.'s prefix and window; the reporter runs no collective of its own.

The 2-rank runs are ``torch.multiprocessing`` processes over gloo (one spawn for every 2-rank scenario: a
spawn costs two interpreter start-ups on the 2-core CI machine); one FSDP run goes through Ray Train.
Tolerance for "same parameters": 2e-5 absolute after 4 AdamW steps at lr 5e-3 (fp32; DDP and FSDP
reduce in another order than one process accumulating, ~1e-7 per step, and Adam's normalisation
turns a rounding difference of a tiny gradient entry into at most ~lr per step).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from parallel_shared import CFG, FULL_METHOD, _assert_same, micro_batches
from servers import free_port

from arvid_ray.train import parallel
from arvid_ray.train.checkpoint import checkpoint_name
from arvid_ray.train.loop import build_training_model, cycle, train_loop

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def shard(rank: int, world: int, batch_size: int = 2):
    """make_iter(epoch, skip) of this rank's shard (every world-th micro-batch): seeks without reading."""

    def make_iter(epoch: int, skip: int = 0):
        return iter(micro_batches(batch_size=batch_size)[rank::world][skip:])

    return make_iter


class SaveEverywhere:
    """Checkpoints at the cadence points, the save called on every rank (as Ray's reporter does)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def report(self, step, metrics, save):
        if save is not None:
            save(self.root / checkpoint_name(step))


def _train(cfg, rank=0, world=1, root=None, resume=None):
    result = train_loop(cfg, cycle(shard(rank, world, cfg.data.batch_size)), rank=rank, world_size=world, device="cpu",
                        reporter=SaveEverywhere(root) if root else None, resume_from=resume)
    return result, parallel.model_state(result.model)  # a collective under FSDP


def _two_rank_main(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    out_dir = Path(out)
    try:
        for kind in ("ddp", "fsdp"):
            cfg = CFG.replace(**{"train.parallelism": kind})
            result, state = _train(cfg, rank, world, root=out_dir / kind)
            if rank == 0:
                torch.save(state, out_dir / f"{kind}_final.pt")
                torch.save(result.losses, out_dir / f"{kind}_losses.pt")
        cfg = CFG.replace(**{"train.parallelism": "fsdp"})
        _, state = _train(cfg, rank, world, resume=out_dir / "fsdp" / checkpoint_name(2))
        if rank == 0:
            torch.save(state, out_dir / "fsdp_resumed_world2.pt")
        for kind in ("ddp", "fsdp"):
            _, state = _train(FULL_METHOD.replace(**{"train.parallelism": kind}), rank, world)
            if rank == 0:
                torch.save(state, out_dir / f"{kind}_full_method.pt")
        # and with gradient accumulation (2 micro-batches of 1 per rank: the root is gathered and resharded
        # around each micro-batch, its gradients reduced on the last one only)
        _, state = _train(FULL_METHOD.replace(**{"train.parallelism": "fsdp", "data.batch_size": 1}), rank, world)
        if rank == 0:
            torch.save(state, out_dir / "fsdp_full_method_accum.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_and_fsdp_on_two_gloo_ranks_equal_one_rank_and_checkpoints_resume_at_any_world_size(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_two_rank_main, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    one, one_state = _train(CFG, root=tmp_path / "one")
    for kind in ("ddp", "fsdp"):
        _assert_same(torch.load(tmp_path / f"{kind}_final.pt", weights_only=True), one_state, f"{kind} x2 vs x1")
        assert len(torch.load(tmp_path / f"{kind}_losses.pt", weights_only=True)) == len(one.losses) == 4
    # the rank-0 full state dict of a sharded run: plain names, loads with weights_only into a plain model
    ckpt = tmp_path / "fsdp" / checkpoint_name(2)
    weights = torch.load(ckpt / "model.pt", weights_only=True)
    build_training_model(CFG).load_state_dict(weights)
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.yaml", "model.pt", "rng_rank0.pt", "rng_rank1.pt",
                                                     "train_state.pt"]
    # saved at world size 2 (FSDP): resumed at world size 2 and at world size 1, both end where 1 rank does
    _assert_same(torch.load(tmp_path / "fsdp_resumed_world2.pt", weights_only=True), one_state, "resume x2")
    resumed, resumed_state = _train(CFG, resume=ckpt)
    assert resumed.steps == [3, 4]
    _assert_same(resumed_state, one_state, "fsdp x2 checkpoint resumed x1")
    # the full method (first-frame loss + balanced + ReCo) under DDP and FSDP equals one process
    both = micro_batches()
    joined = [{k: torch.cat([a[k], b[k]]) for k in a} for a, b in zip(both[0::2], both[1::2])]
    one_full = train_loop(FULL_METHOD.replace(**{"data.batch_size": 4}), cycle(lambda epoch, skip=0: iter(joined[skip:])),
                          device="cpu")
    for kind in ("ddp", "fsdp"):
        _assert_same(torch.load(tmp_path / f"{kind}_full_method.pt", weights_only=True),
                     parallel.model_state(one_full.model), f"full method {kind} x2 vs x1")
    # accumulation: rank r's micro-batch i is stream batch 2s+r of size 1, so one process's micro-batch i of
    # size 2 holds both ranks' (same window seed per (step, micro-batch))
    ones = micro_batches(batch_size=1)
    pairs = [{k: torch.cat([a[k], b[k]]) for k in a} for a, b in zip(ones[0::2], ones[1::2])]
    one_acc = train_loop(FULL_METHOD.replace(**{"data.batch_size": 2}), cycle(lambda epoch, skip=0: iter(pairs[skip:])),
                         device="cpu")
    _assert_same(torch.load(tmp_path / "fsdp_full_method_accum.pt", weights_only=True),
                 parallel.model_state(one_acc.model), "full method fsdp x2 with accumulation vs x1")


def test_rank_shared_window_starts_and_per_rank_cfg_dropout(monkeypatch):
    import arvid_ray.model.conditioning as conditioning
    import arvid_ray.objectives as objectives

    starts, masks = [], []
    draw, drop = objectives.sample_window_start, conditioning._drop_mask
    monkeypatch.setattr(objectives, "sample_window_start", lambda *a, **k: starts.append(draw(*a, **k)) or starts[-1])
    monkeypatch.setattr(conditioning, "_drop_mask", lambda *a, **k: masks.append(drop(*a, **k)) or masks[-1])
    cfg = CFG.replace(**{"train.steps": 6, "train.ckpt_every": 0, "objective.first_frame_prob": 0.5,
                         "data.num_frames": 17, "model.cfg_dropout": 0.5, "data.batch_size": 8,
                         "train.global_batch_size": 16})
    per_rank = {}
    for rank in (0, 1):  # rank only chooses generators and data here: no process group needed
        starts.clear(), masks.clear()
        train_loop(cfg, cycle(lambda e: iter([{"tokens": torch.zeros(8, 5, 4, 4, dtype=torch.long),
                                                "label": torch.arange(8)}] * 4)), rank=rank, device="cpu")
        per_rank[rank] = (list(starts), torch.stack(masks).clone())
    assert per_rank[0][0] == per_rank[1][0]  # the same start for every micro-batch of every step
    assert len(per_rank[0][0]) == 12 and len(set(per_rank[0][0])) > 1  # and not one start for the whole run
    assert not torch.equal(per_rank[0][1], per_rank[1][1])  # CFG dropout stays per rank


def test_activation_checkpointing_keeps_loss_gradients_and_checkpoint_names():
    from arvid_ray.objectives import build_objective

    cfg = CFG.replace(**{"train.activation_checkpointing": True, "model.dropout": 0.1})
    models = [build_training_model(cfg) for _ in range(2)]
    objective = build_objective(cfg)
    wrapped = parallel.parallelize(parallel.LossModule(models[0], objective), cfg, "cpu")
    plain = parallel.LossModule(models[1], objective)
    batch = micro_batches()[0]
    torch.manual_seed(3)
    out_ac = wrapped(batch)
    out_ac["loss"].backward()  # recomputes each block with the forward's dropout masks (RNG preserved)
    torch.manual_seed(3)
    out = plain(batch)
    out["loss"].backward()
    assert out_ac["loss"].item() == pytest.approx(out["loss"].item(), rel=1e-6)
    for (name, p), q in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=name)
    assert models[0].state_dict().keys() == models[1].state_dict().keys()


def test_reporter_decides_by_step_number_without_a_collective(monkeypatch):
    """A process group with no CPU backend (what NCCL-only GPU runs create) — any collective on a CPU tensor
    raises "No backend type associated with device type cpu", as the old time-based reporter's did."""
    import ray.train
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from arvid_ray.train.worker import RayReporter

    sent = []
    monkeypatch.setattr(ray.train, "report", lambda metrics, **kw: sent.append(int(metrics["step"])))
    dist.init_process_group("cuda:fake", store=FakeStore(), rank=0, world_size=2)
    try:
        with pytest.raises(RuntimeError, match="device type cpu"):  # the trap is armed
            dist.all_reduce(torch.tensor([1.0]))
        reporter = RayReporter(rank=0, tracker=None, total_steps=100, every=25, eval_every=60)
        for step in range(10, 101, 10):
            reporter.report(step, {"step": float(step), "train/loss": 1.0}, None)
    finally:
        dist.destroy_process_group()
    # first log step at/after each multiple of 25, the validation, the last step
    assert sent == [30, 50, 60, 80, 100]


def test_ddp_keyword_exists_in_every_torch_the_project_allows():
    """parallelize builds DDP with forward_sync_buffers, which older torch rejects: pyproject's torch range
    must start at a release that has it (2.13, the only one CI verifies) and the installed torch must have it."""
    import inspect
    import re

    import tomllib
    from torch.nn.parallel import DistributedDataParallel

    deps = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in deps if re.match(r"torch\b", d))
    lower = tuple(int(x) for x in re.search(r">=\s*(\d+)\.(\d+)", spec).groups())
    assert lower >= (2, 13), spec
    assert "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
