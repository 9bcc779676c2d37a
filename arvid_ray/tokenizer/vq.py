"""External VQ-style checkpoints: a learned codebook (nearest neighbour) in place of FSQ, keys mapped explicitly.

Design trade-off: VQ tokenizers from other projects (taming-VQGAN / LlamaGen, VideoGPT / OmniTokenizer,
LARP-like layouts) name their codebook and projection tensors differently. Rather than guessing by
shapes, ``KEY_MAP`` lists every accepted source prefix and the name it gets here, and anything that
stays unmapped is reported. Only the quantizer and its projections are renamed: the encoder/decoder
bodies must follow this package's causal architecture (hyper-parameters in the sidecar JSON); a network
with a different layer graph cannot become this one by renaming and would need its own backend.

Sidecar ``<weights>.json`` for a VQ checkpoint::

    {"quantizer": "vq", "arch": {TokenizerArch fields; fsq_levels is ignored}, "vq": {"l2_normalize": false}}

The codebook is ``[K, D]`` (K codes = vocab size, D = latent channels). Optional 1x1 projections
``pre_quant`` (encoder channels -> D) and ``post_quant`` (D -> decoder channels) are used when present.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from arvid_ray.tokenizer.autoencoder import CausalVideoAutoencoder, Decoder, Encoder
from arvid_ray.tokenizer.checkpoint_format import CheckpointError, load_into, parse_arch
from arvid_ray.tokenizer.codec import ConvTokenizer, state_dict_sha256

__all__ = ["VectorQuantizer", "KEY_MAP", "map_vq_keys", "load_vq_checkpoint"]

log = logging.getLogger(__name__)

# source key (or prefix ending in '.') -> our key (or prefix); first match wins, order matters
KEY_MAP: list[tuple[str, str]] = [
    ("quantize.embedding.weight", "quantizer.codebook"),  # taming VQGAN, LlamaGen
    ("quantizer.embedding.weight", "quantizer.codebook"),  # LARP-like / vector-quantize-pytorch style
    ("quantizer.codebook.weight", "quantizer.codebook"),
    ("codebook.embeddings", "quantizer.codebook"),  # VideoGPT, TATS, OmniTokenizer
    ("quantizer.codebook", "quantizer.codebook"),  # our own VQ layout
    ("quant_conv.", "pre_quant."),  # taming / LlamaGen projections
    ("post_quant_conv.", "post_quant."),
    ("pre_vq_conv.", "pre_quant."),  # VideoGPT / OmniTokenizer projections
    ("post_vq_conv.", "post_quant."),
    ("pre_quant.", "pre_quant."),
    ("post_quant.", "post_quant."),
    ("encoder.", "encoder."),
    ("decoder.", "decoder."),
]
_WRAPPER_PREFIXES = ("module.", "model.", "vqvae.", "tokenizer.")
_IGNORED = ("codebook.N", "codebook.z_avg", "codebook._", "quantize.cluster_size", "quantize.embed_avg",
            "loss.", "discriminator.")


class VectorQuantizer(nn.Module):
    """Nearest-neighbour lookup in a ``[K, D]`` codebook with a straight-through gradient."""

    def __init__(self, num_codes: int, dim: int, l2_normalize: bool = False) -> None:
        super().__init__()
        self.codebook = nn.Parameter(torch.zeros(num_codes, dim))
        self.l2_normalize = l2_normalize

    @property
    def dim(self) -> int:
        return self.codebook.shape[1]

    @property
    def codebook_size(self) -> int:
        return self.codebook.shape[0]

    def _book(self) -> torch.Tensor:
        return F.normalize(self.codebook, dim=-1) if self.l2_normalize else self.codebook

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (..., D) -> (codes (..., D) with STE gradient, indices (...) int64)."""
        flat = rearrange(z.float(), "... d -> (...) d")  # (N, D)
        if self.l2_normalize:
            flat = F.normalize(flat, dim=-1)
        book = self._book()
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ book.T + book.pow(2).sum(1)  # (N, K)
        indices = dist.argmin(1).reshape(z.shape[:-1])
        codes = book[indices]
        return flat.reshape(z.shape) + (codes - flat.reshape(z.shape)).detach(), indices

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(f"token ids must lie in [0, {self.codebook_size}); got range "
                             f"[{int(indices.min())}, {int(indices.max())}]")
        return self._book()[indices.long()]


