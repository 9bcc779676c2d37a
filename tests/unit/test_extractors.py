"""Feature extractors: the I3D TorchScript loader (scripted stand-in) and the shipped SynthC3D weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arvid_ray.config import SynthConfig
from arvid_ray.metrics.extractors import (
    FeatureExtractor,
    I3DExtractor,
    SynthC3DExtractor,
    file_sha256,
    load_extractor,
    synthc3d_weights_path,
)
from arvid_ray.metrics.frechet import frechet_from_features


class _I3DStandIn(nn.Module):
    """Same call signature as the StyleGAN-V i3d_torchscript.pt; features expose what it was given."""

    def forward(self, x: Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False) -> Tensor:
        if rescale:
            x = x / 127.5 - 1.0
        if resize:
            x = F.interpolate(x, size=(x.shape[2], 224, 224), mode="trilinear", align_corners=False)
        b = x.shape[0]
        shape = torch.tensor([float(x.shape[1]), float(x.shape[2]), float(x.shape[3]), float(x.shape[4])])
        feats = torch.cat([x.flatten(1).amin(1, keepdim=True), x.flatten(1).amax(1, keepdim=True),
                           x.mean(dim=(2, 3, 4)), shape.expand(b, 4)], dim=1)  # (B, 9)
        return feats if return_features else feats.softmax(-1)


class _WrongSignature(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3, 4))


@pytest.fixture()
def i3d_file(tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(_I3DStandIn()).save(str(path))
    return path


def test_i3d_loader_prepares_clips_like_stylegan_v(i3d_file, monkeypatch):
    monkeypatch.setenv("ARVID_I3D_PATH", str(i3d_file))
    ext = load_extractor("i3d")
    assert isinstance(ext, FeatureExtractor) and isinstance(ext, I3DExtractor)
    assert ext.sha256 == file_sha256(i3d_file) and ext.id.startswith("i3d-")
    videos = np.random.default_rng(0).integers(0, 256, (3, 20, 64, 48, 3), dtype=np.uint8)
    videos[0] = 0
    videos[1] = 255
    feats = ext(videos)
    assert feats.shape == (3, 9) and feats.dtype == np.float64
    assert feats[0, 0] == pytest.approx(-1.0) and feats[1, 1] == pytest.approx(1.0)  # [0, 255] → [-1, 1]
    np.testing.assert_allclose(feats[:, 5:], [[3, 16, 224, 224]] * 3)  # 16 frames, resized to 224
    with pytest.raises(ValueError, match="at least 16 frames"):
        ext(videos[:, :8])


def test_i3d_refuses_missing_wrong_or_misshaped_files(tmp_path, monkeypatch):
    monkeypatch.delenv("ARVID_I3D_PATH", raising=False)
    with pytest.raises(FileNotFoundError, match="ARVID_I3D_PATH"):
        load_extractor("i3d")
    with pytest.raises(FileNotFoundError, match="i3d_torchscript.pt"):
        load_extractor("i3d", tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a TorchScript archive")
    with pytest.raises(ValueError, match="not a TorchScript file.*never downloads"):
        load_extractor("i3d", junk)
    wrong = tmp_path / "wrong.pt"
    torch.jit.script(_WrongSignature()).save(str(wrong))
    with pytest.raises(ValueError, match="call signature"):
        load_extractor("i3d", wrong)
    with pytest.raises(ValueError, match="unknown feature extractor"):
        load_extractor("inception")


# ------------------------------------------------------------------------------------ SynthC3D
def _real_clips(n: int, frames: int = 17):
    from arvid_ray.video.synthetic import render_video

    cfg = SynthConfig(num_videos=n, seed=7)  # a seed the extractor was not trained on
    videos = [render_video(i, cfg) for i in range(n)]
    return np.stack([v.frames[:frames] for v in videos]), np.array([v.label for v in videos])


@pytest.fixture(scope="module")
def synthc3d():
    return SynthC3DExtractor()


def test_synthc3d_weights_are_pinned_and_reproducible_metadata(synthc3d):
    meta = json.loads(synthc3d_weights_path().with_suffix(".json").read_text())
    assert synthc3d.sha256 == meta["sha256"] == file_sha256(synthc3d_weights_path())
    assert {"seed", "args", "held_out"} <= set(meta)
    assert synthc3d_weights_path().stat().st_size < 2_000_000  # small enough to ship in the package
    assert meta["held_out"]["class_acc"] > 0.5  # chance is 1/16


def test_synthc3d_class_head_reads_motion_on_unseen_videos(synthc3d):
    clips, labels = _real_clips(64)
    pred = synthc3d.predict_class(clips)
    direction_acc = float((pred % 8 == labels % 8).mean())  # the part only readable from motion
    acc = float((pred == labels).mean())
    assert direction_acc > 0.8, f"held-out direction accuracy {direction_acc:.2f} (chance 0.125)"
    assert acc > 0.4, f"held-out class accuracy {acc:.2f} (chance 0.06)"
    reversed_pred = synthc3d.predict_class(clips[:, ::-1].copy())
    # a reversed clip shows the opposite motion, so the prompted direction is lost — except where the
    # object bounced off a wall inside the clip (reversal then shows the initial heading again)
    assert float((reversed_pred % 8 == labels % 8).mean()) < direction_acc - 0.3


def _damage(clips: np.ndarray, kind: str, rng) -> np.ndarray:
    t = clips.shape[1]
    if kind == "shuffled":
        return np.stack([c[rng.permutation(t)] for c in clips])
    if kind == "frozen":
        return np.repeat(clips[:, :1], t, axis=1)
    if kind == "reversed_mid":  # the object turns back half-way, with no wall to bounce off
        k = t // 2
        return clips[:, k - np.abs(np.arange(t) - k)]
    if kind == "blur":
        import cv2

        return np.stack([[cv2.GaussianBlur(f, (7, 7), 2.0) for f in c] for c in clips])
    if kind == "noise":
        return np.clip(clips.astype(np.int16) + rng.normal(0, 12, clips.shape), 0, 255).astype(np.uint8)
    raise ValueError(kind)


def test_synthc3d_distance_rises_under_temporal_and_appearance_damage(synthc3d):
    clips, _ = _real_clips(96)
    a, b = clips[:48], clips[48:]
    fa = synthc3d(a)
    floor = frechet_from_features(fa, synthc3d(b))
    rng = np.random.default_rng(0)
    scores = {k: frechet_from_features(fa, synthc3d(_damage(b, k, rng)))
              for k in ("shuffled", "frozen", "reversed_mid", "blur", "noise")}
    for kind in ("shuffled", "frozen", "reversed_mid", "blur", "noise"):
        assert scores[kind] > 2 * floor, f"{kind}: FD {scores[kind]:.3g} vs real-vs-real floor {floor:.3g}"
    # temporal damage is not just another appearance change: each scores above blurring the same clips
    for kind in ("shuffled", "frozen", "reversed_mid"):
        assert scores[kind] > scores["blur"], f"{kind}: FD {scores[kind]:.3g} <= blur {scores['blur']:.3g}"
