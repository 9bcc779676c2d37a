"""Autoregressive generation: KV-cache decoding, temperature / top-k / top-p, classifier-free guidance,
and rollouts longer than the training clip (sliding context, or Fewer-Frames block-wise inference).

Design trade-off: rollouts beyond the trained length *re-prefill* a short context with positions that
restart at 0 instead of shifting a cache whose keys carry absolute rotary positions. Re-prefilling costs
one forward over ``context_frames`` frames per new frame (sliding) or per new block (block-wise), but
keeps every position inside the range the model was trained on, for rotary and learned positions alike.
Each method also gets the *content* its positions held in training (``SamplingConfig.for_objective``): a
full/local model always had the clip's first latent frame (encoded alone) at position 0, so its re-prefilled
context keeps frame 0 there, then the most recent frames (``anchor_first_frame``); a Fewer-Frames model
trained on short clips starting anywhere, so its blocks restart at 0 on the previous block unanchored.
CFG runs the conditional and unconditional streams as one batch of 2B through one cache.

Decoding (issue 24) writes into a ``StaticKVCache`` allocated once per ``generate`` call and reused by every
re-prefill, one token step at a time: eager with exactly the filled keys on CPU (measured fastest end to end
there: bench_sampling), one ``torch.compile``d static-shape step replayed from a CUDA graph in bf16 on GPU.
The static step attends to every slot under a mask — up to twice the attention reads of the exact step, the
price of one graph for the whole rollout. Sampling itself (CFG mixing, filters, the RNG) stays eager.

The trained length is what the model was *trained* on, not the grid it was built for: a Fewer-Frames model
is built with the full clip's latent shape but trained on ``fewer_frames.num_frames`` latent frames, so
``trained_length(cfg)`` passes that to ``generate``, which then decodes block-wise from the first block
on, every block conditioned only on the previous one — the paper's Fewer-Frames inference, and where its
error accumulation comes from. No call ever attends to more latent frames than the trained length.
"""

from __future__ import annotations

import torch
from einops import rearrange

from arvid_ray.config import ExperimentConfig, SamplingConfig

__all__ = ["generate", "sample_logits", "guide", "context_schedule", "rollout_context", "trained_length"]


def trained_length(cfg: ExperimentConfig) -> int:
    """Latent frames of the clips the model was trained on (the context no sampling call may exceed)."""
    return cfg.fewer_frames.num_frames if cfg.objective.kind == "fewer_frames" else cfg.latent_frames()


