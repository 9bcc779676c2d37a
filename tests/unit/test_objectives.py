"""The paper's objectives: exactness of Local Opt., window isolation, window sampling, ReCo, learning."""

from __future__ import annotations

import math

import pytest
import torch

from arvid_ray.config import ConfigError, ExperimentConfig
from arvid_ray.model import build_model
from arvid_ray.objectives import build_objective, reco_loss, sample_window_start, window_starts

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VOCAB = 48
BASE = {"data.num_frames": 17, "data.resolution": 16, "tokenizer.spatial_down": 8, "model.cfg_dropout": 0.0}
# 17 frames → 5 latent frames of 2 x 2 tokens


def _cfg(**kw) -> ExperimentConfig:
    return ExperimentConfig().replace(**{**BASE, **kw})


def _model(cfg, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg.model, VOCAB, cfg.latent_shape())


def _batch(cfg, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"tokens": torch.randint(0, VOCAB, (batch, *cfg.latent_shape()), generator=g),
            "label": torch.randint(0, 16, (batch,), generator=g),
            "caption": [f"caption number {i}" for i in range(batch)]}


def _grads(model):
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()}


def _run(cfg, model, batch, seed=0):
    model.zero_grad(set_to_none=True)
    out = build_objective(cfg)(model, batch, torch.Generator().manual_seed(seed))
    out["loss"].backward()
    return out, _grads(model)


@pytest.mark.parametrize("conditioning", ["class", "text"])
@pytest.mark.parametrize("reco", [0.0, 0.3])
def test_local_with_whole_clip_window_equals_full_exactly(conditioning, reco):
    full = _cfg(**{"objective.kind": "full", "objective.reco_weight": reco, "model.conditioning": conditioning,
                   "model.text_tokens": 3})
    local = full.replace(**{"objective.kind": "local", "objective.window_frames": 5})
    model, batch = _model(full), _batch(full)
    out_f, g_f = _run(full, model, batch)
    out_l, g_l = _run(local, model, batch)
    for key in ("loss", "ce", "reco", "tokens_in_loss", "tokens_grad", "tokens_nograd"):
        assert torch.equal(out_f[key], out_l[key]), key
    assert all(torch.equal(g_f[n], g_l[n]) for n in g_f)
    assert out_l["tokens_nograd"] == 0 and out_l["tokens_in_loss"] == 3 * 20


def _predicted_start(cfg, seed):
    o = cfg.objective
    return sample_window_start(cfg.latent_frames(), o.window_frames, o.stride_frames, o.first_frame_prob,
                               torch.Generator().manual_seed(seed))


def test_window_isolation_no_gradient_through_the_prefix():
    cfg = _cfg(**{"objective.kind": "local", "objective.window_frames": 2, "objective.first_frame_prob": 0.0,
                  "objective.reco_weight": 0.1})
    start = _predicted_start(cfg, seed=3)
    assert start >= 1
    hw, first, end = 4, start * 4, (start + 2) * 4
    # disjoint vocabularies: prefix-only tokens use ids < 16, the window's inputs 16..31, after-window ids >= 32
    flat = torch.randint(0, 16, (3, 20), generator=torch.Generator().manual_seed(1))
    flat[:, first - 1:end] = torch.randint(16, 32, (3, end - first + 1))
    flat[:, end:] = torch.randint(32, VOCAB, (3, 20 - end))
    batch = {**_batch(cfg), "tokens": flat.reshape(3, 5, 2, 2)}
    model = _model(cfg)
    out, grads = _run(cfg, model, batch, seed=3)
    emb = grads["tok_emb.weight"]
    assert emb[:16].abs().sum() == 0, "prefix-only tokens received gradient"
    assert emb[16:32].abs().sum(-1).gt(0).sum() > 0
    # the condition is not video context: it keeps its gradient (only through the window's attention)
    assert grads["conditioner.embedding.weight"].abs().sum() > 0
    assert out["tokens_grad"] == 3 * (1 + 2 * hw) and out["tokens_nograd"] == 3 * (first - 1)
    assert out["tokens_in_loss"] == 3 * 2 * hw
    # the full objective, by contrast, sends gradient into the same rows
    _, full_grads = _run(cfg.replace(**{"objective.kind": "full"}), model, batch)
    assert full_grads["tok_emb.weight"][:16].abs().sum() > 0


