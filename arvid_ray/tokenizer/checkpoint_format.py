"""The tokenizer checkpoint format: written and read in one place, shared by every backend.

Design trade-off: a checkpoint is read only with ``torch.load(weights_only=True)`` (never pickled code),
so every file must be plain containers of tensors, strings and numbers. Architecture hyper-parameters
travel with the weights (inside the file or in a JSON beside it) so a checkpoint is self-describing;
each failure (unreadable file, wrong layout, missing or extra keys, shape mismatch) is caught here and
re-raised as ``CheckpointError`` naming the file and what is wrong, never as a deep torch traceback.
The backends (``pretrained`` for FSQ, ``vq`` for external codebooks) build their networks and call the
readers below; this module imports neither of them.

Accepted layouts for a path ``P``:

1. **arvid-ray format** (what ``save_checkpoint`` / ``arvid-ray train-tokenizer`` write): ``P`` is a
   ``.pt`` file holding ``{"format": "arvid-ray-tokenizer", "version": 1, "arch": {TokenizerArch
   fields}, "state_dict": {...}, "meta": {...}}``.
2. **bare state dict + JSON**: ``P`` is a ``.pt``/``.pth``/``.bin`` file holding only a state dict
   (optionally wrapped as ``{"state_dict": ...}`` / ``{"model": ...}``) and ``P`` with suffix
   ``.json`` holds ``{"arch": {...}}`` (an external VQ layout may add ``"quantizer": "vq"``; see
   ``arvid_ray.tokenizer.vq``).
3. **a directory** holding ``tokenizer.pt`` (+ ``tokenizer.json``), read as 1 or 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from arvid_ray.tokenizer.autoencoder import CausalVideoAutoencoder, TokenizerArch

__all__ = ["CheckpointError", "FORMAT", "VERSION", "save_checkpoint", "read_checkpoint", "parse_arch", "load_into"]

FORMAT = "arvid-ray-tokenizer"
VERSION = 1


class CheckpointError(ValueError, RuntimeError):
    """A checkpoint cannot be used — tokenizer weights read here, or a training checkpoint
    (``arvid_ray.train.checkpoint``, which raises this same class): missing, unsafe or incompatible. The
    message names the file and the problem; ``way_out`` (may be empty) is what an entry point prints after
    it. The one class for both, so one ``except CheckpointError`` (the CLI, the sweep start-up) refuses
    either in one line; a ValueError and a RuntimeError, as the two classes it replaces were."""

    def __init__(self, message: str = "", way_out: str = ""):
        super().__init__(message)
        self.way_out = way_out

    def __reduce__(self):  # keeps ``way_out`` through pickling (a Ray task or actor raising it)
        return type(self), (str(self), self.way_out)


def save_checkpoint(model: CausalVideoAutoencoder, path: str | Path, meta: dict[str, Any] | None = None,
                    half: bool = False) -> Path:
    """Write ``model`` in the arvid-ray format; ``half`` stores float tensors as float16 (half the bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "arch": model.arch.to_dict(), "state_dict": state,
               "meta": dict(meta or {})}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """Resolve ``path`` and return (state dict, header with 'arch'/'meta'/'quantizer', weights file)."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "tokenizer.pt"
    if not path.is_file():
        raise CheckpointError(f"tokenizer checkpoint '{path}' does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/garbage/pickled-code files
        raise CheckpointError(
            f"tokenizer checkpoint '{path}' cannot be read safely (torch.load weights_only=True): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} — is the file complete, "
            "and does it hold only tensors and plain containers?"
        ) from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"tokenizer checkpoint '{path}' holds a {type(payload).__name__}, expected a dict")
    if payload.get("format") == FORMAT:
        if payload.get("version") != VERSION:
            raise CheckpointError(f"tokenizer checkpoint '{path}' has format version {payload.get('version')}, "
                                  f"this arvid-ray reads version {VERSION}")
        header = {"arch": payload.get("arch"), "meta": payload.get("meta") or {}, "quantizer": "fsq"}
        state = payload.get("state_dict")
    else:
        state = payload.get("state_dict", payload.get("model", payload))
        header = _sidecar(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"tokenizer checkpoint '{path}' has no state dict of tensors (keys: "
                              f"{sorted(payload)[:8]})")
    return state, header, path


def _sidecar(path: Path) -> dict[str, Any]:
    side = path.with_suffix(".json")
    if not side.is_file():
        raise CheckpointError(
            f"tokenizer checkpoint '{path}' is a bare state dict; its architecture must be given in '{side}' "
            "as {\"arch\": {...TokenizerArch fields...}} (or save it with arvid_ray.tokenizer.pretrained."
            "save_checkpoint)"
        )
    try:
        header = json.loads(side.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"tokenizer sidecar '{side}' is not valid JSON: {exc}") from exc
    if not isinstance(header, dict) or "arch" not in header:
        raise CheckpointError(f"tokenizer sidecar '{side}' must be a JSON object with an 'arch' entry")
    header.setdefault("meta", {})
    header.setdefault("quantizer", "fsq")
    return header


def parse_arch(arch: Any, path: Path) -> TokenizerArch:
    if not isinstance(arch, dict):
        raise CheckpointError(f"tokenizer checkpoint '{path}' has no architecture dict ('arch'), got {arch!r}")
    try:
        return TokenizerArch.from_dict(arch)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"tokenizer checkpoint '{path}' has an invalid architecture: {exc}") from exc


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Strict load with a readable diff of missing / unexpected / mis-shaped keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s), e.g. {missing[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es), e.g. {shapes[:2]}")
    if problems:
        raise CheckpointError(f"tokenizer checkpoint '{path}' does not match its architecture: "
                              + "; ".join(problems))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"tokenizer checkpoint '{path}' has non-finite values in {bad[:3]}")
