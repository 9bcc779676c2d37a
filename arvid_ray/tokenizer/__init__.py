"""Video tokenizer: the ``VideoTokenizer`` protocol and ``load_tokenizer`` (the registry of backends).

Design trade-off: downstream stages (Ray Data tokenize actors, the AR trainer, the evaluator) depend
only on the small protocol below — ids in, uint8 frames out, plus an identity for caches — so a
backend (our causal conv + FSQ autoencoder, an external VQ checkpoint) can be swapped by config
without touching them. Backends by ``TokenizerConfig.name``:

- ``"builtin"``: the embedded default weights shipped in ``arvid_ray/assets/`` (produced by
  ``experiments/train_embedded_tokenizer.py``; its seed and config sit in the JSON beside the weights);
- ``"fsq"``: the built-in architecture from the config's hyper-parameters with a fixed-seed random init —
  deterministic, so pipeline tests can run before any weights exist;
- a local path: a checkpoint read by ``arvid_ray.tokenizer.pretrained.load_checkpoint`` (formats
  documented there), always with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from arvid_ray.config import TokenizerConfig
from arvid_ray.tokenizer.autoencoder import CausalVideoAutoencoder, TokenizerArch
from arvid_ray.tokenizer.codec import ConvTokenizer

__all__ = [
    "VideoTokenizer",
    "ConvTokenizer",
    "TokenizerArch",
    "load_tokenizer",
    "arch_from_config",
    "builtin_weights_path",
    "FSQ_INIT_SEED",
    "tokenizer_vocab_size",
]

log = logging.getLogger(__name__)

FSQ_INIT_SEED = 0
"""Seed of the random init behind ``name="fsq"``."""


@runtime_checkable
class VideoTokenizer(Protocol):
    """Causal video tokenizer: first frame alone, then ``temporal_down`` frames per latent frame."""

    id: str
    sha256: str
    vocab_size: int

    def latent_shape(self, T: int, H: int, W: int) -> tuple[int, int, int]: ...

    def encode(self, frames: Any) -> torch.Tensor:
        """uint8 [B, T, H, W, 3] (numpy or torch) -> LongTensor [B, t, h, w]."""
        ...

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """LongTensor [B, t, h, w] -> uint8 [B, T, H, W, 3]."""
        ...

    def to(self, device: torch.device | str) -> VideoTokenizer: ...


def arch_from_config(cfg: TokenizerConfig) -> TokenizerArch:
    """The built-in architecture for a TokenizerConfig (channel multipliers 1, 2, 4, 4, ... per level)."""
    probe = TokenizerArch(fsq_levels=tuple(cfg.fsq_levels), temporal_down=cfg.temporal_down,
                          spatial_down=cfg.spatial_down, channels=cfg.channels, ch_mult=(1,) * 8)
    ch_mult = tuple(min(2**i, 4) for i in range(probe.num_levels + 1))
    groups = 8 if all((cfg.channels * m) % 8 == 0 for m in ch_mult) else 1
    return TokenizerArch(fsq_levels=tuple(cfg.fsq_levels), temporal_down=cfg.temporal_down,
                         spatial_down=cfg.spatial_down, channels=cfg.channels, ch_mult=ch_mult, groups=groups)


def builtin_weights_path() -> Path:
    """Where the embedded default weights live inside the installed package."""
    return Path(__file__).resolve().parent.parent / "assets" / "tokenizer_builtin.pt"


def _fsq_random(cfg: TokenizerConfig) -> ConvTokenizer:
    arch = arch_from_config(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(FSQ_INIT_SEED)
        model = CausalVideoAutoencoder(arch)
    levels = "x".join(str(level) for level in arch.fsq_levels)
    ident = f"fsq-init{FSQ_INIT_SEED}-L{levels}-t{arch.temporal_down}s{arch.spatial_down}-c{arch.channels}"
    return ConvTokenizer(model, id=ident)


def load_tokenizer(cfg: TokenizerConfig, device: torch.device | str = "cpu") -> ConvTokenizer:
    """Build the tokenizer named by ``cfg.name`` ("builtin", "fsq" or a local checkpoint path) on ``device``."""
    from arvid_ray.tokenizer.pretrained import load_checkpoint

    if cfg.name == "fsq":
        tok = _fsq_random(cfg)
    elif cfg.name == "builtin":
        path = builtin_weights_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"the embedded tokenizer weights {path} are missing from this install; reinstall arvid-ray, "
                "run experiments/train_embedded_tokenizer.py, or use tokenizer.name=fsq for untrained weights"
            )
        tok = load_checkpoint(path, ident_prefix="builtin")
        _warn_if_differs(cfg, tok.arch)
    else:
        from arvid_ray import storage as st

        # a URI (s3://, gs://) under the storage root: every node downloads it once into its temp dir
        path = Path(st.local_copy(cfg.name)) if st.is_remote(cfg.name) else Path(cfg.name).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"tokenizer.name={cfg.name!r} is neither 'builtin', 'fsq' nor an existing local checkpoint path"
            )
        tok = load_checkpoint(path)
    return tok.to(device)


def tokenizer_vocab_size(cfg: TokenizerConfig) -> int:
    """The vocabulary of the tokenizer ``cfg`` names — the one number training sizes the model's embedding and
    head from and evaluation checks against. ``fsq`` is the product of ``cfg.fsq_levels``; ``builtin`` and a
    checkpoint path say their own (their weights fix it, and ``fsq_levels`` is then ignored), so they are loaded
    once per process on CPU to read it."""
    if cfg.name == "fsq":
        return math.prod(int(level) for level in cfg.fsq_levels)
    return _loaded_vocab_size(cfg.name)


@functools.lru_cache(maxsize=8)
def _loaded_vocab_size(name: str) -> int:
    with torch.random.fork_rng(devices=[]):  # building the tokenizer draws its init: leave the caller's RNG be
        return int(load_tokenizer(TokenizerConfig(name=name)).vocab_size)


def _warn_if_differs(cfg: TokenizerConfig, arch: TokenizerArch) -> None:
    for name in ("temporal_down", "spatial_down"):
        if getattr(cfg, name) != getattr(arch, name):
            log.warning("tokenizer.%s=%s is ignored: the builtin weights use %s", name, getattr(cfg, name),
                        getattr(arch, name))
    if tuple(cfg.fsq_levels) != tuple(arch.fsq_levels):
        log.warning("tokenizer.fsq_levels=%s is ignored: the builtin weights use %s", list(cfg.fsq_levels),
                    list(arch.fsq_levels))
