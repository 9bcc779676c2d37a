"""The single-process training loop: it learns, matches the golden loss trace, and resumes exactly.

Data: a tiny class-conditioned token pattern (each class a different deterministic token grid) — a debug
model must fit it, which is a real test of learning rather than of mocks.
Regenerate the golden trace deliberately with ``ARVID_UPDATE_GOLDEN=1 pytest tests/unit/test_train_loop.py``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import pytest
import torch

from arvid_ray.config import ConfigError, ExperimentConfig
from arvid_ray.tracking import Tracker, read_metrics_jsonl
from arvid_ray.train.checkpoint import latest_checkpoint
from arvid_ray.train.loop import LocalReporter, build_training_model, cycle, train_loop
from arvid_ray.train.step import build_optimizer, grad_accum_steps, lr_factor

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GOLDEN = Path(__file__).parents[1] / "golden" / "train_loop_local_reco.json"

BASE = ExperimentConfig().replace(
    **{
        "data.num_frames": 9,
        "data.resolution": 32,
        "data.batch_size": 4,
        "train.global_batch_size": 8,
        "train.lr": 5e-3,
        "train.warmup_steps": 3,
        "train.log_every": 5,
        "train.ckpt_every": 0,
        "tracking.enabled": False,
        "objective.kind": "local",
        "objective.reco_weight": 0.1,
    }
)


def pattern_batches(epoch: int, batch_size: int = 4, n_batches: int = 8, vocab: int = 1000):
    """One epoch of class-conditioned token grids [B, 3, 4, 4]: token = f(class, frame, row, col)."""
    g = torch.Generator().manual_seed(1000 + epoch)
    t, i, j = (
        torch.arange(3).view(1, 3, 1, 1),
        torch.arange(4).view(1, 1, 4, 1),
        torch.arange(4).view(1, 1, 1, 4),
    )
    for _ in range(n_batches):
        label = torch.randint(16, (batch_size,), generator=g)
        tokens = (label.view(-1, 1, 1, 1) * 37 + t * 5 + i * 3 + j) % vocab  # (B, t, h, w)
        yield {"tokens": tokens.long(), "label": label, "caption": [""] * batch_size}


def test_debug_model_fits_the_pattern_and_validates():
    cfg = BASE.replace(**{"train.steps": 80, "train.log_every": 40, "objective.kind": "full"})
    reports = []

    class Collect:
        def report(self, step, metrics, save):
            reports.append((step, metrics, save))

    result = train_loop(
        cfg, cycle(pattern_batches), reporter=Collect(), val_batches=lambda: pattern_batches(99)
    )
    assert [s for s, _, _ in reports] == [40, 80]
    assert reports[-1][2] is not None and reports[0][2] is None  # checkpoint only at the end (ckpt_every=0)
    assert result.losses[0] > 6.5  # ~ln(1000) at init
    assert sum(result.losses[-5:]) / 5 < 2.0, result.losses[-5:]
    m = result.metrics
    assert m["eval/val_ce"] < 2.0
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
        "cost/mfu",
    ):
        assert key in m and math.isfinite(m[key]), key
    assert 0 <= m["train/data_wait_frac"] < 0.5


def test_golden_loss_trace():
    # a gentle LR keeps round-off differences (kernels, CPU ISA) from being amplified into the trace
    cfg = BASE.replace(**{"train.steps": 12, "train.lr": 1e-3})
    losses = train_loop(cfg, cycle(pattern_batches)).losses
    if os.environ.get("ARVID_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(
            json.dumps(
                {
                    "config": {
                        k: v
                        for k, v in cfg.to_flat().items()
                        if k.startswith(("train.", "objective.", "data.", "model."))
                    },
                    "losses": losses,
                },
                indent=1,
            )
            + "\n"
        )
    golden = json.loads(GOLDEN.read_text())["losses"]
    assert losses == pytest.approx(golden, rel=2e-3, abs=2e-3)


def _interrupted_at(step: int, cfg: ExperimentConfig, source, run_dir: Path):
    """Train until an exception at the end of ``step``; returns (the reporter, its latest checkpoint)."""

    class Stop(Exception):
        pass

    def stop(at: int) -> None:
        if at == step:
            raise Stop

    reporter = LocalReporter(Tracker(cfg, run_dir), run_dir / "checkpoints", keep=2)
    with pytest.raises(Stop):
        train_loop(cfg, cycle(source), reporter=reporter, on_step_end=stop)
    return reporter, latest_checkpoint(run_dir / "checkpoints")


def test_resume_gives_identical_losses(tmp_path):
    cfg = BASE.replace(**{"train.steps": 10, "train.ckpt_every": 4, "model.cfg_dropout": 0.3})
    full = train_loop(cfg, cycle(pattern_batches)).losses

    reporter, resume = _interrupted_at(6, cfg, pattern_batches, tmp_path)
    assert resume.name == "step_0000004"
    resumed = train_loop(cfg, cycle(pattern_batches), reporter=reporter, resume_from=resume)
    assert resumed.steps == list(range(5, 11))
    assert resumed.losses == pytest.approx(full[4:], rel=1e-6, abs=1e-6)
    # log_every=5 and ckpt_every=4; step 5 is logged by both attempts (the resumed one replays it)
    assert [r["step"] for r in read_metrics_jsonl(tmp_path)] == [4, 5, 5, 8, 10]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000008", "step_0000010"]


def test_grad_accumulation_is_derived_from_the_global_batch():
    assert grad_accum_steps(BASE, world_size=1) == 2
    assert grad_accum_steps(BASE.replace(**{"train.global_batch_size": 16}), world_size=2) == 2
    with pytest.raises(ConfigError, match="train.global_batch_size"):
        grad_accum_steps(BASE.replace(**{"train.global_batch_size": 12}), world_size=2)


def test_lr_schedule_and_no_decay_on_norms_and_biases():
    t = BASE.replace(**{"train.steps": 100, "train.warmup_steps": 10, "train.min_lr_ratio": 0.1}).train
    f = [lr_factor(s, t) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # cosine decays monotonically
    assert f[-1] == pytest.approx(0.1, abs=0.01)
    model = build_training_model(BASE)
    decay, no_decay = build_optimizer(model, BASE.train).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert no_decay["weight_decay"] == 0 and decay["weight_decay"] == BASE.train.weight_decay
    assert all(p.ndim < 2 for p in no_decay["params"]) and any(
        "norm" in names[id(p)] for p in no_decay["params"]
    )
    assert all(p.ndim >= 2 for p in decay["params"])


def test_exhausted_iterator_is_a_clear_error():
    with pytest.raises(ValueError, match="ran out at step"):
        train_loop(BASE.replace(**{"train.steps": 5}), pattern_batches(0, n_batches=3))


def test_resume_seeks_the_data_instead_of_re_reading_it_and_continues_the_cost_meter(tmp_path):
    from arvid_ray.train.checkpoint import load_checkpoint

    cfg = BASE.replace(**{"train.steps": 10, "train.ckpt_every": 3, "train.log_every": 1})
    reads: list[tuple[int, int]] = []

    def seekable(epoch: int, skip: int = 0):  # a source that can start at batch `skip` of an epoch
        for k, batch in enumerate(pattern_batches(epoch)):
            if k >= skip:
                reads.append((epoch, k))
                yield batch

    full = train_loop(cfg, cycle(seekable))
    full_reads, reads[:] = list(reads), []

    reporter, resume = _interrupted_at(5, cfg, seekable, tmp_path)
    saved = load_checkpoint(resume, cfg)
    assert resume.name == "step_0000003" and saved.data == {"epoch": 0, "offset": 6, "world": 1}
    reads.clear()
    resumed = train_loop(cfg, cycle(seekable), reporter=reporter, resume_from=resume)
    assert reads == full_reads[6:]  # mid-epoch: batches 6, 7 of epoch 0, then on; nothing re-read
    assert resumed.losses == pytest.approx(full.losses[3:], rel=1e-6, abs=1e-6)
    # the cost meter continues: every clip token is counted once over both attempts, accelerator time too
    assert resumed.metrics["cost/tokens"] == full.metrics["cost/tokens"]
    first = read_metrics_jsonl(tmp_path)[-7]  # the resumed attempt's first report (step 4)
    assert first["step"] == 4 and first["cost/gpu_hours"] > saved.cost["device_s"] / 3600


def test_out_of_range_tokens_and_labels_are_refused_on_the_host():
    batch = next(pattern_batches(0))
    bad_tokens = {**batch, "tokens": batch["tokens"].clone().fill_(1000)}
    with pytest.raises(ValueError, match="vocab_size"):
        train_loop(BASE.replace(**{"train.steps": 1}), cycle(lambda e: iter([bad_tokens] * 2)))
    bad_labels = {**batch, "label": batch["label"].clone().fill_(16)}
    with pytest.raises(ValueError, match="num_classes"):
        train_loop(BASE.replace(**{"train.steps": 1}), cycle(lambda e: iter([bad_labels] * 2)))



def _final_weights(cfg: ExperimentConfig, **kwargs) -> dict[str, torch.Tensor]:
    """The weights the end-of-run evaluation receives (``final_hook``'s model)."""
    seen = {}

    def hook(_cfg, model):
        seen.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {}

    train_loop(cfg, cycle(pattern_batches), final_hook=hook, **kwargs)
    return seen


def test_ema_is_the_exponential_average_of_the_trained_weights_and_what_validation_and_evaluation_see():
    cfg = BASE.replace(**{"objective.kind": "full", "objective.reco_weight": 0.0, "train.warmup_steps": 0,
                          "train.min_lr_ratio": 1.0, "train.log_every": 1})  # constant lr: k-step runs = prefixes
    trained = [_final_weights(cfg.replace(**{"train.steps": k})) for k in (1, 2, 3)]
    assert not torch.equal(trained[0]["head.weight"], trained[2]["head.weight"])

    collected = []

    class Collect:
        def report(self, step, metrics, save):
            collected.append(metrics)

    averaged = _final_weights(cfg.replace(**{"train.steps": 3, "train.ema_decay": 0.5}), reporter=Collect(),
                              val_batches=lambda: pattern_batches(99))
    # AveragedModel: the first update copies w1, then e = 0.5 e + 0.5 w  →  0.25 w1 + 0.25 w2 + 0.5 w3
    for name, w3 in trained[2].items():
        expected = 0.25 * trained[0][name] + 0.25 * trained[1][name] + 0.5 * w3
        torch.testing.assert_close(averaged[name], expected, rtol=1e-5, atol=1e-6, msg=name)
    model = build_training_model(cfg)
    model.load_state_dict(averaged)
    from arvid_ray.objectives import build_objective

    objective = build_objective(cfg)
    val = [float(objective.val_ce(model, b)) for b in itertools.islice(pattern_batches(99), cfg.train.val_batches)]
    assert collected[-1]["eval/val_ce"] == pytest.approx(sum(val) / len(val), rel=1e-5)


def test_resume_restores_the_weight_average_exactly(tmp_path):
    cfg = BASE.replace(**{"train.steps": 8, "train.ckpt_every": 4, "train.ema_decay": 0.9})
    uninterrupted = _final_weights(cfg)
    reporter, resume = _interrupted_at(6, cfg, pattern_batches, tmp_path)
    assert (resume / "ema.pt").exists()
    resumed = _final_weights(cfg, reporter=reporter, resume_from=resume)
    for name, value in uninterrupted.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-6, atol=1e-7, msg=name)


