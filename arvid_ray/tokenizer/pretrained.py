"""Tokenizer checkpoints on local disk: read in the shared format, checked, and built into a tokenizer.

Design trade-off: the format itself (layouts, safe loading, readable errors) lives in
``arvid_ray.tokenizer.checkpoint_format``; this module only picks the backend a checkpoint's header names
(our FSQ autoencoder, or an external VQ codebook via ``arvid_ray.tokenizer.vq``) and gives the tokenizer
its identity (file stem + weights hash) for caches. The format's names stay importable from here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from arvid_ray.tokenizer.autoencoder import CausalVideoAutoencoder
from arvid_ray.tokenizer.checkpoint_format import (
    FORMAT,
    VERSION,
    CheckpointError,
    load_into,
    parse_arch,
    read_checkpoint,
    save_checkpoint,
)
from arvid_ray.tokenizer.codec import ConvTokenizer, state_dict_sha256
from arvid_ray.tokenizer.vq import load_vq_checkpoint

__all__ = ["CheckpointError", "FORMAT", "VERSION", "save_checkpoint", "load_checkpoint", "read_checkpoint",
           "parse_arch", "load_into"]

log = logging.getLogger(__name__)


def load_checkpoint(path: str | Path, ident_prefix: str = "local") -> ConvTokenizer:
    """Load a tokenizer from a local path (layouts in ``checkpoint_format``'s docstring) on CPU."""
    state, header, file = read_checkpoint(path)
    if header.get("quantizer", "fsq") == "vq":
        return load_vq_checkpoint(state, header, file, ident_prefix)
    arch = parse_arch(header.get("arch"), file)
    model = CausalVideoAutoencoder(arch)
    load_into(model, state, file)
    sha = state_dict_sha256(model.state_dict())
    ident = f"{ident_prefix}:{file.stem}-{sha[:12]}"
    log.info("loaded tokenizer %s from %s (vocab %d)", ident, file, model.quantizer.codebook_size)
    return ConvTokenizer(model, id=ident, sha256=sha)
