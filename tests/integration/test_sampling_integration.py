"""Sampling: filters, CFG, KV-cache decoding == uncached decoding, rollouts beyond the trained length."""

from __future__ import annotations

import pytest
import torch
from sampling_shared import _model

from arvid_ray.config import SamplingConfig
from arvid_ray.sampling import generate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