def test_window_loss_is_the_full_forward_restricted_to_the_window():
    cfg = _cfg(**{"objective.kind": "local", "objective.window_frames": 2, "objective.first_frame_prob": 0.0,
                  "objective.reco_weight": 0.0})
    start = _predicted_start(cfg, seed=5)
    model, batch = _model(cfg), _batch(cfg)
    out = build_objective(cfg)(model, batch, torch.Generator().manual_seed(5))
    logits = model.forward(batch["tokens"], model.condition(batch["label"])).logits
    sl = slice(start * 4, (start + 2) * 4)
    ref = torch.nn.functional.cross_entropy(logits[:, sl].flatten(0, 1), batch["tokens"].flatten(1)[:, sl].flatten())
    torch.testing.assert_close(out["loss"], ref, rtol=1e-5, atol=1e-6)
    # targets after the window do not matter; targets inside it do
    after, inside = batch["tokens"].clone(), batch["tokens"].clone()
    after.view(3, -1)[:, (start + 2) * 4:] = (after.view(3, -1)[:, (start + 2) * 4:] + 7) % VOCAB
    inside.view(3, -1)[:, sl] = (inside.view(3, -1)[:, sl] + 7) % VOCAB
    loss = lambda toks: build_objective(cfg)(model, {**batch, "tokens": toks}, torch.Generator().manual_seed(5))["loss"]  # noqa: E731
    if start + 2 < 5:
        assert torch.equal(loss(after), out["loss"])
    assert not torch.equal(loss(inside), out["loss"])


@pytest.mark.parametrize("prob", [0.5, 0.2])
def test_first_frame_frequency_matches_config(prob):
    g = torch.Generator().manual_seed(0)
    draws = torch.tensor([sample_window_start(5, 2, 1, prob, g) for _ in range(4000)])
    assert abs((draws == 0).float().mean().item() - prob) < 0.03
    later = draws[draws > 0]
    for s in (1, 2, 3):  # the other starts share the rest uniformly
        assert abs((later == s).float().mean().item() - 1 / 3) < 0.04


def test_uniform_windows_and_stride():
    g = torch.Generator().manual_seed(0)
    draws = torch.tensor([sample_window_start(9, 3, 2, None, g) for _ in range(3000)])
    assert set(draws.tolist()) == {0, 2, 4, 6} == set(window_starts(9, 3, 2))
    for s in (0, 2, 4, 6):
        assert abs((draws == s).float().mean().item() - 0.25) < 0.04
    assert window_starts(5, 5, 1) == [0]


@pytest.mark.parametrize("axis", ["token", "frame"])
def test_reco_equals_direct_computation_from_hidden_states(axis):
    cfg = _cfg(**{"objective.kind": "full", "objective.reco_weight": 0.25, "objective.reco_axis": axis,
                  "objective.reco_layer": 0, "model.n_layers": 2, "objective.reco_form": "raw"})
    model, batch = _model(cfg), _batch(cfg)
    out = build_objective(cfg)(model, batch, torch.Generator().manual_seed(0))
    h = model.forward(batch["tokens"], model.condition(batch["label"]), hidden_layer=0).hidden  # (B, 20, D)
    lag = 1 if axis == "token" else 4
    pairs = [(h[b, i + lag] - h[b, i]).pow(2).sum() / h.shape[-1] for b in range(3) for i in range(20 - lag)]
    direct = torch.stack(pairs).mean()
    torch.testing.assert_close(out["reco"], direct.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["loss"], out["ce"] + 0.25 * direct, rtol=1e-5, atol=1e-6)


