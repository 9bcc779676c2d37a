"""Sampling: filters, CFG, KV-cache decoding == uncached decoding, rollouts beyond the trained length."""

from __future__ import annotations

import pytest
import torch

from arvid_ray.config import ModelConfig, SamplingConfig
from arvid_ray.model import build_model
from arvid_ray.sampling import generate

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VOCAB, SHAPE = 24, (3, 2, 2)  # trained on 3 latent frames of 2 x 2 tokens


def _model(**kw):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{"cfg_dropout": 0.1, **kw}), VOCAB, SHAPE)
    with torch.no_grad():  # a sharper random model so greedy choices are not near-ties
        model.head.weight.mul_(20)
    return model.eval()


@pytest.mark.slow  # ~15-30 s: inductor compiles the step on CPU
def test_compiled_decode_step_equals_eager():
    """sampling.compile=on (torch.compile, static shapes, the masked all-slot step) on CPU: a seeded CFG sample
    rolled out past the trained length (so the compiled step serves several re-prefills of one cache) equals
    the eager sampler's."""
    model = _model()
    labels = torch.tensor([2, 5])
    cfg = SamplingConfig(temperature=1.0, top_k=8, cfg_scale=2.0, mode="sliding")
    eager = generate(model, 2, 5, cfg, labels=labels, generator=torch.Generator().manual_seed(1))
    compiled = generate(model, 2, 5, SamplingConfig(temperature=1.0, top_k=8, cfg_scale=2.0, mode="sliding",
                                                    compile="on"), labels=labels,
                        generator=torch.Generator().manual_seed(1))
    assert torch.equal(compiled, eager)
