"""Parallelism applied to the model from outside it, in one place (torchtitan's ``parallelize`` step).

Order, as in torchtitan: activation checkpointing per block → ``compile`` per block → data parallelism
(DDP over a loss module, or FSDP2 ``fully_shard`` per block + root). The model and the objectives know
nothing of any of it.

Design trade-off: the objectives call model methods other than ``forward`` (``condition``, ``prefill``,
``forward_with_cache`` for Local Opt.'s no-grad prefix and window). DDP's reducer only sees gradients
produced through ``DDP.forward``, so DDP wraps a ``LossModule`` whose ``forward(batch)`` runs the whole
objective; FSDP2 instead shards the model itself and registers those methods as forward methods
(``register_fsdp_forward_method``), so sampling and evaluation can call them on a sharded model too.
Compiling the *blocks* (not ``model.forward``) is what reaches every entry point: the prefix, the window
and the full clip all run through the same compiled block, with static shapes — one graph per distinct
(length, cache length) pair, which Local Opt. bounds by its few window starts (the recompile limit is
raised to cover them). Parallelism is applied only when a process group of ≥ 2 ranks exists: a single
worker trains the plain model, exactly as the in-process loop does.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from arvid_ray.config import ExperimentConfig

log = logging.getLogger(__name__)

__all__ = [
    "LossModule",
    "parallelize",
    "grad_sync",
    "is_fsdp",
    "model_state",
    "optimizer_state",
    "load_optimizer_state",
    "compile_shape_budget",
]


class LossModule(nn.Module):
    """``forward(batch) -> objective outputs`` (loss, ce, reco, token counters): the unit DDP wraps.

    ``generator`` draws this rank's CFG dropout; ``window_generator`` the window start, and the trainer
    seeds it identically on every rank before each micro-batch (rank-shared starts: no stragglers).
    """

    def __init__(self, model: nn.Module, objective):
        super().__init__()
        self.model = model
        self.objective = objective
        self.generator: torch.Generator | None = None
        self.window_generator: torch.Generator | None = None

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.objective(self.model, batch, self.generator, window_generator=self.window_generator)


def _distributed_world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def compile_shape_budget(cfg: ExperimentConfig) -> int:
    """Graphs one compiled block may need: per window start a no-grad prefix and a window (each with and
    without grad mode differences), plus the whole clip, the condition prefill, evaluation shapes."""
    from arvid_ray.objectives import window_starts

    o = cfg.objective
    frames = cfg.latent_frames()
    starts = len(window_starts(frames, o.window_frames, o.stride_frames)) if o.kind == "local" else 1
    return 4 * starts + 8


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Wrap each block so its activations are recomputed in backward (RNG preserved: dropout stays exact)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    for i, block in enumerate(model.blocks):
        model.blocks[i] = checkpoint_wrapper(block)  # state_dict keys stay 'blocks.{i}.…' (the wrapper's hooks)


def apply_compile(model: nn.Module, shape_budget: int) -> None:
    """Compile every block in place (FQNs unchanged, so checkpoints stay plain), static shapes."""
    import torch._dynamo.config as dynamo_config

    # blocks share one code object: its graph cache must hold every (length, cache length) pair in use
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, shape_budget)
    for block in model.blocks:
        block.compile(dynamic=False)


def apply_fsdp(model: nn.Module, world_size: int, device: torch.device, param_dtype: torch.dtype | None) -> None:
    """FSDP2: one shard group per block plus the root (embeddings, conditioner, norm, head)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    mesh = init_device_mesh(device.type, (world_size,))
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    last = len(model.blocks) - 1
    for i, block in enumerate(model.blocks):
        # the last block is the first one backward needs: keeping it gathered saves one all-gather
        fully_shard(block, mesh=mesh, mp_policy=mp, reshard_after_forward=i < last)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    # The root (embeddings, conditioner, final norm, head) runs more than once with grad per micro-batch:
    # "+ first frame" runs frame 0, then the window on a cache holding frame 0's condition K/V. Both calls'
    # logits get their gradient at once (one loss), so both pre-backward unshards fire first; the window's
    # post-backward (on its grad-carrying cache input) would then reshard the root before frame 0's head
    # backward reads it. The root therefore stays gathered through backward — each of its post-backward
    # hooks still reduce-scatters the gradient accumulated so far, into the sharded gradient — and
    # ``grad_sync`` reshards it once the micro-batch's backward is done. The cost is keeping the root
    # gathered for the backward, which FSDP2 already does through the forward (it never reshards the root
    # after forward).
    model.set_reshard_after_backward(False, recurse=False)
    # blocks return their K/V and the conditioner an indexed embedding (views); nothing modifies them in
    # place, which is the case FSDP2 warns about on every call
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    for name in ("condition", "prefill", "forward_with_cache"):  # entry points besides forward
        register_fsdp_forward_method(model, name)


def parallelize(loss: LossModule, cfg: ExperimentConfig, device: torch.device | str) -> nn.Module:
    """The module the training step calls: ``loss`` itself, DDP(loss), or ``loss`` over an FSDP model."""
    device = torch.device(device)
    model = loss.model
    if cfg.train.activation_checkpointing:
        apply_activation_checkpointing(model)
    if cfg.train.compile:
        apply_compile(model, compile_shape_budget(cfg))
    world = _distributed_world()
    if world < 2:
        return loss
    if cfg.train.parallelism == "fsdp":
        bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and device.type == "cuda")
        apply_fsdp(model, world, device, torch.bfloat16 if bf16 else None)
        return loss
    from torch.nn.parallel import DistributedDataParallel as DDP

    # buffers (rotary tables) are deterministic: no broadcast before every forward. forward_sync_buffers
    # replaced broadcast_buffers (deprecated) in the torch this project pins (pyproject: torch>=2.13,<2.14;
    # tests/unit/test_parallel.py checks the pin and the keyword); an older torch would reject it at this line
    return DDP(loss, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False)


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _fsdp_roots(module: nn.Module) -> Iterator[Any]:
    from torch.distributed.fsdp import FSDPModule

    return (m for m in module.modules() if isinstance(m, FSDPModule))


@contextlib.contextmanager
def grad_sync(module: nn.Module, enabled: bool):
    """Reduce gradients across ranks only when ``enabled`` (gradient accumulation: the last micro-batch)."""
    if hasattr(module, "no_sync"):  # DDP
        with contextlib.nullcontext() if enabled else module.no_sync():
            yield
        return
    root = next(_fsdp_roots(module), None)
    if root is None:
        yield
        return
    root.set_requires_gradient_sync(enabled)  # FSDP2's no_sync: recurses into every block
    try:
        yield
    finally:
        root.reshard()  # kept gathered through backward (apply_fsdp says why); the optimizer steps the shards


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict on CPU, plain FQNs. Under FSDP a collective: every rank calls it and
    rank 0 gets the tensors (the others an empty dict)."""
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Optimizer state keyed by parameter name (not by position), full tensors on CPU: loads into any
    world size and either parallelism. A collective under FSDP (rank 0 gets it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True,
                                                                               cpu_offload=True))


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a state from ``optimizer_state`` (name-keyed; sharded here under FSDP) or an older
    position-keyed ``optimizer.state_dict()``."""
    keys = list(state.get("state", {}))
    if keys and not isinstance(keys[0], str):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
