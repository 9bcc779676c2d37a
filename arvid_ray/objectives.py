"""Training objectives of the paper: full, Fewer-Frames, Local Opt. windows, and ReCo on top of any.

Index bookkeeping (the part that must be exact). The model sees ``[cond (P) ‖ v_0 .. v_{N-1}]`` and the
output at the position *before* ``v_i`` predicts ``v_i``. A window of latent frames ``[s, s+W)`` covers
targets ``v_a .. v_{b-1}`` with ``a = s*hw``, ``b = (s+W)*hw``; their predicting positions hold the
inputs ``v_{a-1} .. v_{b-2}``. So Local Opt. runs the video prefix ``v_0 .. v_{a-2}`` under ``no_grad``
into a detached KV cache (no logits, no saved activations), then runs the ``W*hw`` inputs
``v_{a-1} .. v_{b-2}`` with grad against ``[cond KV ‖ prefix KV ‖ window]``: the first window target is
predicted from the last prefix token, and nothing after the window is run at all. The conditioning is
not video context: its P tokens (which attend only to themselves) are run with grad, so the class/text
embedding learns from every window at a cost of P positions. A window starting at frame 0 has no video
prefix and is exactly the full objective on its frames, so a window covering the whole clip *is* the
full objective (same loss, same gradients), which a test checks.

Design trade-off: one window start per micro-batch (not per sample) keeps the prefix a dense batched
cache — per-sample starts would need ragged caches or padding that eats the saving. Across steps the
start distribution is what ``first_frame_prob`` asks for.

"+ first frame" (``first_frame_in_loss``) [ours, the reading that fits the paper's numbers]: latent frame 0
is always in the loss besides the sampled window. Frame 0 is run with grad as a clip of its own (it has
no video context); the window then reads frame 0's keys/values *detached*, like the rest of its prefix,
so the window's loss and gradients are exactly plain Local Opt.'s and frame 0 adds ``hw`` grad positions.

ReCo [ours, see docs/paper.md]: ``reco_weight * mean_i ||n(h_{i+1}) - n(h_i)||^2`` over adjacent hidden states of
the loss region (the states that predict the window's tokens), along the token sequence or between the
same spatial position in consecutive latent frames. ``n`` is the RMS normalisation *without* the learnable
gain, applied to the chosen layer's residual stream (at the default last layer: before the final norm, so
before its gain): the final norm's gain and the head can trade any scale or per-channel factor without
changing ReCo, so no reparametrisation lowers it, and the sum over channels is docs/paper.md's formula, so λ is
on the paper's scale (``||n(h)||² = D``: a pair's term lies in [0, 4D]). That is ``reco_form="normalized"``.
It is not the default: at the paper's scale λ = 0.1 makes ReCo several times the CE at init (more so as D
grows) and the debug model stopped learning (experiments/benchmarks/RESULTS.md, "Issue 24 — the full
method's cost, FLOPs limit, ReCo form"), so the shipped λ grids would first need dividing by ~D. The default
stays ``raw`` = mean ``||h_{i+1} - h_i||^2 / D`` of the gained final-norm state — lowered for free by
scaling the gain by c and the head by 1/c (ReCo × c², logits unchanged), and its /D makes λ up to D times
weaker than the paper's (whether training takes that escape: RESULTS.md, "bench_reco_forms.py — ReCo raw vs
scale-invariant `relative`") — and ``relative`` divides ``raw``'s pairs by their mean ``||h||²``
(scale-free, but per-channel gain changes still lower it). A λ tuned under ``raw`` is about λ/D here.
Pairs never straddle two loss regions (frame 0 and the window).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from arvid_ray.config import ConfigError, ExperimentConfig, FewerFramesConfig, ObjectiveConfig

__all__ = ["Objective", "build_objective", "reco_loss", "sample_window_start", "window_starts"]

RECO_NORM_EPS = 1e-6
"""eps of ReCo's gain-free RMS normalisation (the model's RMSNorm eps)."""


def window_starts(num_frames: int, window: int, stride: int) -> list[int]:
    """Allowed window starts (latent frames): multiples of ``stride`` with the window inside the clip; the
    windows must cover every latent frame (else some frames would never be trained)."""
    if window > num_frames:
        raise ValueError(f"window of {window} latent frames does not fit a clip of {num_frames}; lower "
                         f"objective.window_frames")
    if (num_frames - window) % stride:
        raise ValueError(f"objective.stride_frames={stride} with window_frames={window} never trains the last "
                         f"latent frames of a {num_frames}-frame clip; use a stride dividing {num_frames - window}")
    return list(range(0, num_frames - window + 1, stride))


def sample_window_start(num_frames: int, window: int, stride: int, first_frame_prob: float | None,
                        generator: torch.Generator | None = None) -> int:
    """Draw a start: frame 0 with probability ``first_frame_prob`` (else uniform over the later starts);
    ``None`` = uniform over all starts."""
    starts = window_starts(num_frames, window, stride)
    if first_frame_prob is not None and len(starts) > 1:
        if float(torch.rand((), generator=generator)) < first_frame_prob:
            return 0
        starts = starts[1:]
    return starts[int(torch.randint(len(starts), (), generator=generator))]


def _reco_terms(hidden: torch.Tensor, axis: str, tokens_per_frame: int, form: str) -> torch.Tensor:
    """Per-pair ReCo terms of hidden [B, n, D] in target order → [B, pairs(, s)] (empty without pairs).
    ``normalized`` expects the residual stream (``hidden_before_norm``), the other forms the model's hidden."""
    hidden = hidden.float()
    if form == "normalized":  # RMS-normalised, no gain: (B, n, D) with mean square 1 per position
        hidden = F.rms_norm(hidden, (hidden.shape[-1],), eps=RECO_NORM_EPS)
    if axis == "frame":
        hidden = rearrange(hidden, "b (t s) d -> b t s d", s=tokens_per_frame)  # pairs across latent frames
    if form == "normalized":  # the paper's ||Δh||², summed over channels
        return (hidden[:, 1:] - hidden[:, :-1]).pow(2).sum(-1)  # (B, pairs[, s])
    diff = (hidden[:, 1:] - hidden[:, :-1]).pow(2).mean(-1)  # (B, pairs[, s]): ||Δh||² / D
    if form == "relative":  # ||Δh||² / mean(||h_i||², ||h_{i+1}||²): invariant to any rescaling of h
        energy = hidden.pow(2).mean(-1)
        diff = diff / (0.5 * (energy[:, 1:] + energy[:, :-1])).clamp_min(1e-12)
    elif form != "raw":
        raise ValueError(f"objective.reco_form={form!r} must be 'normalized', 'raw' or 'relative'")
    return diff


