"""The uint8-in / token-ids-out face of the autoencoder: the object every other stage holds.

Design trade-off: the network works on float channels-first video in [-1, 1]; every caller (Ray Data
actors, the evaluator, tests) has uint8 channels-last frames in numpy or torch. One wrapper owns the
conversion, the input checks with readable errors and the identity (``id`` + ``sha256`` of the weights)
that tokens.parquet records, so no caller re-implements them. ``sha256`` hashes the state dict (names,
dtypes, shapes, bytes in sorted key order), so the same weights hash the same whatever file held them.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from einops import rearrange

from arvid_ray.tokenizer.autoencoder import CausalVideoAutoencoder

__all__ = ["ConvTokenizer", "state_dict_sha256", "frames_to_tensor"]


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """Content hash of a state dict, independent of the container it was stored in."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def frames_to_tensor(frames: Any, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 [B, T, H, W, 3] (numpy or torch) -> float (B, 3, T, H, W) in [-1, 1] on ``device``."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames must be a uint8 numpy array or torch tensor [B,T,H,W,3], got {type(frames).__name__}")
    if frames.dtype != torch.uint8:
        raise TypeError(f"frames must have dtype uint8 (0..255), got {frames.dtype}; convert with .astype(np.uint8)")
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(
            f"frames must have shape [B, T, H, W, 3] (RGB, channels last), got {tuple(frames.shape)}; "
            "add a batch axis with frames[None] for a single clip"
        )
    x = frames.to(device, non_blocking=True).float().div_(127.5).sub_(1.0)
    return rearrange(x, "b t h w c -> b c t h w").contiguous()  # (B, 3, T, H, W)


class ConvTokenizer:
    """VideoTokenizer over a CausalVideoAutoencoder (FSQ or VQ quantizer); see arvid_ray.tokenizer.VideoTokenizer."""

    def __init__(self, model: CausalVideoAutoencoder, id: str, sha256: str | None = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.id = id
        self.sha256 = sha256 or state_dict_sha256(model.state_dict())
        self.device = next(model.parameters()).device

    @property
    def vocab_size(self) -> int:
        return self.model.quantizer.codebook_size

    @property
    def arch(self):
        return self.model.arch

    def latent_shape(self, T: int, H: int, W: int) -> tuple[int, int, int]:
        """(t, h, w) of the token grid for a clip of T frames of H x W pixels."""
        return self.model.latent_shape(T, H, W)

    def to(self, device: torch.device | str) -> ConvTokenizer:
        self.model.to(device)
        self.device = torch.device(device)
        return self

    @torch.inference_mode()
    def encode(self, frames: Any) -> torch.Tensor:
        """uint8 [B, T, H, W, 3] -> LongTensor [B, t, h, w] token ids (on this tokenizer's device)."""
        x = frames_to_tensor(frames, self.device)
        self.latent_shape(*x.shape[2:])  # validates T = 1 + 4k and divisibility, with a clear message
        _, indices = self.model.encode(x)
        return indices.long()

    @torch.inference_mode()
    def decode(self, tokens: Any) -> torch.Tensor:
        """Token ids [B, t, h, w] -> uint8 [B, T, H, W, 3] with T = 1 + temporal_down * (t - 1)."""
        tokens = torch.as_tensor(tokens)
        if tokens.ndim != 4:
            raise ValueError(f"tokens must have shape [B, t, h, w], got {tuple(tokens.shape)}")
        if tokens.dtype.is_floating_point:
            raise TypeError(f"tokens must be integer ids, got dtype {tokens.dtype}")
        x = self.model.decode_indices(tokens.to(self.device))  # (B, 3, T, H, W) in ~[-1, 1]
        x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return rearrange(x, "b c t h w -> b t h w c").contiguous()

    def __repr__(self) -> str:
        return f"ConvTokenizer(id={self.id!r}, vocab_size={self.vocab_size}, sha256={self.sha256[:12]}…)"