def test_ema_with_fsdp_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match="train.ema_decay"):
        BASE.replace(**{"train.ema_decay": 0.999, "train.parallelism": "fsdp"})
    with pytest.raises(ConfigError, match="train.ema_decay"):
        BASE.replace(**{"train.ema_decay": 1.0})


def test_training_sizes_the_vocabulary_from_the_tokenizer_as_evaluation_does():
    """``tokenizer.fsq_levels`` is ignored by the builtin weights (and by checkpoints): training must build the
    model with the tokenizer's own vocabulary, the size evaluation builds it with, or the checkpoint cannot be
    evaluated; a fresh ``fsq`` tokenizer's vocabulary is the product of its levels."""
    from arvid_ray.tokenizer import load_tokenizer

    cfg = BASE.replace(**{"tokenizer.fsq_levels": [4, 4]})
    assert build_training_model(cfg).vocab_size == load_tokenizer(cfg.tokenizer).vocab_size == 1000
    fresh = cfg.replace(**{"tokenizer.name": "fsq"})
    assert build_training_model(fresh).vocab_size == load_tokenizer(fresh.tokenizer).vocab_size == 16


def test_initial_weights_do_not_depend_on_whether_the_tokenizer_was_loaded_before():
    """Reading the vocabulary may build the tokenizer once per process (random init drawn, then its weights
    loaded): the model's initial weights must be the same on the first build and on later ones, or ranks
    (fresh processes) would start from other weights than a process that had built it already."""
    from arvid_ray.tokenizer import _loaded_vocab_size

    cfg = BASE.replace(**{"tokenizer.name": "builtin"})
    _loaded_vocab_size.cache_clear()
    first = build_training_model(cfg).state_dict()
    again = build_training_model(cfg).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)