def test_reco_on_the_local_window_uses_window_states_only():
    cfg = _cfg(**{"objective.kind": "local", "objective.window_frames": 2, "objective.first_frame_prob": 0.0,
                  "objective.reco_weight": 1.0, "objective.reco_axis": "frame", "objective.reco_form": "raw"})
    start = _predicted_start(cfg, seed=2)
    model, batch = _model(cfg), _batch(cfg)
    out = build_objective(cfg)(model, batch, torch.Generator().manual_seed(2))
    h = model.forward(batch["tokens"], model.condition(batch["label"])).hidden[:, start * 4:(start + 2) * 4]
    torch.testing.assert_close(out["reco"], reco_loss(h, "frame", 4).detach(), rtol=1e-5, atol=1e-6)


def test_zero_weight_reduces_to_cross_entropy():
    for kind in ("full", "local", "fewer_frames"):
        cfg = _cfg(**{"objective.kind": kind, "objective.reco_weight": 0.0})
        out = build_objective(cfg)(_model(cfg), _batch(cfg), torch.Generator().manual_seed(0))
        assert torch.equal(out["loss"], out["ce"]) and out["reco"] == 0


def test_fewer_frames_is_full_on_a_short_clip():
    cfg = _cfg(**{"objective.kind": "fewer_frames", "fewer_frames.num_frames": 2, "objective.reco_weight": 0.1})
    model, batch = _model(cfg), _batch(cfg)
    start = int(torch.randint(4, (), generator=torch.Generator().manual_seed(4)))
    out = build_objective(cfg)(model, batch, torch.Generator().manual_seed(4))
    short = {**batch, "tokens": batch["tokens"][:, start:start + 2]}
    ref = build_objective(cfg.replace(**{"objective.kind": "full"}))(model, short, None)
    assert torch.equal(out["loss"], ref["loss"])
    assert out["tokens_in_loss"] == 3 * 8 and out["tokens_nograd"] == 0


def test_val_ce_is_full_clip_without_grad():
    cfg = _cfg(**{"objective.kind": "local", "model.cfg_dropout": 0.5})
    model, batch = _model(cfg), _batch(cfg)
    model.eval()
    val = build_objective(cfg).val_ce(model, batch)
    full = build_objective(cfg.replace(**{"objective.kind": "full", "objective.reco_weight": 0.0}))
    assert not val.requires_grad
    torch.testing.assert_close(val, full(model, batch, None)["ce"])


def test_fewer_frames_val_ce_is_scored_at_the_clip_length_it_trained_on():
    """A Fewer-Frames model's eval/val_ce is the mean CE over every short clip of the validation clip (positions
    from 0, as trained), not the whole clip at contexts it never saw (what ASHA would otherwise prune on)."""
    cfg = _cfg(**{"objective.kind": "fewer_frames", "fewer_frames.num_frames": 2, "objective.reco_weight": 0.0})
    model, batch = _model(cfg), _batch(cfg)
    model.eval()
    val = build_objective(cfg).val_ce(model, batch)
    full = build_objective(cfg.replace(**{"objective.kind": "full"}))
    clips = [full(model, {**batch, "tokens": batch["tokens"][:, s:s + 2]}, None)["ce"] for s in range(4)]
    torch.testing.assert_close(val, torch.stack(clips).mean())
    assert not torch.allclose(val, full(model, batch, None)["ce"])  # the whole clip scores something else


def test_config_refuses_invalid_combinations():
    with pytest.raises(ConfigError, match="window is larger than the clip"):
        _cfg(**{"objective.window_frames": 6})
    with pytest.raises(ConfigError, match="stride_frames"):
        _cfg(**{"objective.window_frames": 2, "objective.stride_frames": 3})
    with pytest.raises(ConfigError, match="reco_weight"):
        _cfg(**{"objective.reco_weight": -0.1})
    with pytest.raises(ConfigError, match="first_frame_prob"):
        _cfg(**{"objective.first_frame_prob": 1.5})
    with pytest.raises(ConfigError, match="fewer_frames.num_frames"):
        _cfg(**{"objective.kind": "fewer_frames", "fewer_frames.num_frames": 6})
    with pytest.raises(ConfigError, match="reco_axis"):
        _cfg(**{"objective.window_frames": 1, "objective.stride_frames": 1, "objective.reco_axis": "frame"})
    with pytest.raises(ConfigError, match="fewer_frames.num_frames"):  # a 1-frame Fewer-Frames clip: refused
        _cfg(**{"objective.kind": "fewer_frames", "fewer_frames.num_frames": 1, "objective.reco_axis": "frame"})
    cfg = _cfg(**{"objective.reco_layer": 5})
    with pytest.raises(ConfigError, match="reco_layer"):
        build_objective(cfg)(_model(cfg), _batch(cfg), None)


