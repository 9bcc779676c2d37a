"""The autoregressive video transformer: ``build_model(cfg, vocab_size, latent_shape)``.

Design trade-off: the network only predicts (logits + hidden states, with an explicit KV cache); losses
live in ``arvid_ray.objectives`` and decoding in ``arvid_ray.sampling``, so one model serves every
objective and the sampler without mode flags.
"""

from __future__ import annotations

from arvid_ray.config import ModelConfig
from arvid_ray.model.conditioning import build_conditioner
from arvid_ray.model.presets import PRESETS, ModelDims, resolve_dims
from arvid_ray.model.transformer import KVCache, ModelOutput, VideoTransformer

__all__ = ["build_model", "VideoTransformer", "ModelOutput", "KVCache", "ModelDims", "PRESETS", "resolve_dims"]


def build_model(cfg: ModelConfig, vocab_size: int, latent_shape: tuple[int, int, int]) -> VideoTransformer:
    """A fresh model for a ``vocab_size`` tokenizer and a ``(t, h, w)`` training token grid."""
    if vocab_size < 2:
        raise ValueError(f"vocab_size={vocab_size} must be >= 2 (take it from the tokenizer's vocab_size)")
    if len(latent_shape) != 3 or min(latent_shape) < 1:
        raise ValueError(f"latent_shape={latent_shape} must be (t, h, w) with positive sizes "
                         f"(ExperimentConfig.latent_shape())")
    dims = resolve_dims(cfg)
    conditioner = build_conditioner(cfg, dims.d_model)
    return VideoTransformer(dims, vocab_size, tuple(latent_shape), conditioner, cfg.positions, cfg.dropout)