def _steps_are_the_clock(monkeypatch) -> None:
    """The cost meter bills 0.01 accelerator-hours per optimizer step (and carries it through checkpoints)."""
    from arvid_ray.train.cost import CostMeter

    real = CostMeter.state

    def state(self):
        return {**real(self), "device_s": self.prior.get("device_s", 0.0) + 36.0 * self.steps}

    monkeypatch.setattr(CostMeter, "state", state)


def test_a_budget_stops_training_at_its_cost_and_its_cosine_ends_there(tmp_path, monkeypatch):
    """train.budget_gpu_hours: the run stops after the step whose cost reaches the budget (train.steps is the
    cap), that step is the last one everywhere (checkpoint, final hook, budget_stop mark), and the learning
    rate's cosine runs over the budget. The clock is the cost meter's, driven here by the step count."""
    _steps_are_the_clock(monkeypatch)
    cfg = BASE.replace(**{"train.steps": 50, "train.warmup_steps": 2, "train.budget_gpu_hours": 0.07,
                          "train.log_every": 3, "train.ckpt_every": 0})
    reports, hooked = [], []

    class Collect:
        def report(self, step, metrics, save):
            reports.append((step, metrics, save))

    result = train_loop(cfg, cycle(pattern_batches), reporter=Collect(),
                        final_hook=lambda c, m: hooked.append(1) or {"eval/x": 1.0})
    assert result.steps == list(range(1, 8))  # 7 steps x 0.01 = the budget
    step, metrics, save = reports[-1]
    assert step == 7 and save is not None and hooked == [1]  # last step: checkpoint and final evaluation
    assert metrics["train/budget_stop"] == 1.0 and metrics["eval/x"] == 1.0
    assert [s for s, _, _ in reports] == [3, 6, 7]
    # the cosine over the budget: at 0.07 spent the factor is the floor; without a budget it would not be
    assert lr_factor(10, cfg.train, spent=0.07) == pytest.approx(cfg.train.min_lr_ratio)
    assert lr_factor(10, cfg.train, spent=0.035) == pytest.approx((1 + cfg.train.min_lr_ratio) / 2)
    assert lr_factor(10, cfg.train) > 0.9
    assert lr_factor(1, cfg.train, spent=0.07) == pytest.approx(1.0)  # warmup counts steps either way
    # step 7's rate was set inside step 6, when the meter had counted 5 steps (0.05 of 0.07 spent)
    assert metrics["train/lr"] == pytest.approx(cfg.train.lr * lr_factor(6, cfg.train, spent=0.05))


def test_a_run_resumed_at_its_budget_trains_no_further(tmp_path, monkeypatch):
    cfg = BASE.replace(**{"train.steps": 40, "train.warmup_steps": 2, "train.budget_gpu_hours": 0.05,
                          "train.ckpt_every": 0})
    _steps_are_the_clock(monkeypatch)
    tracker = Tracker(cfg, run_dir=tmp_path / "run")
    first = train_loop(cfg, cycle(pattern_batches), reporter=LocalReporter(tracker, tmp_path / "ckpt"))
    assert first.steps == [1, 2, 3, 4, 5]
    again = train_loop(cfg, cycle(pattern_batches), resume_from=latest_checkpoint(tmp_path / "ckpt"))
    assert again.steps == [] and again.start_step == 5


def test_a_negative_budget_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match="train.budget_gpu_hours"):
        BASE.replace(**{"train.budget_gpu_hours": -1.0})