def _structured_batch(batch, gen, frames=4, vocab=16):
    """Tokens fully determined by a random first token and the class: loss floor = log(V) / N."""
    labels = torch.randint(0, 4, (batch,), generator=gen)
    offset = torch.randint(0, vocab, (batch, 1, 1, 1), generator=gen)
    f = torch.arange(frames).view(1, frames, 1, 1)
    r, c = torch.arange(2).view(1, 1, 2, 1), torch.arange(2).view(1, 1, 1, 2)
    tokens = (offset + f * (labels.view(-1, 1, 1, 1) + 1) + 2 * r + 5 * c) % vocab  # (B, t, 2, 2)
    return {"tokens": tokens, "label": labels}


@pytest.mark.parametrize("kind,extra", [
    ("full", {}), ("fewer_frames", {"fewer_frames.num_frames": 2}),
    ("local", {"objective.window_frames": 2}),
    ("local", {"objective.window_frames": 2, "objective.reco_weight": 0.1, "objective.reco_axis": "frame"}),
])
def test_debug_model_learns_with_every_objective(kind, extra):
    cfg = ExperimentConfig().replace(**{"data.num_frames": 13, "data.resolution": 16, "model.cfg_dropout": 0.0,
                                        "objective.kind": kind, "objective.reco_weight": 0.0, **extra})
    torch.manual_seed(0)
    model = build_model(cfg.model, 16, cfg.latent_shape())
    objective, gen = build_objective(cfg), torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ces = []
    for _ in range(200):
        out = objective(model, _structured_batch(16, gen), gen)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        ces.append(out["ce"].item())
    final = sum(ces[-20:]) / 20
    assert final < 0.35 * math.log(16), (kind, final, ces[:3])
    if kind != "fewer_frames":  # the full-clip CE drops too (Fewer-Frames never saw frames past its clip)
        model.eval()
        assert objective.val_ce(model, _structured_batch(32, gen)) < 0.5 * math.log(16)


def _starts_by_seed(cfg, wanted):
    """A seed per wanted window start (the objective draws its start from the generator it is given)."""
    found = {}
    for seed in range(200):
        found.setdefault(_predicted_start(cfg, seed), seed)
        if all(s in found for s in wanted):
            return {s: found[s] for s in wanted}
    raise AssertionError(f"no seed draws starts {wanted}: {found}")


def _detached_prefix_full_loss(cfg, model, batch, start):
    """Reference: ONE full forward in which every layer's K/V at the video prefix v_0 .. v_{a-2} are
    detached (the condition's are not), then CE (+ ReCo) on the window's targets."""
    hw, w = model.tokens_per_frame, cfg.objective.window_frames
    first, n_cond = start * hw, model.condition(batch["label"]).shape[1]
    d = model.dims.d_model

    def detach_prefix(_module, _inputs, qkv):  # qkv (B, P + N - 1, 3D): keep Q, detach prefix K and V
        keep = torch.ones(qkv.shape[1], 3 * d, dtype=torch.bool)
        keep[n_cond:n_cond + first - 1, d:] = False
        return torch.where(keep, qkv, qkv.detach())

    handles = [b.attn.qkv.register_forward_hook(detach_prefix) for b in model.blocks]
    form = cfg.objective.reco_form
    try:
        out = model.forward(batch["tokens"], model.condition(batch["label"]), hidden_before_norm=form == "normalized")
    finally:
        for h in handles:
            h.remove()
    sl = slice(first, (start + w) * hw)
    ce = torch.nn.functional.cross_entropy(out.logits[:, sl].flatten(0, 1), batch["tokens"].flatten(1)[:, sl].flatten())
    return ce + cfg.objective.reco_weight * reco_loss(out.hidden[:, sl], cfg.objective.reco_axis, hw, form)


