"""Rollouts past the trained length give every method the positions it trained on (issue 24): Fewer-Frames
goes block-wise by default; a full/local model keeps the clip's first latent frame at position 0 of every
re-prefilled context; evaluation resolves both from the objective."""

from __future__ import annotations

import pytest
import torch

from arvid_ray import sampling
from arvid_ray.config import ExperimentConfig, ModelConfig, SamplingConfig
from arvid_ray.evaluate import rollouts
from arvid_ray.model import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VOCAB, SHAPE = 32, (3, 2, 2)  # trained on 3 latent frames of 2 x 2 tokens


def test_each_method_gets_its_own_rollout_protocol_by_default():
    auto = SamplingConfig()
    fewer = auto.for_objective("fewer_frames")
    assert (fewer.mode, fewer.anchor_first_frame) == ("blockwise", False)  # the paper's Fewer-Frames inference
    for kind in ("full", "local"):
        resolved = auto.for_objective(kind)
        assert (resolved.mode, resolved.anchor_first_frame) == ("sliding", True)
    explicit = SamplingConfig(mode="sliding", anchor_first_frame=False)  # a chosen protocol is kept
    assert explicit.for_objective("fewer_frames") == explicit


@pytest.mark.parametrize("anchor", [True, False])
def test_sliding_rollout_contexts_keep_frame_zero_at_position_zero_when_anchored(monkeypatch, anchor):
    torch.manual_seed(0)
    model = build_model(ModelConfig(cfg_dropout=0.1), VOCAB, SHAPE)
    contexts = []

    def spy(*args):
        ctx = sampling_rollout_context(*args)
        contexts.append(ctx.clone())
        return ctx

    sampling_rollout_context = sampling.rollout_context
    monkeypatch.setattr(sampling, "rollout_context", spy)
    cfg = SamplingConfig(temperature=0.0, mode="sliding", anchor_first_frame=anchor)
    video = sampling.generate(model, 2, 6, cfg, labels=torch.tensor([1, 2]))  # (2, 6, 2, 2)
    flat = video.flatten(1)
    assert len(contexts) == 3  # frames 3, 4, 5 each from a re-prefilled context of 2 frames
    for frames, ctx in zip((3, 4, 5), contexts):
        assert ctx.shape == (2, 2 * 4)
        recent = flat[:, (frames - 1) * 4:frames * 4]
        assert torch.equal(ctx[:, 4:], recent)  # the newest frame is always there
        first = flat[:, :4] if anchor else flat[:, (frames - 2) * 4:(frames - 1) * 4]
        assert torch.equal(ctx[:, :4], first)
    with pytest.raises(ValueError, match="anchor_first_frame"):  # a 1-frame context cannot hold the anchor too
        sampling.context_schedule(SamplingConfig(context_frames=1, anchor_first_frame=True), 3)


def test_evaluation_samples_each_method_with_its_protocol(monkeypatch):
    seen = {}
    monkeypatch.setattr(sampling, "generate", lambda *a, **k: seen.update(cfg=a[3], trained=k["trained_frames"]))
    base = ExperimentConfig().replace(**{"data.num_frames": 17, "data.resolution": 16})
    for kind, mode, anchor, trained in (("fewer_frames", "blockwise", False, 2), ("local", "sliding", True, 5)):
        rollouts._generate(None, 2, 10, base.replace(**{"objective.kind": kind}), None, None, None, None)
        assert (seen["cfg"].mode, seen["cfg"].anchor_first_frame, seen["trained"]) == (mode, anchor, trained)
