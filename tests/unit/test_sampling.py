"""Sampling: filters, CFG, KV-cache decoding == uncached decoding, rollouts beyond the trained length."""

from __future__ import annotations

import pytest
import torch
from sampling_shared import VOCAB, _model

from arvid_ray.config import SamplingConfig
from arvid_ray.model import build_model
from arvid_ray.sampling import _decode, context_schedule, generate, guide, sample_logits

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_sample_logits_filters():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0]]).repeat(2000, 1)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(sample_logits(logits, SamplingConfig(temperature=0.0)), torch.ones(2000, dtype=torch.long))
    assert (sample_logits(logits, SamplingConfig(top_k=1), gen) == 1).all()
    top2 = sample_logits(logits, SamplingConfig(top_k=2), gen)
    assert set(top2.tolist()) == {1, 3}
    # nucleus: p(1)=0.64, p(3)=0.24 → top_p=0.8 keeps exactly {1, 3}
    assert set(sample_logits(logits, SamplingConfig(top_p=0.8), gen).tolist()) == {1, 3}
    assert set(sample_logits(logits, SamplingConfig(top_p=0.5), gen).tolist()) == {1}
    draws = sample_logits(logits, SamplingConfig(temperature=1.0), gen)
    freq = torch.bincount(draws, minlength=5).float() / 2000
    torch.testing.assert_close(freq, logits[0].softmax(0), atol=0.03, rtol=0)
    hot = sample_logits(logits, SamplingConfig(temperature=100.0), gen)
    assert torch.bincount(hot, minlength=5).min() > 300  # near uniform


def test_guide_math():
    cond, uncond = torch.randn(3, 7), torch.randn(3, 7)
    both = torch.cat([cond, uncond])
    assert torch.equal(guide(both, 3, 1.0), cond)
    torch.testing.assert_close(guide(both, 3, 0.0), uncond)
    torch.testing.assert_close(guide(both, 3, 3.0), uncond + 3.0 * (cond - uncond))


def _uncached_greedy(model, cond, prefix, n_new):
    seq = prefix
    for _ in range(n_new):  # one fresh forward over the whole context per token
        logits = model.prefill(cond, seq).logits[:, -1]
        seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], dim=1)
    return seq[:, prefix.shape[1]:]


@pytest.mark.parametrize("positions", ["rope3d", "learned"])
def test_kv_cache_sampling_equals_uncached_greedy(positions):
    model = _model(positions=positions)
    labels = torch.tensor([0, 7, 11])
    out = generate(model, 3, 3, SamplingConfig(temperature=0.0), labels=labels)
    assert out.shape == (3, 3, 2, 2)
    with torch.no_grad():
        ref = _uncached_greedy(model, model.condition(labels, force_drop=False), torch.zeros(3, 0, dtype=torch.long), 12)
    assert torch.equal(out.flatten(1), ref)
    assert len(set(map(tuple, ref.tolist()))) > 1  # the class token steers the rollout


@pytest.mark.parametrize("mode,context", [("sliding", None), ("sliding", 1), ("blockwise", None)])
@pytest.mark.parametrize("positions", ["rope3d", "learned"])
def test_rollout_beyond_training_length_equals_reference(mode, context, positions):
    model = _model(positions=positions)
    cfg = SamplingConfig(temperature=0.0, mode=mode, context_frames=context)
    labels = torch.tensor([2, 5])
    prompt = torch.randint(0, VOCAB, (2, 1, 2, 2), generator=torch.Generator().manual_seed(0))
    out = generate(model, 2, 7, cfg, labels=labels, prompt_tokens=prompt)
    assert out.shape == (2, 7, 2, 2) and torch.equal(out[:, :1], prompt)
    keep, step = context_schedule(cfg, 3)
    assert (keep, step) == {("sliding", None): (2, 1), ("sliding", 1): (1, 1), ("blockwise", None): (1, 2)}[(mode, context)]
    with torch.no_grad():
        cond = model.condition(labels, force_drop=False)
        seq = prompt.flatten(1)
        seq = torch.cat([seq, _uncached_greedy(model, cond, seq, 8)], 1)  # first 3 frames: full context
        while seq.shape[1] < 28:  # then: last `keep` frames re-prefilled from position 0, `step` new frames
            ctx = seq[:, seq.shape[1] - keep * 4:]
            seq = torch.cat([seq, _uncached_greedy(model, cond, ctx, min(step * 4, 28 - seq.shape[1]))], 1)
    assert torch.equal(out.flatten(1), seq)


