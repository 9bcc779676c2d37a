"""Training checkpoints: save and load model, optimizer, scheduler, step, data position, RNG and config.

Layout of one checkpoint directory (``step_{step:07d}/``)::

    model.pt          full model state_dict, plain parameter names (gathered from FSDP shards by rank 0);
                      loads into a plain model of any world size for evaluation or resuming
    train_state.pt    optimizer state (keyed by parameter name, full tensors), scheduler, step, data
                      position, the cost meter's run totals
    rng_rank{r}.pt    torch / numpy / python RNG state, the CFG generator and the data position of rank r
    config.yaml       the resolved ExperimentConfig that produced it
    ema.pt            with train.ema_decay > 0: the averaged weights ({"weights": state_dict, "n_averaged"}),
                      what validation and evaluation score

Design trade-off: every file holds only tensors and plain containers so that loading uses
``torch.load(weights_only=True)`` — a checkpoint from an untrusted place can never execute code, at the
price of converting numpy's RNG state to tensors by hand. Each rank writes only its own RNG file, so the
directory works both standalone and as a Ray Train checkpoint (Ray merges the files every rank reports).
"""

from __future__ import annotations

import logging
import pickle
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arvid_ray.config import ConfigError, ExperimentConfig, load_config
from arvid_ray.tokenizer.checkpoint_format import CheckpointError

log = logging.getLogger(__name__)

__all__ = [
    "CheckpointError",
    "TrainState",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_name",
    "latest_checkpoint",
    "check_compatible",
    "capture_rng",
    "restore_rng",
    "SHAPE_FIELDS",
]

# Fields that change parameter shapes or token meaning: a checkpoint from a config differing in any
# of these cannot be resumed.
SHAPE_FIELDS = (
    "model.preset",
    "model.n_layers",
    "model.d_model",
    "model.n_heads",
    "model.positions",
    "model.conditioning",
    "model.num_classes",
    "model.text_encoder",
    "model.text_tokens",
    "tokenizer.fsq_levels",
    "tokenizer.temporal_down",
    "tokenizer.spatial_down",
    "data.num_frames",
    "data.resolution",
    "objective.kind",
)


WAY_OUT = ("move that step_* directory aside to resume from the previous checkpoint, or start afresh with "
           "train.run_name=<new name>")


def _refusal(message: str) -> CheckpointError:
    """A training checkpoint is missing, unsafe or incompatible: the message says which and how to fix it,
    ``WAY_OUT`` what to do about the checkpoint. ``CheckpointError`` is the tokenizer format's class (one
    class for every checkpoint refusal)."""
    return CheckpointError(message, way_out=WAY_OUT)


@dataclass
class TrainState:
    """What a resumed run needs besides the model weights."""

    step: int = 0
    data_position: int = 0
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None
    cost: dict[str, float] | None = None
    data: dict[str, int] | None = None
    """This rank's data position {"epoch", "offset"} (batches into that epoch), else rank 0's; None in
    checkpoints older than it (then only ``data_position``, micro-batches consumed, is known)."""
    config: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    ema: dict[str, Any] | None = None
    """{"weights": state_dict, "n_averaged": int} of the weight average (train.ema_decay), None without."""


def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}"


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a checkpoint directory named by :func:`checkpoint_name` (local path or URI), else None."""
    match = re.fullmatch(r"step_(\d{7})", Path(str(path).rstrip("/")).name)
    return int(match.group(1)) if match else None


def latest_checkpoint(root: str | Path) -> Path | None:
    """The ``step_*`` directory with the highest step under ``root`` (None if there is none)."""
    root = Path(root)
    if not root.is_dir():
        return None
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and checkpoint_step(p) is not None and (p / "model.pt").exists()
    ]
    return max(found, key=checkpoint_step, default=None)


# ---------------------------------------------------------------------------------------- RNG
def capture_rng(generator: torch.Generator | None = None) -> dict[str, Any]:
    """RNG states as tensors and plain values (safe for weights_only loading)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": _plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        # one state per GPU visible when saved; restore those this process can see (a resume with fewer
        # visible GPUs — another node, a narrower CUDA_VISIBLE_DEVICES — would otherwise raise on the first
        # missing ordinal; set_rng_state_all assumes the same device set)
        for index, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------- save
