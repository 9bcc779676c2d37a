"""Named model sizes: the single complexity dial.

Design trade-off: sizes live in one dict (as in DiT / LlamaGen) instead of free-form width/depth knobs,
so runs are comparable by name; ``ModelConfig`` may still override depth, width or heads for sweeps, and
the MLP width follows the width (Llama's 8/3 rule) so it never needs its own knob.
"""

from __future__ import annotations

from dataclasses import dataclass

from arvid_ray.config import ConfigError, ModelConfig

__all__ = ["PRESETS", "ModelDims", "resolve_dims"]


@dataclass(frozen=True)
class ModelDims:
    n_layers: int
    d_model: int
    n_heads: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def mlp_hidden(self) -> int:
        """SwiGLU hidden width: 8/3 * d_model rounded up to a multiple of 32 (Llama)."""
        return -(-(8 * self.d_model) // (3 * 32)) * 32


PRESETS: dict[str, ModelDims] = {
    "debug": ModelDims(n_layers=2, d_model=64, n_heads=4),
    "S": ModelDims(n_layers=6, d_model=384, n_heads=6),
    "B": ModelDims(n_layers=12, d_model=768, n_heads=12),
    "L": ModelDims(n_layers=24, d_model=1024, n_heads=16),
    "XL": ModelDims(n_layers=36, d_model=1280, n_heads=20),
}


def resolve_dims(cfg: ModelConfig) -> ModelDims:
    """The preset's dims with ``cfg``'s overrides applied; refuses head sizes rotary 3D cannot split."""
    if cfg.preset not in PRESETS:
        raise ConfigError(f"config field 'model.preset' = {cfg.preset!r} is invalid: one of {sorted(PRESETS)}")
    base = PRESETS[cfg.preset]
    dims = ModelDims(
        n_layers=cfg.n_layers or base.n_layers,
        d_model=cfg.d_model or base.d_model,
        n_heads=cfg.n_heads or base.n_heads,
    )
    if dims.d_model % dims.n_heads:
        raise ConfigError(
            f"config field 'model.d_model' = {dims.d_model} is invalid: must be divisible by "
            f"model.n_heads={dims.n_heads}"
        )
    if dims.head_dim < 6 or dims.head_dim % 2:
        raise ConfigError(
            f"config field 'model.n_heads' = {dims.n_heads} is invalid: head size d_model/n_heads = "
            f"{dims.head_dim} must be even and >= 6 so rotary positions split over (frame, row, column)"
        )
    return dims