def test_cfg_scale_one_equals_conditional_sampling():
    model = _model()
    labels = torch.tensor([1, 4, 9])
    cfg = SamplingConfig(temperature=1.0, top_k=8, cfg_scale=1.0)
    plain = generate(model, 3, 3, cfg, labels=labels, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():  # the batched cond+uncond path, guided at scale 1
        cond, uncond = model.condition(labels, force_drop=False), model.condition(labels, force_drop=True)
        guided = _decode(model, cond, uncond, torch.zeros(3, 0, dtype=torch.long), 12, cfg,
                         torch.Generator().manual_seed(7))
    assert torch.equal(plain.flatten(1), guided)
    strong = generate(model, 3, 3, SamplingConfig(temperature=1.0, top_k=8, cfg_scale=4.0), labels=labels,
                      generator=torch.Generator().manual_seed(7))
    assert strong.shape == plain.shape and not torch.equal(strong, plain)


def test_sampling_is_reproducible_and_restores_mode():
    model = _model(conditioning="text", text_tokens=2).train()
    caps = ["a square moves left", "a circle moves up"]
    cfg = SamplingConfig(temperature=1.0, top_p=0.9, cfg_scale=2.0)
    a = generate(model, 2, 4, cfg, captions=caps, generator=torch.Generator().manual_seed(3))
    b = generate(model, 2, 4, cfg, captions=caps, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (2, 4, 2, 2) and model.training
    assert int(a.min()) >= 0 and int(a.max()) < VOCAB


def test_sampling_refusals():
    model = _model()
    with pytest.raises(ValueError, match="context_frames"):
        generate(model, 1, 5, SamplingConfig(context_frames=3), labels=torch.tensor([0]))
    with pytest.raises(ValueError, match="prompt_tokens"):
        generate(model, 2, 3, SamplingConfig(), labels=torch.tensor([0, 1]), prompt_tokens=torch.zeros(2, 1, 3, 3))
    with pytest.raises(ValueError, match="conditional model"):
        generate(_model(conditioning="none"), 1, 2, SamplingConfig(cfg_scale=2.0))
    assert generate(_model(conditioning="none"), 2, 2, SamplingConfig()).shape == (2, 2, 2, 2)


def _record_context(model):
    """Wrap prefill / forward_with_cache / decode_step to record the video positions each call attends to."""
    seen = []
    prefill, step, decode_step, prefill_into = model.prefill, model.forward_with_cache, model.decode_step, model.prefill_into

    def rec_prefill(cond, video):
        seen.append(video.shape[1])
        return prefill(cond, video)

    def rec_step(video, start, cache, **kw):
        seen.append(start + video.shape[1])
        return step(video, start, cache, **kw)

    def rec_decode_step(token, slot, cache, keys=None):
        seen.append(int(slot) - cache.cond_len + 1)  # the fed token's video index + 1, as for rec_step
        return decode_step(token, slot, cache, keys)

    def rec_prefill_into(cond, video, cache):
        seen.append(video.shape[1])
        return prefill_into(cond, video, cache)

    model.prefill, model.forward_with_cache = rec_prefill, rec_step
    model.decode_step, model.prefill_into = rec_decode_step, rec_prefill_into
    return seen


@pytest.mark.parametrize("num_latent", [5, 10, 20])  # the evaluation length and its 2x / 4x rollouts
def test_fewer_frames_sampling_never_attends_past_the_trained_length(num_latent):
    from arvid_ray.config import ExperimentConfig
    from arvid_ray.sampling import trained_length

    cfg = ExperimentConfig().replace(**{"data.num_frames": 17, "data.resolution": 16, "objective.kind": "fewer_frames",
                                        "fewer_frames.num_frames": 2, "sampling.mode": "blockwise"})
    assert trained_length(cfg) == 2 and cfg.latent_frames() == 5
    torch.manual_seed(0)
    model = build_model(cfg.model, VOCAB, cfg.latent_shape()).eval()  # built for 5 latent frames of 2 x 2
    seen = _record_context(model)
    out = generate(model, 2, num_latent, cfg.sampling, labels=torch.tensor([1, 2]), trained_frames=trained_length(cfg),
                   generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, num_latent, 2, 2)
    assert max(seen) == 2 * 4 - 1  # the last input of a 2-frame block: never more than the trained 2 frames
    seen.clear()  # the model's grid alone would have decoded the first 5 frames in one pass
    generate(model, 2, num_latent, cfg.sampling, labels=torch.tensor([1, 2]))
    assert max(seen) == 5 * 4 - 1


def test_blockwise_from_the_first_block_equals_reference():
    model = _model()  # grid of 3 latent frames, trained on 2: blocks of 1 frame, each on the previous one
    labels = torch.tensor([2, 5])
    out = generate(model, 2, 5, SamplingConfig(temperature=0.0, mode="blockwise"), labels=labels, trained_frames=2)
    with torch.no_grad():
        cond = model.condition(labels, force_drop=False)
        seq = _uncached_greedy(model, cond, torch.zeros(2, 0, dtype=torch.long), 8)  # first block: 2 frames
        while seq.shape[1] < 20:
            seq = torch.cat([seq, _uncached_greedy(model, cond, seq[:, -4:], 4)], 1)
    assert torch.equal(out.flatten(1), seq)
    with pytest.raises(ValueError, match="trained_frames"):
        generate(model, 1, 2, SamplingConfig(), labels=torch.tensor([0]), trained_frames=4)


def test_shuffle_frames_control_permutes_each_videos_frames():
    model = _model()
    labels = torch.tensor([0, 3, 6, 9])
    plain = generate(model, 4, 3, SamplingConfig(temperature=0.0), labels=labels)
    shuffled = generate(model, 4, 3, SamplingConfig(temperature=0.0, shuffle_frames=True), labels=labels,
                        generator=torch.Generator().manual_seed(1))
    for a, b in zip(plain, shuffled):  # the same frames, in another order
        assert sorted(map(tuple, a.flatten(1).tolist())) == sorted(map(tuple, b.flatten(1).tolist()))
    assert not torch.equal(plain, shuffled)


def _reference_decode(model, cond, uncond, prefix, n_new, cfg, generator):
    """The sampler before issue 24: a cache that grows by concatenation, one eager step per token."""
    batch = prefix.shape[0]
    if uncond is not None:
        cond, prefix = torch.cat([cond, uncond]), torch.cat([prefix, prefix])
    out, new = model.prefill(cond, prefix), []
    for i in range(n_new):
        logits = out.logits[:, -1] if uncond is None else guide(out.logits[:, -1], batch, cfg.cfg_scale)
        new.append(sample_logits(logits, cfg, generator))
        if i + 1 < n_new:
            step_in = new[-1] if uncond is None else torch.cat([new[-1], new[-1]])
            out = model.forward_with_cache(step_in[:, None], prefix.shape[1] + i, out.cache)
    return torch.stack(new, dim=1)


@pytest.mark.parametrize("positions", ["rope3d", "learned"])
@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_static_cache_sampler_draws_the_reference_samples(positions, cfg_scale):
    """Same seed → the same sampled tokens as the old concatenating loop (temperature, top-k/p, CFG), from an
    empty prefix and after a prompt."""
    model = _model(positions=positions)
    labels = torch.tensor([1, 4, 9, 2])
    cfg = SamplingConfig(temperature=1.0, top_k=12, top_p=0.95, cfg_scale=cfg_scale)
    with torch.no_grad():
        cond = model.condition(labels, force_drop=False)
        uncond = None if cfg_scale == 1.0 else model.condition(labels, force_drop=True)
        for m in (0, 3):
            prefix = torch.randint(0, VOCAB, (4, m), generator=torch.Generator().manual_seed(m))
            ref = _reference_decode(model, cond, uncond, prefix, 12 - m, cfg, torch.Generator().manual_seed(5))
            new = _decode(model, cond, uncond, prefix, 12 - m, cfg, torch.Generator().manual_seed(5))
            assert torch.equal(new, ref)
    assert len(set(map(tuple, ref.tolist()))) > 1


def test_bf16_decode_on_cpu_when_asked():
    model = _model()
    labels = torch.tensor([0, 7, 11])
    cfg = SamplingConfig(temperature=0.0, precision="bf16")
    with torch.no_grad():
        from arvid_ray.sampling import _Decoder

        decoder = _Decoder(model, model.condition(labels, force_drop=False), None, 12, cfg)
        assert decoder.dtype == torch.bfloat16 and decoder.cache.k[0].dtype == torch.bfloat16
        out = decoder(torch.zeros(3, 0, dtype=torch.long), 12, None)
        ref = _uncached_greedy(model, model.condition(labels, force_drop=False), torch.zeros(3, 0, dtype=torch.long), 12)
    assert model.tok_emb.weight.dtype == torch.float32  # autocast: the model itself is untouched
    assert (out == ref).float().mean() >= 0.75  # bf16 rounding may flip a near-tie, not the rollout


def test_one_decoder_serves_every_reprefill_and_grows_when_a_context_is_longer():
    """generate reuses one static cache across re-prefills: stale slots of a longer earlier call must never be
    read, and a context longer than the cache reallocates it instead of writing past its end."""
    from arvid_ray.sampling import _Decoder

    model = _model()
    labels = torch.tensor([3, 8])
    with torch.no_grad():
        cond = model.condition(labels, force_drop=False)
        decoder = _Decoder(model, cond, None, 8, SamplingConfig(temperature=0.0))
        first = decoder(torch.zeros(2, 0, dtype=torch.long), 8, None)  # fills slots of 8 video tokens
        prompt = first[:, 4:6]  # a shorter context: slots past it still hold the first call's keys
        assert torch.equal(decoder(prompt, 3, None), _uncached_greedy(model, cond, prompt, 3))
        longer = torch.cat([first, first[:, :2]], 1)  # 10 + 2 tokens > the 8-token cache
        assert torch.equal(decoder(longer, 2, None), _uncached_greedy(model, cond, longer, 2))
        assert decoder.cache.max_len == cond.shape[1] + 12