@pytest.mark.parametrize("reco,form", [(0.0, "raw"), (0.5, "raw"), (0.5, "normalized")])
def test_local_window_after_a_prefix_equals_one_full_forward_with_detached_prefix_kv(reco, form):
    cfg = _cfg(**{"objective.kind": "local", "objective.window_frames": 2, "objective.first_frame_prob": 0.0,
                  "objective.reco_weight": reco, "model.n_layers": 3, "objective.reco_form": form})
    model, batch = _model(cfg), _batch(cfg)
    for start, seed in _starts_by_seed(cfg, [1, 2, 3]).items():
        out, grads = _run(cfg, model, batch, seed=seed)
        model.zero_grad(set_to_none=True)
        ref = _detached_prefix_full_loss(cfg, model, batch, start)
        ref.backward()
        ref_grads = _grads(model)
        torch.testing.assert_close(out["loss"], ref.detach(), rtol=1e-5, atol=1e-6)
        for name in grads:
            torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6, msg=f"{start} {name}")
        assert grads["tok_emb.weight"].abs().sum() > 0


def test_first_frame_in_loss_adds_frame_zero_to_the_window():
    cfg = _cfg(**{"objective.kind": "local", "objective.window_frames": 2, "objective.first_frame_prob": 0.0,
                  "objective.reco_weight": 0.0, "objective.first_frame_in_loss": True})
    plain = cfg.replace(**{"objective.first_frame_in_loss": False})
    model, batch = _model(cfg), _batch(cfg)
    for start, seed in _starts_by_seed(cfg, [1, 3]).items():
        out, _ = _run(cfg, model, batch, seed=seed)
        window, _ = _run(plain, model, batch, seed=seed)
        head = build_objective(plain.replace(**{"objective.kind": "full"}))(
            model, {**batch, "tokens": batch["tokens"][:, :1]}, None)
        # CE is the token mean over frame 0 (4 tokens) and the unchanged window (8 tokens)
        torch.testing.assert_close(out["ce"], (4 * head["ce"] + 8 * window["ce"]) / 12, rtol=1e-5, atol=1e-6)
        assert out["tokens_in_loss"] == 3 * 12 and out["tokens_nograd"] == 3 * (start - 1) * 4
        assert out["tokens_grad"] == 3 * (1 + 4 - 1 + 8)  # condition, frame 0's inputs, the window's inputs
        changed = batch["tokens"].clone()
        changed[:, 0] = (changed[:, 0] + 5) % VOCAB  # frame 0's targets are in the loss
        assert not torch.equal(build_objective(cfg)(model, {**batch, "tokens": changed},
                                                    torch.Generator().manual_seed(seed))["ce"], out["ce"])


