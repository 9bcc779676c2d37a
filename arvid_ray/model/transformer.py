"""Llama-style causal transformer over a video token grid, with an explicit prefix KV cache.

Sequence layout: ``[cond_0 .. cond_{P-1}, v_0 .. v_{N-1}]`` where the P conditioning tokens come from
the conditioner and ``v`` are the video tokens of a ``[t, h, w]`` grid in raster order. The output at
the position *before* video token ``i`` predicts it, so every method returns logits and hidden states
aligned with the tokens they predict (``logits[:, i]`` predicts the i-th predicted token).

Design trade-off: instead of one ``forward`` whose behaviour depends on which arguments are ``None``,
there are three explicit entry points — ``forward`` (whole clip, training/eval), ``prefill`` (build a
cache for a prefix; run it under ``no_grad`` for Local Opt.'s free prefix), and ``forward_with_cache``
(continue from a cache: the Local Opt. window or one decoding step). The price is that the objective
and the sampler must do the index bookkeeping themselves; the gain is that the no-grad prefix computes
no logits and keeps no activations, which is where Local Opt.'s speed and memory win comes from.
Sampling has its own pair, ``prefill_into`` and ``decode_step``, over a ``StaticKVCache`` allocated once and
written in place: the extending cache above re-concatenates every layer's keys per token (O(L) copies), fine
for one window but quadratic over a decoded clip, and its growing shapes cannot be compiled or graph-captured.
Positions are rotary over (latent frame, row, column) — or learned per axis — with conditioning tokens
at frame 0 and video frame ``f`` at frame ``f + 1``; positions always count from the start of the
tokens passed in, so a sampler can restart them when it slides its context.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from arvid_ray.model.conditioning import Conditioner
from arvid_ray.model.presets import ModelDims

__all__ = ["KVCache", "ModelOutput", "StaticKVCache", "VideoTransformer"]

KVCache = list[tuple[torch.Tensor, torch.Tensor]]
"""Per layer (k, v), each ``[B, n_heads, L, head_dim]`` with rotary positions already applied."""


class StaticKVCache:
    """A decoding cache allocated once and written in place: per layer k and v ``[B, n_heads, max_len,
    head_dim]``. Cache slot ``i`` holds conditioning token ``i`` for ``i < cond_len`` and video token
    ``i - cond_len`` after it. Because its tensors never move or change shape, one decode step can be
    compiled with static shapes or captured in a CUDA graph; the extending ``KVCache`` above re-concatenates
    every layer's keys per token instead (O(L) copies per step). Built by ``VideoTransformer.new_cache``."""

    def __init__(self, model: VideoTransformer, batch: int, cond_len: int, max_len: int, dtype: torch.dtype):
        d, device = model.dims, model.tok_emb.weight.device
        shape = (batch, d.n_heads, max_len, d.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(d.n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(d.n_layers)]
        self.batch, self.cond_len, self.max_len, self.dtype = batch, cond_len, max_len, dtype
        self.slots = torch.arange(max_len, device=device)  # (max_len,): the decode step's causal mask
        rope = model._rope(cond_len, 0, max_len - cond_len)  # slot i's angles, once instead of once per step
        self.rope = None if rope is None else tuple(t.to(dtype) for t in rope)  # each (max_len, Dh)


@dataclass
class ModelOutput:
    logits: torch.Tensor
    """[B, n, vocab]: logits[:, i] predicts the i-th target token of this call."""
    hidden: torch.Tensor | None
    """[B, n, D]: hidden states at the same positions (layer chosen by ``hidden_layer``)."""
    cache: KVCache | None
    """The cache extended by this call's keys/values (None where not produced)."""


class RotaryEmbedding3D(nn.Module):
    """Rotary angles for (frame, row, column): the head dim is split into three even slices."""

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        side = 2 * (head_dim // 6)
        self.split = (head_dim - 2 * side, side, side)
        for name, dim in zip(("inv_t", "inv_h", "inv_w"), self.split):
            inv = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
            self.register_buffer(name, inv.float(), persistent=False)

    def forward(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pos [n, 3] (frame, row, col) → cos, sin each [n, head_dim]."""
        pos = pos.to(self.inv_t.device, torch.float32)
        angles = torch.cat([pos[:, 0:1] * self.inv_t, pos[:, 1:2] * self.inv_h, pos[:, 2:3] * self.inv_w], -1)
        angles = torch.cat([angles, angles], dim=-1)  # (n, head_dim): half-split rotation
        return angles.cos(), angles.sin()


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, n, Dh]; cos/sin [n, Dh] in x's dtype (no fp32 round trip of bf16 activations)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, dims: ModelDims):
        super().__init__()
        self.n_heads = dims.n_heads
        self.qkv = nn.Linear(dims.d_model, 3 * dims.d_model, bias=False)
        self.out = nn.Linear(dims.d_model, dims.d_model, bias=False)

    def forward(self, x, rope, past, mask=None):
        """``mask``: the lower-right causal bias of a multi-token continuation (built once per model call,
        outside the block: constructing it inside a compiled block would break the graph)."""
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.n_heads)
        if rope is not None:
            # angles are computed in fp32 once per call; the tables (n x Dh) are cast, not the activations
            cos, sin = (t.to(q.dtype) for t in rope)
            q, k = _apply_rotary(q, cos, sin), _apply_rotary(k, cos, sin)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (B, H, L + n, Dh)
        n, total = q.shape[2], k.shape[2]
        if mask is not None:  # a CausalBias: flash attention with a bottom-right-aligned causal mask on GPU
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        elif n == total:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v)  # one new query sees every cached key
        return self.out(rearrange(y, "b h n d -> b n (h d)")), (k, v)

    def decode(self, x, rope, k_cache, v_cache, slot, keys, mask):
        """One new token x [B, 1, D] at cache ``slot`` (LongTensor [1]): writes its k/v in place, attends to
        the first ``keys`` slots (exactly the filled ones, no mask) or, with ``keys=None``, to every slot
        under ``mask`` (static shapes for a compiled step)."""
        b = x.shape[0]
        qkv = self.qkv(x).view(b, 1, 3, self.n_heads, -1)  # (B, 1, 3, H, Dh)
        qk = qkv[:, :, :2] if rope is None else _apply_rotary(qkv[:, :, :2], *rope)  # q and k in one pass
        q, k = qk.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, 1, Dh)
        k_cache.index_copy_(2, slot, k.to(k_cache.dtype))
        v_cache.index_copy_(2, slot, qkv[:, :, 2].transpose(1, 2).to(v_cache.dtype))
        if keys is None:
            y = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask)
        else:
            y = F.scaled_dot_product_attention(q, k_cache[:, :, :keys], v_cache[:, :, :keys])
        return self.out(y.transpose(1, 2).reshape(b, 1, -1))  # (B, H, 1, Dh) -> (B, 1, D)


class SwiGLU(nn.Module):
    def __init__(self, dims: ModelDims):
        super().__init__()
        self.gate_up = nn.Linear(dims.d_model, 2 * dims.mlp_hidden, bias=False)
        self.down = nn.Linear(dims.mlp_hidden, dims.d_model, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, dims: ModelDims, dropout: float):
        super().__init__()
        self.attn_norm = nn.RMSNorm(dims.d_model, eps=1e-6)
        self.attn = Attention(dims)
        self.mlp_norm = nn.RMSNorm(dims.d_model, eps=1e-6)
        self.mlp = SwiGLU(dims)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, rope, past, mask=None):
        a, kv = self.attn(self.attn_norm(x), rope, past, mask)
        x = x + self.drop(a)
        return x + self.drop(self.mlp(self.mlp_norm(x))), kv

    def decode(self, x, rope, k_cache, v_cache, slot, keys, mask):
        x = x + self.attn.decode(self.attn_norm(x), rope, k_cache, v_cache, slot, keys, mask)
        return x + self.mlp(self.mlp_norm(x))  # decoding runs in eval mode: no dropout


class VideoTransformer(nn.Module):
    """Causal decoder over ``[cond prefix ‖ video tokens]``; see the module docstring for the layout."""

    def __init__(self, dims: ModelDims, vocab_size: int, latent_shape: tuple[int, int, int],
                 conditioner: Conditioner, positions: str = "rope3d", dropout: float = 0.0):
        super().__init__()
        self.dims, self.vocab_size = dims, vocab_size
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.conditioner = conditioner
        self.positions = positions
        _, h, w = self.latent_shape
        self.tok_emb = nn.Embedding(vocab_size, dims.d_model)
        if positions == "rope3d":
            self.rope = RotaryEmbedding3D(dims.head_dim)
        else:
            self.pos_t = nn.Embedding(self.latent_shape[0], dims.d_model)
            self.pos_h, self.pos_w = nn.Embedding(h, dims.d_model), nn.Embedding(w, dims.d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dims, dropout) for _ in range(dims.n_layers))
        self.norm = nn.RMSNorm(dims.d_model, eps=1e-6)
        self.head = nn.Linear(dims.d_model, vocab_size, bias=False)
        self._init_weights()
        self.num_params = sum(p.numel() for p in self.parameters())

    def _init_weights(self) -> None:
        for name, p in self.named_parameters():
            if name.startswith("conditioner.") or p.dim() < 2:
                continue
            std = 0.02 / (2 * self.dims.n_layers) ** 0.5 if name.endswith(("attn.out.weight", "down.weight")) else 0.02
            nn.init.normal_(p, std=std)

    # ------------------------------------------------------------------ public API
    @property
    def tokens_per_frame(self) -> int:
        return self.latent_shape[1] * self.latent_shape[2]

    def condition(self, labels=None, captions=None, *, generator=None, force_drop=None, batch_size: int = 1):
        """Conditioning prefix [B, P, D] (CFG dropout when training; ``force_drop`` True = null condition)."""
        return self.conditioner(labels, captions, generator=generator, force_drop=force_drop, batch_size=batch_size)

    def forward(self, tokens: torch.Tensor, cond: torch.Tensor, *, hidden_layer: int = -1,
                hidden_before_norm: bool = False) -> ModelOutput:
        """Whole clip: tokens [B, t, h, w] → logits/hidden [B, t*h*w, ·] predicting every video token."""
        video = self._flatten(tokens)  # (B, N)
        x = torch.cat([cond, self._embed(video[:, :-1], 0)], dim=1)  # (B, P + N - 1, D)
        rope = self._rope(cond.shape[1], 0, video.shape[1] - 1)
        return self._run(x, rope, None, hidden_layer, keep_last=video.shape[1], before_norm=hidden_before_norm)

    def prefill(self, cond: torch.Tensor, video: torch.Tensor) -> ModelOutput:
        """Run ``[cond ‖ video]`` (video [B, m] flat, m >= 0) and return the cache plus the logits
        [B, 1, V] of the last position (which predicts video token m). Wrap in ``torch.no_grad()`` for a
        detached prefix; no per-position logits or hidden states are produced."""
        x = torch.cat([cond, self._embed(video, 0)], dim=1)  # (B, P + m, D)
        out = self._run(x, self._rope(cond.shape[1], 0, video.shape[1]), None, None, keep_last=1)
        return out

    def forward_with_cache(self, video: torch.Tensor, start: int, cache: KVCache, *,
                           hidden_layer: int | None = -1, hidden_before_norm: bool = False,
                           _logits: bool = True) -> ModelOutput:
        """Continue after ``cache``: video [B, n] are tokens ``start .. start+n-1`` (flat indices); the
        outputs predict tokens ``start+1 .. start+n``. Returns the extended cache."""
        cond_len = cache[0][0].shape[2] - start
        if cond_len < 1:
            raise ValueError(f"cache holds {cache[0][0].shape[2]} positions, too few for video index {start}")
        x = self._embed(video, start)
        return self._run(x, self._rope(cond_len, start, video.shape[1], include_cond=False), cache,
                         hidden_layer, keep_last=video.shape[1] if _logits else 1, before_norm=hidden_before_norm)

    def extend_cache(self, video: torch.Tensor, start: int, cache: KVCache) -> KVCache:
        """Append video tokens ``start .. start+n-1`` (flat indices) to ``cache`` without computing logits;
        run under ``torch.no_grad()`` for Local Opt.'s free prefix."""
        if video.shape[1] == 0:
            return cache
        return self.forward_with_cache(video, start, cache, hidden_layer=None, _logits=False).cache

    def new_cache(self, batch: int, cond_len: int, max_video: int, dtype: torch.dtype | None = None) -> StaticKVCache:
        """A ``StaticKVCache`` for ``batch`` rows of ``cond_len`` conditioning plus up to ``max_video`` video
        tokens (dtype: the weights' unless given, e.g. bf16 for an autocast decode)."""
        return StaticKVCache(self, batch, cond_len, cond_len + max_video, dtype or self.tok_emb.weight.dtype)

    def prefill_into(self, cond: torch.Tensor, video: torch.Tensor, cache: StaticKVCache) -> torch.Tensor:
        """``prefill`` that writes ``[cond ‖ video]``'s keys/values into slots ``[0, P + m)`` of ``cache``
        (whatever the slots after held is dead: decode steps write a slot before any query reads it) →
        logits [B, V] predicting video token m."""
        if cond.shape[1] != cache.cond_len or cond.shape[1] + video.shape[1] >= cache.max_len:
            raise ValueError(f"prefill of {cond.shape[1]} + {video.shape[1]} tokens does not leave a free slot in a "
                             f"cache of {cache.max_len} (cond_len {cache.cond_len})")
        x = torch.cat([cond, self._embed(video, 0)], dim=1)  # (B, P + m, D)
        rope = self._rope(cond.shape[1], 0, video.shape[1])
        for block, k_cache, v_cache in zip(self.blocks, cache.k, cache.v):  # one layer's K/V alive at a time
            x, (k, v) = block(x, rope, None)
            k_cache[:, :, :k.shape[2]].copy_(k)
            v_cache[:, :, :v.shape[2]].copy_(v)
        return self.head(self.norm(x[:, -1]))  # (B, V)

    def decode_step(self, token: torch.Tensor, slot: torch.Tensor, cache: StaticKVCache,
                    keys: int | None = None) -> torch.Tensor:
        """Feed token [B] at cache ``slot`` (LongTensor [1]: video index ``slot - cond_len``), write its
        keys/values there in place → logits [B, V] predicting the next token. ``keys``: attend to exactly the
        first ``keys`` slots (eager; must be ``slot + 1``); None: to all ``max_len`` slots masked to
        ``<= slot`` — every shape and address fixed, so the step compiles once and can be graph-captured.
        Learned positions are not range-checked here (a device sync); the caller keeps the slot in range."""
        x = self.tok_emb(token[:, None])  # (B, 1, D)
        if self.positions == "learned":
            j = slot - cache.cond_len  # (1,) video index
            hw, w = self.tokens_per_frame, self.latent_shape[2]
            x = x + self.pos_t(j // hw) + self.pos_h((j % hw) // w) + self.pos_w(j % w)
        rope = None if cache.rope is None else tuple(t.index_select(0, slot) for t in cache.rope)  # (1, Dh)
        mask = None if keys is not None else (cache.slots <= slot).view(1, 1, 1, -1)  # (1, 1, 1, max_len)
        for block, k_cache, v_cache in zip(self.blocks, cache.k, cache.v):
            x = block.decode(x, rope, k_cache, v_cache, slot, keys, mask)
        return self.head(self.norm(x[:, 0]))  # (B, V)

    def check_tokens(self, tokens: torch.Tensor) -> None:
        """Refuse token ids outside [0, vocab_size). Call it on the host before the batch moves to the
        device (the training loop does): inside the model the check would read the device every call."""
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}) (the tokenizer's vocab_size); got "
                             f"[{int(tokens.min())}, {int(tokens.max())}]")

    def forward_flops(self, n_query: int, n_context: int) -> float:
        """FLOPs of one forward per sample: n_query tokens through every matmul (incl. the head) plus dense
        attention scores and weighted sum against n_context keys (2 FLOPs per multiply-add)."""
        d = self.dims
        matmul_params = d.n_layers * (4 * d.d_model**2 + 3 * d.d_model * d.mlp_hidden)
        attention = d.n_layers * 2 * 2 * n_query * n_context * d.d_model
        return float(2 * matmul_params * n_query + attention) + self.head_flops(n_query)

    def head_flops(self, n_query: int) -> float:
        """FLOPs of the output head on n_query positions per sample (what a no-grad prefix never runs)."""
        return float(2 * self.dims.d_model * self.vocab_size * n_query)

    # ------------------------------------------------------------------ internals
    def _flatten(self, tokens: torch.Tensor) -> torch.Tensor:
        t_max, h, w = self.latent_shape
        if tokens.dim() != 4 or tuple(tokens.shape[2:]) != (h, w):
            raise ValueError(f"tokens must be [B, t, {h}, {w}] for this model's latent grid, got {tuple(tokens.shape)}")
        return rearrange(tokens, "b t h w -> b (t h w)")

    def _embed(self, video: torch.Tensor, start: int) -> torch.Tensor:
        # no token-range check here (it would sync the device every call): see check_tokens
        x = self.tok_emb(video)  # (B, n, D)
        if self.positions == "learned" and video.shape[1]:
            last_frame = (start + video.shape[1] - 1) // self.tokens_per_frame  # from Python ints: no sync
            if last_frame >= self.latent_shape[0]:
                raise ValueError(f"learned positions cover {self.latent_shape[0]} latent frames; got frame "
                                 f"{last_frame} (slide the context or use model.positions=rope3d)")
            f, r, c = self._grid(start, video.shape[1])
            x = x + self.pos_t(f) + self.pos_h(r) + self.pos_w(c)
        return self.drop(x)

    def _grid(self, start: int, n: int):
        idx = torch.arange(start, start + n, device=self.tok_emb.weight.device)
        hw, w = self.tokens_per_frame, self.latent_shape[2]
        return idx // hw, (idx % hw) // w, idx % w

    def _rope(self, cond_len: int, start: int, n: int, include_cond: bool = True):
        if self.positions != "rope3d":
            return None
        f, r, c = self._grid(start, n)
        pos = torch.stack([f + 1, r, c], dim=-1)  # (n, 3); frame 0 is the conditioning
        if include_cond:
            j = torch.arange(cond_len, device=pos.device)
            pos = torch.cat([torch.stack([torch.zeros_like(j), torch.zeros_like(j), j], -1), pos])
        return self.rope(pos)

    def _run(self, x, rope, cache, hidden_layer, keep_last: int, before_norm: bool = False) -> ModelOutput:
        """``before_norm``: the last layer's hidden state is its residual stream before the final norm, like every
        other layer's (ReCo's ``normalized`` form normalises it without the gain); else the normed, gained state
        the head reads."""
        n_layers = self.dims.n_layers
        want = None if hidden_layer is None else hidden_layer % n_layers
        if hidden_layer is not None and not -n_layers <= hidden_layer < n_layers:
            raise ValueError(f"hidden_layer={hidden_layer} is outside [-{n_layers}, {n_layers}) for this model")
        new_cache: KVCache = []
        hidden = None
        mask = None
        if cache is not None and x.shape[1] > 1:  # queries i see the cache and window keys <= i
            from torch.nn.attention.bias import causal_lower_right

            mask = causal_lower_right(x.shape[1], cache[0][0].shape[2] + x.shape[1])
        for i, block in enumerate(self.blocks):
            x, kv = block(x, rope, None if cache is None else cache[i], mask)
            new_cache.append(kv)
            if i == want and (i != n_layers - 1 or before_norm):
                hidden = x[:, -keep_last:]
        x = self.norm(x[:, -keep_last:])  # (B, keep_last, D): no head work on positions nobody reads
        if want == n_layers - 1 and not before_norm:
            hidden = x
        return ModelOutput(logits=self.head(x), hidden=hidden, cache=new_cache)
