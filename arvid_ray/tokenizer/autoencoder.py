"""Causal 3D-conv video autoencoder: the first frame is encoded alone, then ``temporal_down`` frames per latent.

Design trade-off: the model has to train on a shared 2-core CPU in minutes, so it is factorised —
a space-to-depth patchify (2x) replaces full-resolution convolutions, residual blocks are (2+1)D
(a 3x3 spatial conv then a causal 3-tap temporal conv) and only the down/up-sampling convs are full 3D.
Causality is structural rather than masked: every temporal conv is padded on the past side only
(replicating the first frame), every norm is per frame, temporal downsampling is a stride-2 causal conv
(``1 + 2k`` frames -> ``1 + k``) and temporal upsampling emits two frames per latent and drops the very
first (``1 + k`` -> ``1 + 2k``). Hence latent frame ``j`` sees video frames ``<= 4j`` and decodes to
frames ``4j-3 .. 4j``; changing frame ``k`` never changes an earlier latent frame (tested exactly).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from arvid_ray.tokenizer.fsq import FSQ

__all__ = ["TokenizerArch", "CausalVideoAutoencoder"]


@dataclass(frozen=True)
class TokenizerArch:
    """Hyper-parameters that fix the network's shape (stored beside every checkpoint)."""

    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)
    temporal_down: int = 4
    spatial_down: int = 8
    channels: int = 32
    ch_mult: tuple[int, ...] = (1, 2, 4)
    patch: int = 2
    groups: int = 8
    norm: str = "none"

    def __post_init__(self) -> None:
        for name in ("temporal_down", "spatial_down", "patch"):
            value = getattr(self, name)
            if value < 1 or value & (value - 1):
                raise ValueError(f"tokenizer arch '{name}' must be a power of two >= 1, got {value}")
        if self.spatial_down < self.patch:
            raise ValueError(f"spatial_down ({self.spatial_down}) must be >= patch ({self.patch})")
        if len(self.ch_mult) < self.num_levels + 1:
            raise ValueError(f"ch_mult needs {self.num_levels + 1} entries for this arch, got {self.ch_mult}")
        if self.norm not in ("none", "channel", "group"):
            raise ValueError(f"tokenizer arch 'norm' must be 'none', 'channel' or 'group', got {self.norm!r}")
        if any((self.channels * m) % self.groups for m in self.ch_mult):
            raise ValueError(f"channels x ch_mult {self.ch_mult} must be divisible by groups={self.groups}")

    @property
    def spatial_levels(self) -> int:
        return int(math.log2(self.spatial_down // self.patch))

    @property
    def temporal_levels(self) -> int:
        return int(math.log2(self.temporal_down))

    @property
    def num_levels(self) -> int:
        return max(self.spatial_levels, self.temporal_levels)

    def level_strides(self) -> list[tuple[int, int]]:
        """(temporal, spatial) stride of each down level: spatial early (cheap), temporal late."""
        n = self.num_levels
        return [(2 if i >= n - self.temporal_levels else 1, 2 if i < self.spatial_levels else 1) for i in range(n)]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenizerArch:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown tokenizer arch key(s) {unknown}; allowed: {sorted(known)}")
        kwargs = {k: tuple(int(x) for x in v) if isinstance(v, (list, tuple)) else v if k == "norm" else int(v)
                  for k, v in data.items()}
        return cls(**kwargs)


class CausalConv3d(nn.Module):
    """Conv3d padded only on the past side in time (replicating frame 0) and symmetrically in space."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int], stride: tuple[int, int, int] = (1, 1, 1)):
        super().__init__()
        kt, kh, kw = kernel
        self.pad_t = kt - 1
        self.conv = nn.Conv3d(cin, cout, kernel, stride=stride, padding=(0, kh // 2, kw // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        if self.pad_t:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.pad_t, -1, -1), x], dim=2)
        return self.conv(x)


class FrameNorm(nn.GroupNorm):
    """GroupNorm over each frame separately, so statistics never mix time steps (keeps causality).

    Kept for old checkpoints (``norm="group"``): on flat synthetic frames it erases the background
    colour (a constant frame normalises to zero), which capped reconstruction near 20 dB.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        b = x.shape[0]
        y = super().forward(rearrange(x, "b c t h w -> (b t) c h w"))
        return rearrange(y, "(b t) c h w -> b c t h w", b=b)


class ChannelNorm(nn.Module):
    """LayerNorm over channels at each (t, h, w) position: causal, and keeps flat regions' colour."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        y = (x - mean) * torch.rsqrt(var + self.eps)
        return y * self.weight[:, None, None, None] + self.bias[:, None, None, None]


def make_norm(arch: TokenizerArch, channels: int) -> nn.Module:
    if arch.norm == "none":
        return nn.Identity()
    return ChannelNorm(channels) if arch.norm == "channel" else FrameNorm(arch.groups, channels)


class ResBlock(nn.Module):
    """(2+1)D residual block: norm-SiLU-spatial 3x3, norm-SiLU-causal temporal 3-tap."""

    def __init__(self, cin: int, cout: int, arch: TokenizerArch):
        super().__init__()
        self.norm1 = make_norm(arch, cin)
        self.conv1 = CausalConv3d(cin, cout, (1, 3, 3))
        self.norm2 = make_norm(arch, cout)
        self.conv2 = CausalConv3d(cout, cout, (3, 1, 1))
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.conv.weight)  # each block starts as the identity: stable without norms
        nn.init.zeros_(self.conv2.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Strided causal conv: (T, H, W) -> (1 + (T-1)/st, H/ss, W/ss)."""

    def __init__(self, cin: int, cout: int, st: int, ss: int):
        super().__init__()
        self.conv = CausalConv3d(cin, cout, (3 if st > 1 else 1, 3, 3), stride=(st, ss, ss))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Causal temporal upsample (1 + k -> 1 + 2k: two frames per latent, drop the first) + nearest 2x space."""

    def __init__(self, cin: int, cout: int, st: int, ss: int):
        super().__init__()
        self.st, self.ss = st, ss
        self.time = CausalConv3d(cin, cin * st, (3, 1, 1)) if st > 1 else None
        self.conv = CausalConv3d(cin, cout, (1, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, t, h, w)
        if self.time is not None:
            x = rearrange(self.time(x), "b (s c) t h w -> b c (t s) h w", s=self.st)  # (B, C, t*st, h, w)
            x = x[:, :, self.st - 1:]  # first latent frame decodes to one frame: (B, C, 1 + (t-1)*st, h, w)
        if self.ss > 1:
            x = F.interpolate(x, scale_factor=(1, self.ss, self.ss), mode="nearest")
        return self.conv(x)


class Encoder(nn.Module):
    def __init__(self, arch: TokenizerArch, latent_dim: int):
        super().__init__()
        chans = [arch.channels * m for m in arch.ch_mult]
        self.patch = arch.patch
        self.conv_in = CausalConv3d(3 * arch.patch**2, chans[0], (1, 3, 3))
        blocks: list[nn.Module] = []
        for i, (st, ss) in enumerate(arch.level_strides()):
            blocks += [ResBlock(chans[i], chans[i], arch), Downsample(chans[i], chans[i + 1], st, ss)]
        top = chans[arch.num_levels]
        blocks += [ResBlock(top, top, arch)]
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = make_norm(arch, top)
        self.conv_out = nn.Conv3d(top, latent_dim, 1)
        with torch.no_grad():  # start with latents spread over the FSQ grid (default init maps all to ~0)
            self.conv_out.weight.mul_(10.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) in [-1, 1]
        p = self.patch
        x = rearrange(x, "b c t (h p1) (w p2) -> b (c p1 p2) t h w", p1=p, p2=p)  # (B, 3p², T, H/p, W/p)
        h = self.blocks(self.conv_in(x))
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, D, t, h, w)


class Decoder(nn.Module):
    def __init__(self, arch: TokenizerArch, latent_dim: int):
        super().__init__()
        chans = [arch.channels * m for m in arch.ch_mult]
        self.patch = arch.patch
        top = chans[arch.num_levels]
        self.conv_in = CausalConv3d(latent_dim, top, (3, 3, 3))
        blocks: list[nn.Module] = [ResBlock(top, top, arch)]
        for i, (st, ss) in reversed(list(enumerate(arch.level_strides()))):
            blocks += [Upsample(chans[i + 1], chans[i], st, ss), ResBlock(chans[i], chans[i], arch)]
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = make_norm(arch, chans[0])
        self.conv_out = CausalConv3d(chans[0], 3 * arch.patch**2, (1, 3, 3))

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, D, t, h, w) codes in [-1, 1]
        h = self.blocks(self.conv_in(z))
        x = self.conv_out(F.silu(self.norm_out(h)))  # (B, 3p², T, H/p, W/p)
        p = self.patch
        return rearrange(x, "b (c p1 p2) t h w -> b c t (h p1) (w p2)", p1=p, p2=p)  # (B, 3, T, H, W)


class CausalVideoAutoencoder(nn.Module):
    """Encoder -> quantizer -> Decoder on float video in [-1, 1], channels-first (B, 3, T, H, W).

    The quantizer is FSQ over ``arch.fsq_levels`` unless another one with the same interface is passed
    (``dim``, ``codebook_size``, ``forward(z) -> (codes, indices)``, ``indices_to_codes``), e.g. the VQ
    codebook of an external checkpoint (``arvid_ray.tokenizer.vq``).
    """

    def __init__(self, arch: TokenizerArch, quantizer: nn.Module | None = None):
        super().__init__()
        self.arch = arch
        self.quantizer = quantizer if quantizer is not None else FSQ(arch.fsq_levels)
        self.encoder = Encoder(arch, self.quantizer.dim)
        self.decoder = Decoder(arch, self.quantizer.dim)

    def latent_shape(self, T: int, H: int, W: int) -> tuple[int, int, int]:
        td, sd = self.arch.temporal_down, self.arch.spatial_down
        if T < 1 or (T - 1) % td:
            raise ValueError(
                f"clip length T={T} is not 1 + {td}k frames (the first frame is encoded alone, then {td} "
                f"frames per latent frame); use e.g. {1 + td * max(1, (T - 1) // td)} frames"
            )
        if H % sd or W % sd:
            raise ValueError(f"frame size {H}x{W} must be divisible by spatial_down={sd}; resize or crop the clip")
        return 1 + (T - 1) // td, H // sd, W // sd

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, T, H, W) -> (codes (B, D, t, h, w) with STE gradient, indices (B, t, h, w))."""
        z = self.encoder(x)
        codes, indices = self.quantizer(rearrange(z, "b d t h w -> b t h w d"))
        return rearrange(codes, "b t h w d -> b d t h w"), indices

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, t, h, w) int -> (B, 3, T, H, W) float (unclamped)."""
        codes = rearrange(self.quantizer.indices_to_codes(indices), "b t h w d -> b d t h w")
        return self.decoder(codes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction (B, 3, T, H, W) and indices (B, t, h, w)."""
        codes, indices = self.encode(x)
        return self.decoder(codes), indices

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction, indices and the pre-quantization latents z (B, D, t, h, w) for range losses."""
        z = self.encoder(x)
        codes, indices = self.quantizer(rearrange(z, "b d t h w -> b t h w d"))
        return self.decoder(rearrange(codes, "b t h w d -> b d t h w")), indices, z
