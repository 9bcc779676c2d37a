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
                  "objective.reco_layer": 0, "model.n_layers": 2})
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
                  "objective.reco_weight": 1.0, "objective.reco_axis": "frame"})
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
    with pytest.raises(ConfigError, match="reco_axis"):  # a 1-frame Fewer-Frames clip has no frame pairs
        build_objective(_cfg(**{"objective.kind": "fewer_frames", "fewer_frames.num_frames": 1,
                                "objective.reco_axis": "frame"}))
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
