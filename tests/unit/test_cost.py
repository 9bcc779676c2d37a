"""Cost accounting: analytic FLOPs per objective, accelerator-hours, dollars, MFU, data-wait fraction."""

from __future__ import annotations

import time

import pytest
import torch

from arvid_ray.config import ExperimentConfig
from arvid_ray.train.cost import CostMeter, detect_accelerator, peak_memory_gb, step_flops


def linear_flops(n_query: int, n_context: int) -> float:
    """A stand-in with the shape of a transformer's cost: 10 per query token + 1 per query-key pair."""
    return 10.0 * n_query + n_query * n_context


def test_step_flops_counts_backward_only_for_grad_tokens():
    # full: 8 grad tokens per sample, no prefix → 3 forwards of 8 queries over 8 keys
    assert step_flops(linear_flops, 2, tokens_grad=16, tokens_nograd=0) == 2 * 3 * (80 + 64)
    # local: 4 grad tokens attend to 4 prefix + 4 window keys; the 4-token prefix is one forward
    local = step_flops(linear_flops, 2, tokens_grad=8, tokens_nograd=8)
    assert local == 2 * (3 * (40 + 4 * 8) + (40 + 16))
    assert local < step_flops(linear_flops, 2, tokens_grad=16, tokens_nograd=0)
    # the no-grad prefix runs no output head: its share (here 3 per query) is not charged to it
    assert step_flops(linear_flops, 2, 8, 8, head_flops=lambda n: 3.0 * n) == local - 2 * 3 * 4


def test_step_flops_with_the_real_model():
    from arvid_ray.model import build_model

    cfg = ExperimentConfig().replace(**{"data.num_frames": 9, "data.resolution": 32})
    model = build_model(cfg.model, 1000, cfg.latent_shape())
    assert step_flops(model.forward_flops, 4, 4 * 80, 0) == pytest.approx(4 * 3 * model.forward_flops(80, 80))
    assert model.forward_flops(80, 80) > 2 * model.num_params * 0.5 * 80  # at least the matmuls


def test_cpu_hours_usd_and_mfu_follow_the_config():
    cfg = ExperimentConfig().replace(
        **{
            "train.cpus_per_worker": 2.0,
            "cost.accelerator": "cpu",
            "cost.price_per_hour": {"cpu": 3.6},
            "cost.peak_tflops": {"cpu": 1e-6},
        }
    )
    meter = CostMeter(cfg, world_size=3, flops_fn=linear_flops)
    meter.add_step(0.01, {"tokens_grad": 16.0, "tokens_nograd": 0.0}, batch_size=2, clip_tokens=16)
    meter.end_optimizer_step()
    m = meter.metrics()
    assert meter.devices() == 6.0  # 3 workers x 2 CPUs
    wall = m["cost/wall_time_s"]
    assert m["cost/gpu_hours"] == pytest.approx(6 * wall / 3600, rel=0.05)
    assert m["cost/usd"] == pytest.approx(m["cost/gpu_hours"] * 3.6)
    assert m["cost/train_flops"] == 3 * step_flops(linear_flops, 2, 16, 0)
    # MFU over the training steps only (0.01 s of 6 CPUs), not the wall time around them
    assert m["cost/mfu"] == pytest.approx(m["cost/train_flops"] / (0.01 * 1e6 * 6))
    assert m["cost/tokens"] == 3 * 16
    assert m["train/peak_mem_gb"] > 0.01


def test_data_wait_fraction_is_time_blocked_on_next():
    meter = CostMeter(ExperimentConfig())

    def slow():
        while True:
            time.sleep(0.05)
            yield {"tokens": torch.zeros(1, 1, 1, 1)}

    it = slow()
    for _ in range(3):
        meter.timed_next(it)
        meter.add_step(0.05, {"tokens_grad": 1.0, "tokens_nograd": 0.0}, 1, 1)
        meter.end_optimizer_step()
    m = meter.metrics()
    assert 0.35 < m["train/data_wait_frac"] < 0.65
    assert m["train/step_time_s"] == pytest.approx(0.1, rel=0.3)
    assert m["train/tokens_per_s"] == pytest.approx(10.0, rel=0.3)


def test_accelerator_detection_and_memory():
    assert detect_accelerator("A100") == "A100"
    if not torch.cuda.is_available():
        assert detect_accelerator() == "cpu"
    assert peak_memory_gb("cpu") > 0


def test_run_totals_continue_after_a_restart_at_another_world_size():
    cfg = ExperimentConfig().replace(**{"cost.accelerator": "cpu", "cost.price_per_hour": {"cpu": 3.6}})
    first = CostMeter(cfg, world_size=2, flops_fn=linear_flops)
    first.add_step(0.01, {"tokens_grad": 16.0, "tokens_nograd": 0.0}, batch_size=2, clip_tokens=16)
    saved = first.state()  # what a checkpoint stores
    assert saved["tokens"] == 32 and saved["flops"] == 2 * step_flops(linear_flops, 2, 16, 0)
    second = CostMeter(cfg, world_size=1, flops_fn=linear_flops)  # the restarted attempt
    second.restore(saved)
    second.add_step(0.01, {"tokens_grad": 16.0, "tokens_nograd": 0.0}, batch_size=2, clip_tokens=16)
    m = second.metrics()
    assert m["cost/tokens"] == 32 + 16
    assert m["cost/train_flops"] == saved["flops"] + step_flops(linear_flops, 2, 16, 0)
    assert m["cost/gpu_hours"] > saved["device_s"] / 3600  # never reset to zero
    assert m["cost/usd"] == pytest.approx(saved["usd"] + (m["cost/gpu_hours"] - saved["device_s"] / 3600) * 3.6)
    assert m["cost/wall_time_s"] > saved["wall_s"]

