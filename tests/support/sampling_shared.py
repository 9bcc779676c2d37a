"""What test_sampling.py and test_sampling_integration.py share (moved here from both when the tests were split)."""

from __future__ import annotations

import torch

from arvid_ray.config import ModelConfig
from arvid_ray.model import build_model

VOCAB, SHAPE = 24, (3, 2, 2)  # trained on 3 latent frames of 2 x 2 tokens


def _model(**kw):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{"cfg_dropout": 0.1, **kw}), VOCAB, SHAPE)
    with torch.no_grad():  # a sharper random model so greedy choices are not near-ties
        model.head.weight.mul_(20)
    return model.eval()