def reco_loss(hidden: torch.Tensor, axis: str, tokens_per_frame: int, form: str = "raw") -> torch.Tensor:
    """Mean over adjacent pairs of ||n(h_{i+1}) - n(h_i)||^2 (``normalized``), ||h_{i+1} - h_i||^2 / D (``raw``,
    this function's default for its existing callers) or the scale-free ``relative`` form; hidden [B, n, D]
    in target order."""
    terms = _reco_terms(hidden, axis, tokens_per_frame, form)
    return terms.mean() if terms.numel() else hidden.new_zeros((), dtype=torch.float32)


class Objective:
    """``objective(model, batch, generator) -> {loss, ce, reco, tokens_in_loss, tokens_grad, tokens_nograd}``."""

    def __init__(self, cfg: ObjectiveConfig, fewer: FewerFramesConfig):
        self.cfg, self.fewer = cfg, fewer

    # ------------------------------------------------------------------ public
    def __call__(self, model, batch: dict, generator: torch.Generator | None = None, *,
                 window_generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        # window_generator draws the window / short-clip start (a trainer seeds it the same on every rank, so
        # ranks share a start and none waits for a longer one); generator the CFG dropout (per rank)
        starts = window_generator if window_generator is not None else generator
        tokens = self._tokens(model, batch)
        cond = model.condition(batch.get("label"), batch.get("caption"), generator=generator)
        if self.cfg.kind == "full":
            regions, nograd = [(self._whole(model, tokens, cond), tokens)], None
        elif self.cfg.kind == "fewer_frames":
            regions, nograd = self._fewer_frames(model, tokens, cond, starts)
        else:
            regions, nograd = self._local(model, tokens, cond, starts)
        # each region: (model output, targets [B, t, h, w]); logits[:, i] predict the region's i-th target
        logits = torch.cat([out.logits for out, _ in regions], 1)  # (B, n_loss, V)
        flat_targets = torch.cat([rearrange(t, "b t h w -> b (t h w)") for _, t in regions], 1)  # (B, n_loss)
        ce = F.cross_entropy(logits.flatten(0, 1).float(), flat_targets.flatten())
        if self.cfg.reco_weight > 0:
            terms = [_reco_terms(out.hidden, self.cfg.reco_axis, model.tokens_per_frame, self.cfg.reco_form)
                     for out, _ in regions]  # pairs never straddle two regions
            terms = torch.cat([t.flatten(1) for t in terms], 1)
            reco = terms.mean() if terms.numel() else ce.new_zeros(())
            loss = ce + self.cfg.reco_weight * reco
        else:
            reco, loss = ce.new_zeros(()), ce
        batch_size, n_loss = flat_targets.shape
        # positions run with grad: the conditioning and each region's inputs; a region run from the start of
        # the clip uses the last condition token as its first input; nograd None = no prefix at all
        grad = n_loss + cond.shape[1] - (1 if nograd is None else 0)
        if nograd is not None and len(regions) > 1:
            grad -= 1  # frame 0 (run from the start) and the window (after a prefix)
        nograd = nograd or 0
        counts = {k: torch.tensor(float(batch_size * n)) for k, n in
                  (("tokens_in_loss", n_loss), ("tokens_grad", grad), ("tokens_nograd", nograd))}
        return {"loss": loss, "ce": ce.detach(), "reco": reco.detach(), **counts}

    @torch.no_grad()
    def val_ce(self, model, batch: dict) -> torch.Tensor:
        """Next-token cross-entropy with the real condition, no grad, at the context the method trained with:
        the whole clip for full and local; for fewer_frames the mean over every ``fewer_frames.num_frames``-frame
        clip of it, positions from 0 as in training (the whole clip would score contexts it never saw)."""
        tokens = self._tokens(model, batch)
        cond = model.condition(batch.get("label"), batch.get("caption"), force_drop=False)
        if self.cfg.kind == "fewer_frames" and self.fewer.num_frames < tokens.shape[1]:
            length = self.fewer.num_frames
            starts = tokens.shape[1] - length + 1  # every short clip, as training draws them (uniform start)
            tokens = torch.cat([tokens[:, s:s + length] for s in range(starts)])  # (starts*B, F, h, w)
            cond = cond.repeat(starts, 1, 1)  # (starts*B, P, D), rows in the clips' order
        logits = model.forward(tokens, cond).logits
        return F.cross_entropy(logits.flatten(0, 1).float(), rearrange(tokens, "b t h w -> (b t h w)"))

    # ------------------------------------------------------------------ kinds
    def _hidden_layer(self, model) -> int:
        n_layers = len(model.blocks)
        if not -n_layers <= self.cfg.reco_layer < n_layers:
            raise ConfigError(f"config field 'objective.reco_layer' = {self.cfg.reco_layer} is invalid: the "
                              f"model has {n_layers} layers; use -1 (last) or a layer in [-{n_layers}, {n_layers})")
        return self.cfg.reco_layer

    def _hidden(self, model) -> dict:
        """The hidden-state request of a with-grad call: the layer, and the residual stream for ``normalized``."""
        return {"hidden_layer": self._hidden_layer(model), "hidden_before_norm": self.cfg.reco_form == "normalized"}

    def _whole(self, model, tokens, cond):
        return model.forward(tokens, cond, **self._hidden(model))

    def _fewer_frames(self, model, tokens, cond, generator):
        length = self.fewer.num_frames
        if length > tokens.shape[1]:
            raise ValueError(f"fewer_frames.num_frames={length} exceeds the batch's {tokens.shape[1]} latent frames")
        start = int(torch.randint(tokens.shape[1] - length + 1, (), generator=generator))
        clip = tokens[:, start:start + length]  # (B, F, h, w): a standalone short clip, positions from 0
        return [(self._whole(model, clip, cond), clip)], None

    def _local(self, model, tokens, cond, generator):
        c = self.cfg
        start = sample_window_start(tokens.shape[1], c.window_frames, c.stride_frames, c.first_frame_prob,
                                    generator)
        window = tokens[:, start:start + c.window_frames]  # (B, W, h, w) targets
        if start == 0:
            return [(self._whole(model, window, cond), window)], None
        hw, n_cond = model.tokens_per_frame, cond.shape[1]
        first, end = start * hw, (start + c.window_frames) * hw
        flat = rearrange(tokens, "b t h w -> b (t h w)")
        regions, done = [], 0  # done: video inputs already in the cache
        if c.first_frame_in_loss:  # frame 0 as a clip of its own, with grad; its cache covers v_0 .. v_{hw-2}
            head = model.forward(tokens[:, :1], cond, **self._hidden(model))
            regions.append((head, tokens[:, :1]))
            cond_cache = [(k[:, :, :n_cond], v[:, :, :n_cond]) for k, v in head.cache]
            video_cache = [(k.detach(), v.detach()) for k, v in head.cache]
            done = hw - 1
        else:  # the condition (P tokens, attending only to itself) keeps its gradient: the window reads its keys
            cond_cache = model.prefill(cond, flat[:, :0]).cache
            video_cache = [(k.detach(), v.detach()) for k, v in cond_cache]
        with torch.no_grad():  # the free prefix: detached cache, no logits, no autograd graph
            video_cache = model.extend_cache(flat[:, done:first - 1], done, video_cache)
        cache = [(torch.cat([kc, kv[:, :, n_cond:]], 2), torch.cat([vc, vv[:, :, n_cond:]], 2))
                 for (kc, vc), (kv, vv) in zip(cond_cache, video_cache)]  # (B, H, P + a - 1, Dh)
        out = model.forward_with_cache(flat[:, first - 1:end - 1], first - 1, cache, **self._hidden(model))
        return regions + [(out, window)], first - 1 - done  # no-grad positions: v_done .. v_{a-2}

    # ------------------------------------------------------------------ checks
    def _tokens(self, model, batch: dict) -> torch.Tensor:
        tokens = batch.get("tokens")
        if tokens is None or tokens.dim() != 4:
            raise ValueError("batch['tokens'] must be a LongTensor [B, t, h, w] of token ids; got "
                             f"{None if tokens is None else tuple(tokens.shape)}")
        return tokens.long()


def build_objective(cfg: ExperimentConfig) -> Objective:
    """The objective ``cfg.objective.kind`` selects, validated against the clip's latent frames."""
    obj = cfg.objective
    if obj.reco_weight > 0 and obj.reco_axis == "frame":
        frames = {"local": obj.window_frames, "fewer_frames": cfg.fewer_frames.num_frames}.get(
            obj.kind, cfg.latent_frames())
        if frames < 2:
            raise ConfigError(f"config field 'objective.reco_axis' = 'frame' is invalid with a loss region of "
                              f"{frames} latent frame: use reco_axis='token' or a longer window/clip")
    return Objective(obj, cfg.fewer_frames)