def test_first_frame_in_loss_keeps_balanced_sampling():
    cfg = _cfg(**{"objective.kind": "local", "objective.window_frames": 2, "objective.first_frame_prob": 0.5,
                  "objective.reco_weight": 0.1, "objective.first_frame_in_loss": True})
    model, batch, objective = _model(cfg), _batch(cfg, batch=1), build_objective(cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sizes = torch.stack([objective(model, batch, gen)["tokens_in_loss"] for _ in range(600)])
    # every draw has frame 0 in the loss: 2 frames (window at 0) or 3 (frame 0 + a later window), never 2 later
    assert set(sizes.tolist()) == {8.0, 12.0}
    assert abs((sizes == 8).float().mean().item() - 0.5) < 0.07  # start 0 as often as first_frame_prob says


@pytest.mark.parametrize("form", ["normalized", "raw", "relative"])
def test_relative_reco_ignores_rescaling_the_final_norm_gain_against_the_head(form):
    cfg = _cfg(**{"objective.kind": "local", "objective.window_frames": 2, "objective.reco_weight": 0.1,
                  "objective.reco_form": form})
    model, batch = _model(cfg), _batch(cfg)
    before = build_objective(cfg)(model, batch, torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.norm.weight.mul_(0.1)  # logits unchanged: the head undoes the gain
        model.head.weight.mul_(10.0)
    after = build_objective(cfg)(model, batch, torch.Generator().manual_seed(1))
    torch.testing.assert_close(after["ce"], before["ce"], rtol=1e-4, atol=1e-5)
    if form != "raw":
        torch.testing.assert_close(after["reco"], before["reco"], rtol=1e-4, atol=1e-7)
    else:  # the raw form can be cut 100x without smoothing anything: why the relative form exists
        torch.testing.assert_close(after["reco"], before["reco"] / 100, rtol=1e-3, atol=1e-9)


def test_normalized_reco_ignores_any_gain_and_is_the_papers_sum_over_channels():
    """The gain-free form: a per-channel rescaling of the final norm's gain against the head (which only the
    ``relative`` form's scale-freeness does not cover) leaves CE and ReCo unchanged, and ReCo is docs/paper.md's
    mean over pairs of ||Δh||² (summed over channels, no /D) of the gain-free RMS-normalised residual stream."""
    cfg = _cfg(**{"objective.kind": "full", "objective.reco_weight": 0.1, "objective.reco_form": "normalized"})
    model, batch = _model(cfg), _batch(cfg)
    before = build_objective(cfg)(model, batch, None)
    h = model.forward(batch["tokens"], model.condition(batch["label"]), hidden_before_norm=True).hidden  # (B, 20, D)
    n = h / h.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    direct = torch.stack([(n[b, i + 1] - n[b, i]).pow(2).sum() for b in range(3) for i in range(19)]).mean()
    torch.testing.assert_close(before["reco"], direct.detach(), rtol=1e-5, atol=1e-5)
    gain = torch.linspace(0.05, 3.0, model.dims.d_model)
    with torch.no_grad():
        model.norm.weight.mul_(gain)  # per channel; the head undoes it
        model.head.weight.div_(gain)
    after = build_objective(cfg)(model, batch, None)
    torch.testing.assert_close(after["ce"], before["ce"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(after["reco"], before["reco"], rtol=1e-5, atol=1e-6)
    raw = build_objective(cfg.replace(**{"objective.reco_form": "raw"}))(model, batch, None)["reco"]
    assert abs(float(raw) - float(before["reco"])) > 0.1 * float(before["reco"])  # the raw form moved


def test_relative_reco_is_direct_computation():
    h = torch.randn(2, 6, 8)
    direct = torch.stack([(h[b, i + 1] - h[b, i]).pow(2).sum() / (0.5 * (h[b, i].pow(2).sum() + h[b, i + 1].pow(2).sum()))
                          for b in range(2) for i in range(5)]).mean()
    torch.testing.assert_close(reco_loss(h, "token", 2, "relative"), direct, rtol=1e-5, atol=1e-6)


def test_window_starts_cover_every_latent_frame_or_the_config_is_refused():
    accepted = refused = 0
    for t in range(1, 8):
        for w in range(1, t + 1):
            for s in range(1, w + 1):
                over = {"data.num_frames": 1 + 4 * (t - 1), "objective.window_frames": w, "objective.stride_frames": s,
                        "objective.reco_weight": 0.0}
                try:
                    _cfg(**over)
                except ConfigError as exc:
                    assert "objective.stride_frames" in str(exc) and "never train" in str(exc)
                    with pytest.raises(ValueError, match="stride_frames"):
                        window_starts(t, w, s)
                    refused += 1
                    continue
                covered = {f for start in window_starts(t, w, s) for f in range(start, start + w)}
                assert covered == set(range(t)), (t, w, s)
                accepted += 1
    assert accepted and refused
    with pytest.raises(ConfigError, match="never train latent frame 4"):  # W=2, stride 2 on 5 latent frames
        _cfg(**{"objective.window_frames": 2, "objective.stride_frames": 2})