def save_checkpoint(
    directory: str | Path,
    cfg: ExperimentConfig,
    *,
    step: int,
    data_position: int,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    rank: int = 0,
    generator: torch.Generator | None = None,
    model_state: dict[str, torch.Tensor] | None = None,
    optimizer_state: dict[str, Any] | None = None,
    cost: dict[str, float] | None = None,
    data: dict[str, int] | None = None,
    ema: dict[str, Any] | None = None,
) -> Path:
    """Write this rank's share of a checkpoint into ``directory`` (created).

    Rank 0 writes model (``model_state``, e.g. gathered from FSDP shards, else ``model.state_dict()``),
    optimizer (``optimizer_state`` else ``optimizer.state_dict()``), scheduler, step, data position, cost
    totals, config and the weight average ``ema`` ({"weights", "n_averaged"}) when given; every rank writes
    its RNG and data position.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        if model_state is None:
            if model is None:
                raise ValueError("save_checkpoint on rank 0 needs the model or its state")
            inner = getattr(model, "module", model)  # DDP wrapper
            model_state = getattr(inner, "_orig_mod", inner).state_dict()  # torch.compile wrapper
        torch.save(model_state, directory / "model.pt")
        if optimizer_state is None and optimizer is not None:
            optimizer_state = optimizer.state_dict()
        torch.save(
            {
                "step": int(step),
                "data_position": int(data_position),
                "data": dict(data) if data else None,
                "cost": dict(cost) if cost else None,
                "optimizer": optimizer_state,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
            },
            directory / "train_state.pt",
        )
        if ema is not None:
            torch.save({"weights": ema["weights"], "n_averaged": int(ema["n_averaged"])}, directory / "ema.pt")
        (directory / "config.yaml").write_text(cfg.to_yaml())
    torch.save({**capture_rng(generator), "data": dict(data) if data else None}, directory / f"rng_rank{rank}.pt")
    return directory


# ---------------------------------------------------------------------------------------- load
def _safe_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refusal(
            f"refusing to load checkpoint file {path}: it contains objects other than tensors and plain "
            f"containers (loading it could execute code). Re-save it from arvid-ray, or inspect it if you "
            f"trust its origin. Details: {str(exc).splitlines()[0]}"
        ) from exc
    except (RuntimeError, EOFError) as exc:
        raise _refusal(f"checkpoint file {path} is corrupt or truncated: {exc}") from exc


def check_compatible(saved: ExperimentConfig, current: ExperimentConfig, where: str = "checkpoint") -> None:
    """Raise CheckpointError naming the first field in SHAPE_FIELDS that differs."""
    a, b = saved.to_flat(), current.to_flat()
    for name in SHAPE_FIELDS:
        if a.get(name) != b.get(name):
            raise _refusal(
                f"{where} is incompatible with the current config: field '{name}' is {a.get(name)!r} in the "
                f"checkpoint but {b.get(name)!r} now; set {name}={a.get(name)!r} or start a new run"
            )


def load_checkpoint(
    directory: str | Path,
    cfg: ExperimentConfig | None = None,
    *,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    rank: int = 0,
    generator: torch.Generator | None = None,
    restore_rng_state: bool = True,
) -> TrainState:
    """Load a checkpoint (never executing code) into the given objects; return the TrainState.

    With ``cfg``, a checkpoint whose config differs in a shape field is refused first. ``model`` is a
    plain (not yet sharded) model; a trainer that shards after loading passes ``optimizer=None`` and loads
    ``TrainState.optimizer`` into the sharded optimizer (``parallel.load_optimizer_state``).
    """
    directory = Path(directory)
    if not (directory / "model.pt").exists():
        raise _refusal(
            f"{directory} is not an arvid-ray checkpoint (no model.pt); pass a step_* directory"
        )
    try:
        saved_cfg = load_config(directory / "config.yaml")
    except ConfigError as exc:
        raise _refusal(f"checkpoint {directory} has an unreadable config.yaml: {exc}") from exc
    if cfg is not None:
        check_compatible(saved_cfg, cfg, where=f"checkpoint {directory}")
    weights = _safe_load(directory / "model.pt")
    meta = _safe_load(directory / "train_state.pt")
    inner = getattr(model, "module", model)  # DDP wrapper
    inner = getattr(inner, "_orig_mod", inner)  # torch.compile wrapper
    if inner is not None:
        inner.load_state_dict(weights)
    if optimizer is not None and meta.get("optimizer") is not None:
        from arvid_ray.train.parallel import load_optimizer_state

        load_optimizer_state(inner, optimizer, meta["optimizer"])
    if scheduler is not None and meta.get("scheduler") is not None:
        scheduler.load_state_dict(meta["scheduler"])
    rng_path = directory / f"rng_rank{rank}.pt"
    rng = _safe_load(rng_path) if rng_path.exists() else None
    if rng is None:
        log.warning(
            "checkpoint %s has no RNG state for rank %d; RNG continues from the rank seed", directory, rank
        )
    elif restore_rng_state:
        restore_rng(rng, generator)
    ema = _safe_load(directory / "ema.pt") if (directory / "ema.pt").exists() else None
    log.info("loaded checkpoint %s (step %d)", directory, meta["step"])
    return TrainState(
        step=int(meta["step"]),
        data_position=int(meta["data_position"]),
        optimizer=meta.get("optimizer"),
        scheduler=meta.get("scheduler"),
        rng=rng,
        cost=meta.get("cost"),
        data=(rng or {}).get("data") or meta.get("data"),
        config=saved_cfg.to_dict(),
        path=directory,
        ema=ema,
    )
