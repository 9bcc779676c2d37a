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

ReCo [ours, see PAPER.md]: ``reco_weight * mean_i ||h_{i+1} - h_i||^2 / D`` over adjacent hidden states of
the loss region (the states that predict the window's tokens), along the token sequence or between the
same spatial position in consecutive latent frames. Dividing by the width D keeps λ comparable across
model sizes (the paper's λ = 0.1 is for one unknown width).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from arvid_ray.config import ConfigError, ExperimentConfig, FewerFramesConfig, ObjectiveConfig

__all__ = ["Objective", "build_objective", "reco_loss", "sample_window_start", "window_starts"]


def window_starts(num_frames: int, window: int, stride: int) -> list[int]:
    """Allowed window starts (latent frames): multiples of ``stride`` with the window inside the clip."""
    if window > num_frames:
        raise ValueError(f"window of {window} latent frames does not fit a clip of {num_frames}; lower "
                         f"objective.window_frames")
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


def reco_loss(hidden: torch.Tensor, axis: str, tokens_per_frame: int) -> torch.Tensor:
    """Mean over adjacent pairs of ||h_{i+1} - h_i||^2 / D; hidden [B, n, D] in target order."""
    hidden = hidden.float()
    if axis == "frame":
        hidden = rearrange(hidden, "b (t s) d -> b t s d", s=tokens_per_frame)  # pairs across latent frames
    if hidden.shape[1] < 2:
        return hidden.new_zeros(())
    return (hidden[:, 1:] - hidden[:, :-1]).pow(2).mean()


class Objective:
    """``objective(model, batch, generator) -> {loss, ce, reco, tokens_in_loss, tokens_grad, tokens_nograd}``."""

    def __init__(self, cfg: ObjectiveConfig, fewer: FewerFramesConfig):
        self.cfg, self.fewer = cfg, fewer

    # ------------------------------------------------------------------ public
    def __call__(self, model, batch: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        tokens = self._tokens(model, batch)
        cond = model.condition(batch.get("label"), batch.get("caption"), generator=generator)
        if self.cfg.kind == "full":
            out, targets, nograd = self._whole(model, tokens, cond), tokens, None
        elif self.cfg.kind == "fewer_frames":
            out, targets, nograd = self._fewer_frames(model, tokens, cond, generator)
        else:
            out, targets, nograd = self._local(model, tokens, cond, generator)
        flat_targets = rearrange(targets, "b t h w -> b (t h w)")  # (B, n) aligned with out.logits
        ce = F.cross_entropy(out.logits.flatten(0, 1).float(), flat_targets.flatten())
        if self.cfg.reco_weight > 0:
            reco = reco_loss(out.hidden, self.cfg.reco_axis, model.tokens_per_frame)
            loss = ce + self.cfg.reco_weight * reco
        else:
            reco, loss = ce.new_zeros(()), ce
        batch_size, n_loss = flat_targets.shape
        # positions run with grad: the conditioning and the loss region's inputs (without a no-grad prefix,
        # the last condition token is itself the first input); nograd None = no prefix at all
        grad = n_loss + cond.shape[1] - (1 if nograd is None else 0)
        nograd = nograd or 0
        counts = {k: torch.tensor(float(batch_size * n)) for k, n in
                  (("tokens_in_loss", n_loss), ("tokens_grad", grad), ("tokens_nograd", nograd))}
        return {"loss": loss, "ce": ce.detach(), "reco": reco.detach(), **counts}

    @torch.no_grad()
    def val_ce(self, model, batch: dict) -> torch.Tensor:
        """Full-clip next-token cross-entropy with the real condition, no grad."""
        tokens = self._tokens(model, batch)
        cond = model.condition(batch.get("label"), batch.get("caption"), force_drop=False)
        logits = model.forward(tokens, cond).logits
        return F.cross_entropy(logits.flatten(0, 1).float(), rearrange(tokens, "b t h w -> (b t h w)"))

    # ------------------------------------------------------------------ kinds
    def _hidden_layer(self, model) -> int:
        n_layers = len(model.blocks)
        if not -n_layers <= self.cfg.reco_layer < n_layers:
            raise ConfigError(f"config field 'objective.reco_layer' = {self.cfg.reco_layer} is invalid: the "
                              f"model has {n_layers} layers; use -1 (last) or a layer in [-{n_layers}, {n_layers})")
        return self.cfg.reco_layer

    def _whole(self, model, tokens, cond):
        return model.forward(tokens, cond, hidden_layer=self._hidden_layer(model))

    def _fewer_frames(self, model, tokens, cond, generator):
        length = self.fewer.num_frames
        if length > tokens.shape[1]:
            raise ValueError(f"fewer_frames.num_frames={length} exceeds the batch's {tokens.shape[1]} latent frames")
        start = int(torch.randint(tokens.shape[1] - length + 1, (), generator=generator))
        clip = tokens[:, start:start + length]  # (B, F, h, w): a standalone short clip, positions from 0
        return self._whole(model, clip, cond), clip, None

    def _local(self, model, tokens, cond, generator):
        c = self.cfg
        start = sample_window_start(tokens.shape[1], c.window_frames, c.stride_frames, c.first_frame_prob,
                                    generator)
        window = tokens[:, start:start + c.window_frames]  # (B, W, h, w) targets
        if start == 0:
            return self._whole(model, window, cond), window, None
        hw, n_cond = model.tokens_per_frame, cond.shape[1]
        first, end = start * hw, (start + c.window_frames) * hw
        flat = rearrange(tokens, "b t h w -> b (t h w)")
        # the condition (P tokens, attending only to itself) keeps its gradient: the window reads its keys
        cond_cache = model.prefill(cond, flat[:, :0]).cache
        with torch.no_grad():  # the free prefix: detached cache, no logits, no autograd graph
            video_cache = model.extend_cache(flat[:, :first - 1], 0, [(k.detach(), v.detach()) for k, v in cond_cache])
        cache = [(torch.cat([kc, kv[:, :, n_cond:]], 2), torch.cat([vc, vv[:, :, n_cond:]], 2))
                 for (kc, vc), (kv, vv) in zip(cond_cache, video_cache)]  # (B, H, P + a - 1, Dh)
        out = model.forward_with_cache(flat[:, first - 1:end - 1], first - 1, cache,
                                       hidden_layer=self._hidden_layer(model))
        return out, window, first - 1  # no-grad positions: v_0 .. v_{a-2}

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
