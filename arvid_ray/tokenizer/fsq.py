"""Finite Scalar Quantization (Mentzer et al., 2023): a codebook-free quantizer.

Design trade-off: FSQ bounds each latent channel with tanh and rounds it to one of ``L_i`` levels,
so the "codebook" is the implicit grid prod(L_i) and needs no commitment loss, EMA updates or dead-code
restarts — usage stays high by construction, at the cost of a fixed (not learned) code geometry. The
rounding passes gradients straight through (STE). Indices are a mixed-radix number over the channels,
so index <-> code conversion is exact integer arithmetic in both directions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["FSQ"]


def _round_ste(z: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return z + (z.round() - z).detach()


class FSQ(nn.Module):
    """Quantize the channel dim (last axis) of ``z`` onto the grid given by ``levels``.

    Codes are normalised to [-1, 1]; ``indices`` are int64 in ``[0, prod(levels))``.
    """

    def __init__(self, levels: Sequence[int], eps: float = 1e-3) -> None:
        super().__init__()
        levels = [int(level) for level in levels]
        if not levels or any(level < 2 for level in levels):
            raise ValueError(f"FSQ levels must be integers >= 2, got {levels}")
        self.levels_list = levels
        self.eps = eps
        basis = [1]
        for level in levels[:-1]:
            basis.append(basis[-1] * level)
        # buffers (non-persistent): derived from levels, so they never need to live in a checkpoint
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.int64), persistent=False)
        self.register_buffer("_basis", torch.tensor(basis, dtype=torch.int64), persistent=False)

    @property
    def dim(self) -> int:
        return len(self.levels_list)

    @property
    def codebook_size(self) -> int:
        size = 1
        for level in self.levels_list:
            size *= level
        return size

    def _half_width(self) -> torch.Tensor:
        return (self._levels // 2).to(torch.float32)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash to (-(L-1)/2, (L-1)/2), shifted by 0.5 for even L so rounding yields exactly L values."""
        levels = self._levels.to(z.dtype)
        half_l = (levels - 1) * (1 + self.eps) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0).to(z.dtype)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (..., D) float → (codes (..., D) in [-1, 1] with STE gradient, indices (...) int64)."""
        if z.shape[-1] != self.dim:
            raise ValueError(f"FSQ expects {self.dim} channels in the last axis, got shape {tuple(z.shape)}")
        quantized = _round_ste(self.bound(z.float()))  # integers in [-L//2, L//2] (shifted for even L)
        codes = quantized / self._half_width()
        return codes, self.codes_to_indices(codes)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Normalised codes (..., D) → int64 indices (...)."""
        half = self._half_width()
        digits = (codes * half + half).round().to(torch.int64)  # (..., D) in [0, L-1]
        return (digits * self._basis).sum(dim=-1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """int64 indices (...) → normalised codes (..., D)."""
        indices = indices.to(torch.int64)
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(
                f"token ids must lie in [0, {self.codebook_size}); got range "
                f"[{int(indices.min())}, {int(indices.max())}] — were these tokens made by another tokenizer?"
            )
        digits = (indices.unsqueeze(-1) // self._basis) % self._levels  # (..., D)
        half = self._half_width()
        return (digits.to(torch.float32) - half) / half