class _VQAutoencoder(CausalVideoAutoencoder):
    """CausalVideoAutoencoder with a VQ codebook and optional 1x1 projections around it."""

    def __init__(self, arch, quantizer: VectorQuantizer, enc_dim: int | None, dec_dim: int | None):
        super().__init__(arch, quantizer=quantizer)
        # rebuild encoder/decoder around the projection widths (the parent sized them to the codebook dim)
        self.encoder = Encoder(arch, enc_dim or quantizer.dim)
        self.decoder = Decoder(arch, dec_dim or quantizer.dim)
        self.pre_quant = nn.Conv3d(enc_dim, quantizer.dim, 1) if enc_dim else nn.Identity()
        self.post_quant = nn.Conv3d(quantizer.dim, dec_dim, 1) if dec_dim else nn.Identity()

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.pre_quant(self.encoder(x))  # (B, D, t, h, w)
        codes, indices = self.quantizer(rearrange(z, "b d t h w -> b t h w d"))
        return rearrange(codes, "b t h w d -> b d t h w"), indices

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant(codes))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        codes = rearrange(self.quantizer.indices_to_codes(indices), "b t h w d -> b d t h w")
        return self.decode_codes(codes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes, indices = self.encode(x)
        return self.decode_codes(codes), indices

    def forward_train(self, x: torch.Tensor):
        raise NotImplementedError("training or fine-tuning a VQ checkpoint is not supported; train an FSQ "
                                  "tokenizer with `arvid-ray train-tokenizer` instead")


def map_vq_keys(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Rename an external state dict's keys via KEY_MAP; unmapped keys raise CheckpointError."""
    mapped: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in state.items():
        name = key
        while name.startswith(_WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        if name.startswith(_IGNORED):
            continue  # EMA statistics and training-only modules carry no inference weights
        target = next((dst + name[len(src):] for src, dst in KEY_MAP
                       if (name == src if not src.endswith(".") else name.startswith(src))), None)
        if target is None:
            unmapped.append(key)
        else:
            if target.startswith(("pre_quant.weight", "post_quant.weight")) and value.ndim == 4:
                value = value.unsqueeze(2)  # 2D 1x1 conv (D, E, 1, 1) -> 3D (D, E, 1, 1, 1)
            mapped[target] = value
    if unmapped:
        raise CheckpointError(f"VQ checkpoint '{path}' has {len(unmapped)} key(s) with no mapping in "
                              f"arvid_ray.tokenizer.vq.KEY_MAP, e.g. {unmapped[:3]}")
    if "quantizer.codebook" not in mapped:
        raise CheckpointError(f"VQ checkpoint '{path}' has no codebook; expected one of "
                              f"{[src for src, dst in KEY_MAP if dst == 'quantizer.codebook']}")
    return mapped


def load_vq_checkpoint(state: dict[str, torch.Tensor], header: dict[str, Any], path: Path,
                       ident_prefix: str) -> ConvTokenizer:
    """Build the VQ autoencoder described by ``header`` and load the mapped ``state`` into it."""
    mapped = map_vq_keys(state, path)
    book = mapped["quantizer.codebook"]
    if book.ndim != 2:
        raise CheckpointError(f"VQ checkpoint '{path}': codebook must be [K, D], got {tuple(book.shape)}")
    arch = parse_arch(header.get("arch"), path)
    options = header.get("vq") or {}
    quantizer = VectorQuantizer(book.shape[0], book.shape[1], bool(options.get("l2_normalize", False)))
    pre, post = mapped.get("pre_quant.weight"), mapped.get("post_quant.weight")
    model = _VQAutoencoder(arch, quantizer, enc_dim=None if pre is None else pre.shape[1],
                           dec_dim=None if post is None else post.shape[0])
    load_into(model, mapped, path)
    sha = state_dict_sha256(model.state_dict())
    return ConvTokenizer(model, id=f"{ident_prefix}:vq-{path.stem}-{sha[:12]}", sha256=sha)