def sample_logits(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """logits [B, V] → token ids [B] (greedy at temperature 0)."""
    if cfg.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / cfg.temperature
    if cfg.top_k > 0 and cfg.top_k < logits.shape[-1]:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs >= cfg.top_p  # mass before this token already reaches p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


def guide(logits: torch.Tensor, batch_size: int, scale: float) -> torch.Tensor:
    """[2B, V] (conditional rows first) → uncond + scale * (cond - uncond); exactly cond at scale 1."""
    cond, uncond = logits[:batch_size], logits[batch_size:]
    return torch.lerp(uncond.float(), cond.float(), scale)


def context_schedule(cfg: SamplingConfig, trained_frames: int) -> tuple[int, int]:
    """(context frames kept, new frames per re-prefill) once a rollout passes the trained length; ``mode`` None
    reads as sliding (``SamplingConfig.for_objective`` resolves it per method)."""
    blockwise = cfg.mode == "blockwise"
    if cfg.context_frames is not None:
        context = cfg.context_frames
    else:
        context = trained_frames // 2 if blockwise else trained_frames - 1
    if not 1 <= context <= trained_frames - 1:
        raise ValueError(f"sampling.context_frames={context} must be in [1, {trained_frames - 1}] (the model "
                         f"was trained on {trained_frames} latent frames and each step adds at least one)")
    if cfg.anchor_first_frame and context < 2:
        raise ValueError(f"sampling.anchor_first_frame keeps latent frame 0 in a context of {context} frame, "
                         "leaving none of the recent ones; use sampling.context_frames >= 2 (a model trained on "
                         ">= 3 latent frames) or anchor_first_frame=false")
    return context, (trained_frames - context if blockwise else 1)


def rollout_context(seq: torch.Tensor, frames: int, context: int, hw: int, anchor: bool) -> torch.Tensor:
    """The context re-prefilled (positions from 0) once a rollout of ``frames`` latent frames (seq [B, n]) is
    past the trained length → [B, context*hw]: the last ``context`` frames, or, anchored, frame 0 and then the
    last ``context - 1`` — so position 0 holds what the model always saw there in training (a full/local model:
    the clip's first latent frame, encoded alone; a Fewer-Frames model: any frame, so it is not anchored)."""
    if anchor:
        return torch.cat([seq[:, :hw], seq[:, (frames - context + 1) * hw:]], dim=1)
    return seq[:, (frames - context) * hw:]


@torch.no_grad()
def generate(model, batch_size: int, num_latent_frames: int, cfg: SamplingConfig, *, labels=None,
             captions=None, prompt_tokens: torch.Tensor | None = None,
             generator: torch.Generator | None = None, trained_frames: int | None = None) -> torch.Tensor:
    """Sample ``num_latent_frames`` latent frames → LongTensor [B, t, h, w] (prompt frames included).

    ``generator`` must live on the model's device. ``trained_frames`` (default: the model's latent grid;
    pass ``trained_length(cfg)``) is the longest context any decoding call sees; beyond it the context
    slides (or goes block-wise; ``cfg.for_objective`` picks the method's protocol and anchor). ``cfg.shuffle_frames`` (the broken control) permutes the result's frames.
    """
    grid, h, w = model.latent_shape
    trained = grid if trained_frames is None else int(trained_frames)
    if not 1 <= trained <= grid:
        raise ValueError(f"trained_frames={trained} must be in [1, {grid}] (the model's latent grid)")
    hw = h * w
    device = model.tok_emb.weight.device
    seq = _prompt(prompt_tokens, batch_size, num_latent_frames, (h, w), device)  # (B, n0)
    if num_latent_frames > trained:
        context, step = context_schedule(cfg, trained)
    was_training = model.training
    model.eval()
    try:
        cond = model.condition(labels, captions, force_drop=False, batch_size=batch_size)
        uncond = None
        if cfg.cfg_scale != 1.0:
            if not hasattr(model.conditioner, "dropout"):
                raise ValueError("sampling.cfg_scale != 1 needs a conditional model (model.conditioning class "
                                 "or text); use cfg_scale=1 for unconditional models")
            uncond = model.condition(labels, captions, force_drop=True, batch_size=batch_size)
        decode = _Decoder(model, cond, uncond, trained * hw, cfg)  # one static cache for every re-prefill
        total = num_latent_frames * hw
        while seq.shape[1] < total:
            have = seq.shape[1]
            if have < trained * hw:  # inside the trained length: the whole sequence is context
                ctx, n_new = seq, min(trained * hw, total) - have
            else:
                ctx = rollout_context(seq, have // hw, context, hw, bool(cfg.anchor_first_frame))
                n_new = min(step * hw, total - have)
            seq = torch.cat([seq, decode(ctx, n_new, generator)], dim=1)
    finally:
        model.train(was_training)
    video = rearrange(seq, "b (t h w) -> b t h w", h=h, w=w)
    if cfg.shuffle_frames:  # the broken control: every video's latent frames in a random order
        order = torch.stack([torch.randperm(num_latent_frames, generator=generator, device=device)
                             for _ in range(batch_size)])  # (B, t)
        video = torch.take_along_dim(video, order[:, :, None, None], dim=1)
    return video


def _decode(model, cond, uncond, prefix, n_new: int, cfg: SamplingConfig, generator) -> torch.Tensor:
    """Decode ``n_new`` tokens after ``[cond ‖ prefix]`` → [B, n_new] (one ``_Decoder`` for one call)."""
    return _Decoder(model, cond, uncond, prefix.shape[1] + n_new, cfg)(prefix, n_new, generator)


class _Decoder:
    """One ``generate`` call's decoding state, built once and reused by every (re-)prefill: a static KV cache
    for the conditional (+ unconditional) rows, the precision and the decode step — eager, compiled
    (``torch.compile``, static shapes) or replayed from a CUDA graph. Sampling (RNG, top-k/p, CFG mixing)
    stays outside the compiled step, so a seeded generator draws exactly the numbers the eager loop draws."""

    def __init__(self, model, cond, uncond, max_video: int, cfg: SamplingConfig):
        self.model, self.cfg, self.batch = model, cfg, cond.shape[0]
        self.guided = uncond is not None
        self.cond = cond if uncond is None else torch.cat([cond, uncond])  # (2B, P, D): conditional rows first
        device = cond.device
        self.dtype = _precision(cfg, device)
        self.static = cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda")
        self.graphed = device.type == "cuda" and cfg.cuda_graphs
        self.slot = torch.zeros(1, dtype=torch.long, device=device)  # the step's cache slot (fixed address)
        self.token = torch.zeros(self.cond.shape[0], dtype=torch.long, device=device)  # graph input
        self._allocate(max_video)

    def _allocate(self, max_video: int) -> None:
        self.cache = self.model.new_cache(self.cond.shape[0], self.cond.shape[1], max_video, self.dtype)
        self.graph = self.logits = None

    def __call__(self, prefix: torch.Tensor, n_new: int, generator) -> torch.Tensor:
        cond_len, m = self.cond.shape[1], prefix.shape[1]
        if cond_len + m + n_new > self.cache.max_len:  # a longer context than the cache was sized for
            self._allocate(m + n_new)
        rows = prefix if not self.guided else torch.cat([prefix, prefix])  # (2B, m) under CFG
        out = torch.empty(self.batch, n_new, dtype=torch.long, device=prefix.device)
        with torch.autocast(prefix.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32,
                            cache_enabled=not self.graphed):  # a captured graph must not hold autocast's cache
            logits = self.model.prefill_into(self.cond, rows, self.cache).float()  # (rows, V)
            for i in range(n_new):
                if self.guided:
                    logits = guide(logits, self.batch, self.cfg.cfg_scale)
                token = sample_logits(logits, self.cfg, generator)  # (B,)
                out[:, i] = token
                if i + 1 < n_new:
                    logits = self._step(token if not self.guided else token.repeat(2), cond_len + m + i)
        return out

    def _step(self, token: torch.Tensor, slot: int) -> torch.Tensor:
        """Feed ``token`` at cache ``slot`` → logits (rows, V) in fp32."""
        self.slot.fill_(slot)  # in place: the compiled step and the graph read this tensor
        if self.graphed:
            if self.graph is None:
                self._capture()
            self.token.copy_(token)
            self.graph.replay()
            return self.logits
        if self.static:
            return _compiled_step()(self.model, token, self.slot, self.cache)
        return self.model.decode_step(token, self.slot, self.cache, keys=slot + 1).float()  # exact keys, no mask

    def _capture(self) -> None:
        """Record one decode step in a CUDA graph (warmed up, and compiled if asked, on a side stream)."""
        step = _compiled_step() if self.static else _static_step
        args = (self.model, self.token, self.slot, self.cache)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # writes to self.slot only: decode steps write a slot before reading it
                step(*args)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = step(*args)


def _static_step(model, token, slot, cache) -> torch.Tensor:
    """The decode step with every shape fixed (all cache slots, masked): compiled / graph-captured as is."""
    return model.decode_step(token, slot, cache).float()


_COMPILED = None


def _compiled_step():
    global _COMPILED
    if _COMPILED is None:  # one compiled function; dynamo keys its cache on the shapes it is called with
        _COMPILED = torch.compile(_static_step, fullgraph=True, dynamic=False)
    return _COMPILED


def _precision(cfg: SamplingConfig, device: torch.device) -> torch.dtype:
    if cfg.precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return torch.bfloat16 if cfg.precision == "bf16" else torch.float32


def _prompt(prompt, batch_size: int, num_frames: int, hw: tuple[int, int], device) -> torch.Tensor:
    if prompt is None:
        return torch.zeros(batch_size, 0, dtype=torch.long, device=device)
    if prompt.dim() != 4 or prompt.shape[0] != batch_size or tuple(prompt.shape[2:]) != hw:
        raise ValueError(f"prompt_tokens must be [B={batch_size}, t, {hw[0]}, {hw[1]}], got {tuple(prompt.shape)}")
    if prompt.shape[1] > num_frames:
        raise ValueError(f"prompt has {prompt.shape[1]} latent frames, more than num_latent_frames={num_frames}")
    return rearrange(prompt.long().to(device), "b t h w -> b (t h w)")
