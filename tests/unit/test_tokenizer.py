"""Video tokenizer: shapes, exact causality, FSQ indexing, checkpoints (own + VQ), learning, shipped weights."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from arvid_ray.config import SynthConfig, TokenizerConfig
from arvid_ray.tokenizer import (
    ConvTokenizer,
    TokenizerArch,
    VideoTokenizer,
    arch_from_config,
    builtin_weights_path,
    load_tokenizer,
)
from arvid_ray.tokenizer.autoencoder import CausalVideoAutoencoder
from arvid_ray.tokenizer.fsq import FSQ
from arvid_ray.tokenizer.pretrained import CheckpointError, save_checkpoint

TINY = TokenizerConfig(name="fsq", channels=8)


@pytest.fixture(scope="module")
def tiny() -> ConvTokenizer:
    return load_tokenizer(TINY)


def _frames(b: int, t: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (b, t, size, size, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------- FSQ
def test_fsq_index_code_roundtrip_is_exact_and_complete():
    fsq = FSQ([8, 5, 5, 5])
    ids = torch.arange(fsq.codebook_size)
    codes = fsq.indices_to_codes(ids)  # (1000, 4)
    assert codes.abs().max() <= 1.0
    assert torch.equal(fsq.codes_to_indices(codes), ids)
    assert len({tuple(c.tolist()) for c in codes}) == 1000
    z = torch.randn(64, 4) * 3
    q, idx = fsq(z)
    assert torch.equal(fsq.indices_to_codes(idx), q)
    for d, level in enumerate([8, 5, 5, 5]):  # every channel uses exactly its number of levels
        assert len(torch.unique(fsq(torch.linspace(-20, 20, 2001).unsqueeze(1).repeat(1, 4))[0][:, d])) == level


def test_fsq_straight_through_gradient():
    fsq = FSQ([5, 5])
    z = torch.zeros(3, 2, requires_grad=True)
    fsq(z)[0].sum().backward()
    assert z.grad is not None and (z.grad > 0).all()


def test_fsq_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 25\)"):
        FSQ([5, 5]).indices_to_codes(torch.tensor([25]))


# ------------------------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("frames, latent", [(17, 5), (33, 9), (1, 1)])
def test_roundtrip_shapes(tiny, frames, latent):
    x = _frames(2, frames)
    ids = tiny.encode(x)
    assert ids.dtype == torch.int64 and tuple(ids.shape) == (2, latent, 4, 4)
    assert tiny.latent_shape(frames, 32, 32) == (latent, 4, 4)
    assert 0 <= int(ids.min()) and int(ids.max()) < tiny.vocab_size == 1000
    out = tiny.decode(ids)
    assert out.dtype == torch.uint8 and tuple(out.shape) == (2, frames, 32, 32, 3)
    assert torch.equal(tiny.encode(torch.from_numpy(x)), ids)  # numpy and torch inputs agree


def test_spatial_4x_gives_16x16_tokens_at_64():
    tok = load_tokenizer(TokenizerConfig(name="fsq", channels=8, spatial_down=4))
    assert tok.latent_shape(17, 64, 64) == (5, 16, 16)
    assert tuple(tok.encode(_frames(1, 5, 64)).shape) == (1, 2, 16, 16)


def test_protocol_and_deterministic_identity(tiny):
    assert isinstance(tiny, VideoTokenizer)
    again = load_tokenizer(TINY)
    assert again.sha256 == tiny.sha256 and again.id == tiny.id and len(tiny.sha256) == 64
    other = load_tokenizer(TokenizerConfig(name="fsq", channels=16))
    assert other.sha256 != tiny.sha256
    assert tiny.to("cpu") is tiny


@pytest.mark.parametrize("bad, exc, match", [
    (np.zeros((1, 16, 32, 32, 3), np.uint8), ValueError, r"T=16 is not 1 \+ 4k"),
    (np.zeros((1, 17, 30, 32, 3), np.uint8), ValueError, "divisible by spatial_down"),
    (np.zeros((17, 32, 32, 3), np.uint8), ValueError, r"\[B, T, H, W, 3\]"),
    (np.zeros((1, 17, 32, 32, 3), np.float32), TypeError, "uint8"),
])
def test_encode_rejects_bad_input(tiny, bad, exc, match):
    with pytest.raises(exc, match=match):
        tiny.encode(bad)


# ------------------------------------------------------------------------------------------- causality
@pytest.mark.parametrize("k", [1, 4, 5, 8, 9, 16])
def test_encoder_is_exactly_causal(tiny, k):
    """Changing frame k changes no token of latent frames that end before it (latent j covers frames <= 4j)."""
    x = _frames(2, 17, seed=1)
    y = x.copy()
    y[:, k:] = _frames(2, 17 - k, seed=2)
    first_affected = math.ceil(k / 4)
    a, b = tiny.encode(x), tiny.encode(y)
    assert torch.equal(a[:, :first_affected], b[:, :first_affected])
    assert not torch.equal(a[:, first_affected:], b[:, first_affected:])  # and the change is seen


def test_group_norm_variant_is_causal_too():
    arch = TokenizerArch(channels=8, norm="group")
    tok = ConvTokenizer(CausalVideoAutoencoder(arch), id="group")
    x = _frames(1, 9, seed=4)
    y = x.copy()
    y[:, 5:] = 0
    assert torch.equal(tok.encode(x)[:, :2], tok.encode(y)[:, :2])
    assert TokenizerArch.from_dict(arch.to_dict()) == arch


@pytest.mark.parametrize("j", [1, 2, 4])
def test_decoder_is_exactly_causal(tiny, j):
    """Changing latent frame j changes no decoded frame before 4j - 3 (its first frame)."""
    ids = torch.from_numpy(np.random.default_rng(3).integers(0, 1000, (1, 5, 4, 4)))
    other = ids.clone()
    other[:, j:] = (other[:, j:] + 7) % 1000
    model = tiny.model
    with torch.no_grad():
        a, b = model.decode_indices(ids), model.decode_indices(other)  # (B, 3, 17, H, W)
    assert torch.equal(a[:, :, : 4 * j - 3], b[:, :, : 4 * j - 3])
    assert not torch.equal(a[:, :, 4 * j - 3:], b[:, :, 4 * j - 3:])


# ------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_roundtrip_via_load_tokenizer(tiny, tmp_path):
    path = save_checkpoint(tiny.model, tmp_path / "tok.pt", meta={"note": "test"})
    loaded = load_tokenizer(TokenizerConfig(name=str(path)))
    assert loaded.sha256 == tiny.sha256
    x = _frames(1, 9)
    assert torch.equal(loaded.encode(x), tiny.encode(x))
    # a bare state dict + JSON sidecar, and a directory holding tokenizer.pt
    torch.save(tiny.model.state_dict(), tmp_path / "bare.pt")
    (tmp_path / "bare.json").write_text(json.dumps({"arch": tiny.arch.to_dict()}))
    assert load_tokenizer(TokenizerConfig(name=str(tmp_path / "bare.pt"))).sha256 == tiny.sha256
    save_checkpoint(tiny.model, tmp_path / "dir" / "tokenizer.pt")
    assert load_tokenizer(TokenizerConfig(name=str(tmp_path / "dir"))).sha256 == tiny.sha256


def test_corrupt_checkpoints_give_clear_errors(tiny, tmp_path):
    good = save_checkpoint(tiny.model, tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    pickled = tmp_path / "pickled.pt"
    torch.save({"state_dict": {}, "evil": TokenizerArch()}, pickled)  # arbitrary object: refused by weights_only
    for path in (truncated, garbage, pickled):
        with pytest.raises(CheckpointError, match=f"'{path}' cannot be read safely"):
            load_tokenizer(TokenizerConfig(name=str(path)))
    with pytest.raises(CheckpointError, match="bare state dict.*bare.json"):
        torch.save(tiny.model.state_dict(), tmp_path / "bare.pt")
        load_tokenizer(TokenizerConfig(name=str(tmp_path / "bare.pt")))
    with pytest.raises(FileNotFoundError, match="neither 'builtin', 'fsq' nor an existing"):
        load_tokenizer(TokenizerConfig(name=str(tmp_path / "missing.pt")))


def test_mismatched_checkpoint_names_file_and_problem(tiny, tmp_path):
    wider = CausalVideoAutoencoder(arch_from_config(TokenizerConfig(channels=16)))
    payload = torch.load(save_checkpoint(wider, tmp_path / "w.pt"), weights_only=True)
    payload["arch"] = tiny.arch.to_dict()  # weights of a 16-channel model, architecture of an 8-channel one
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match=r"'.*mismatch.pt' does not match its architecture: .*shape mismatch"):
        load_tokenizer(TokenizerConfig(name=str(tmp_path / "mismatch.pt")))
    del payload["state_dict"]["decoder.conv_out.conv.bias"]
    payload["arch"] = wider.arch.to_dict()
    torch.save(payload, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="1 missing key"):
        load_tokenizer(TokenizerConfig(name=str(tmp_path / "missing.pt")))
    payload["arch"] = {**wider.arch.to_dict(), "spatial_down": 3}
    torch.save(payload, tmp_path / "badarch.pt")
    with pytest.raises(CheckpointError, match="invalid architecture.*power of two"):
        load_tokenizer(TokenizerConfig(name=str(tmp_path / "badarch.pt")))


def _external_vq_state(arch: TokenizerArch, num_codes: int, dim: int, enc_dim: int) -> dict[str, torch.Tensor]:
    """A taming-VQGAN-like state dict: DDP prefix, quantize.embedding, 2D 1x1 quant convs, EMA stats."""
    from arvid_ray.tokenizer.autoencoder import Decoder, Encoder

    torch.manual_seed(0)
    state = {f"module.encoder.{k}": v for k, v in Encoder(arch, enc_dim).state_dict().items()}
    state.update({f"module.decoder.{k}": v for k, v in Decoder(arch, enc_dim).state_dict().items()})
    state["module.quantize.embedding.weight"] = torch.randn(num_codes, dim)
    state["module.quantize.cluster_size"] = torch.ones(num_codes)  # EMA statistic: ignored
    state["module.quant_conv.weight"] = torch.randn(dim, enc_dim, 1, 1) * 0.3
    state["module.quant_conv.bias"] = torch.zeros(dim)
    state["module.post_quant_conv.weight"] = torch.randn(enc_dim, dim, 1, 1) * 0.3
    state["module.post_quant_conv.bias"] = torch.zeros(enc_dim)
    return state


def test_external_vq_checkpoint_keys_are_mapped(tmp_path):
    arch = arch_from_config(TINY)
    state = _external_vq_state(arch, num_codes=64, dim=6, enc_dim=5)
    torch.save({"state_dict": state}, tmp_path / "vqgan.ckpt")
    (tmp_path / "vqgan.json").write_text(json.dumps({"quantizer": "vq", "arch": arch.to_dict()}))
    tok = load_tokenizer(TokenizerConfig(name=str(tmp_path / "vqgan.ckpt")))
    assert tok.vocab_size == 64 and tok.id.startswith("local:vq-vqgan")
    x = _frames(1, 5)
    ids = tok.encode(x)
    assert tuple(ids.shape) == (1, 2, 4, 4) and tuple(tok.decode(ids).shape) == (1, 5, 32, 32, 3)
    # nearest neighbour in the external codebook: recompute from the encoder output by hand
    with torch.no_grad():
        from arvid_ray.tokenizer.codec import frames_to_tensor

        z = tok.model.pre_quant(tok.model.encoder(frames_to_tensor(x)))  # (1, 6, 2, 4, 4)
        flat = z.permute(0, 2, 3, 4, 1).reshape(-1, 6)
        expect = torch.cdist(flat, state["module.quantize.embedding.weight"]).argmin(1)
    assert torch.equal(ids.flatten(), expect)
    state["module.unknown_head.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "vqgan.ckpt")
    with pytest.raises(CheckpointError, match="no mapping in arvid_ray.tokenizer.vq.KEY_MAP.*unknown_head"):
        load_tokenizer(TokenizerConfig(name=str(tmp_path / "vqgan.ckpt")))


# ------------------------------------------------------------------------------------------- learning
def test_tiny_tokenizer_learns_synthetic_clips():
    """200 steps on 12 tiny synthetic clips lift PSNR far above the untrained network (~7 dB -> ~18 dB)."""
    from arvid_ray.tokenizer.clips import synthetic_clips
    from arvid_ray.tokenizer.training import TrainSettings, reconstruction_metrics, train_autoencoder

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic and cheap on a shared 2-core CI machine (~15 s of CPU)
    try:
        clips = synthetic_clips(SynthConfig(num_videos=12, resolution=32, num_frames=9), ("train", "val", "test"))
        arch = TokenizerArch(fsq_levels=(8, 5, 5, 5), spatial_down=4, channels=8)
        untrained = load_tokenizer(TokenizerConfig(name="fsq", channels=8, spatial_down=4))
        before = reconstruction_metrics(untrained, clips)
        result = train_autoencoder(arch, clips, TrainSettings(steps=200, lr=3e-3, batch_size=4, clip_frames=5,
                                                              warmup_steps=20, log_every=50))
        after = reconstruction_metrics(ConvTokenizer(result.model, id="t"), clips)
    finally:
        torch.set_num_threads(threads)
    assert before["psnr"] < 10, before
    assert after["psnr"] > 15, after
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_cli_train_tokenizer_writes_a_loadable_checkpoint(tmp_path):
    from arvid_ray.cli import main

    out = tmp_path / "tok.pt"
    code = main(["train-tokenizer", str(out), "synth.num_videos=20", "synth.resolution=32", "synth.num_frames=9",
                 "data.resolution=32", "data.num_frames=5", "tokenizer.channels=8", "tokenizer.train_steps=3",
                 "tokenizer.train_batch_size=2", f"experiment.workdir={tmp_path}"])
    assert code == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["settings"]["steps"] == 3 and "psnr" in record["metrics"]
    assert load_tokenizer(TokenizerConfig(name=str(out))).latent_shape(5, 32, 32) == (2, 4, 4)


# ------------------------------------------------------------------------------------------- shipped weights
@pytest.mark.skipif(not builtin_weights_path().is_file(), reason="embedded weights not produced yet")
def test_builtin_weights_reach_psnr_and_usage_bars():
    """The shipped weights still reconstruct held-out synthetic clips (val + test, 17 frames, 64x64).

    The issue's bars: PSNR >= 26 dB at 64x64 and >= 50% of the codes used (the shipped run reached
    26.92 dB and 70.3%, see tokenizer_builtin.json).
    """
    from arvid_ray.tokenizer.clips import synthetic_clips
    from arvid_ray.tokenizer.training import reconstruction_metrics

    record = json.loads(builtin_weights_path().with_suffix(".json").read_text())
    assert record["seed"] == 0 and record["script"] == "experiments/train_embedded_tokenizer.py"
    tok = load_tokenizer(TokenizerConfig(name="builtin"))
    assert tok.latent_shape(17, 64, 64) == (5, 8, 8) and tok.id.startswith("builtin:")
    held_out = synthetic_clips(SynthConfig(num_videos=512, seed=0), ("val", "test"), limit=64)[:, :17]
    metrics = reconstruction_metrics(tok, held_out)
    assert metrics["psnr"] >= 26.0, metrics
    assert metrics["codebook_usage"] >= 0.50, metrics
    assert metrics["psnr"] >= record["metrics"]["psnr"] - 0.1, (metrics, record["metrics"])
