"""Decode and probe: frames match the ffmpeg CLI across codecs/containers; windows; resize; rejects."""

from __future__ import annotations

import numpy as np
import pytest
from video_fixtures import FFMPEG_CASES, ffmpeg, ffmpeg_rgb, make_video, write_mixed_folder

from arvid_ray.video.decode import decode_clip, resize_crop_shape
from arvid_ray.video.probe import Rejected, VideoInfo, probe


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("ffvideos")
    paths = {case: make_video(root / f"{case}.{spec[0]}", case) for case, spec in FFMPEG_CASES.items()}
    rotated = root / "rot90.mp4"
    ffmpeg("-i", str(paths["h264_mp4"]), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated))
    paths["rot90_mp4"] = rotated
    return paths


@pytest.mark.parametrize("case", [*FFMPEG_CASES, "rot90_mp4"])
def test_decode_matches_ffmpeg_cli(videos, case):
    path = videos[case]
    ours = decode_clip(path)
    assert ours.dtype == np.uint8 and ours.ndim == 4 and ours.shape[-1] == 3
    ref = ffmpeg_rgb(path, width=ours.shape[2], height=ours.shape[1])
    assert ours.shape == ref.shape, f"{case}: {ours.shape} vs ffmpeg {ref.shape}"
    mae = np.abs(ours.astype(np.int16) - ref.astype(np.int16)).mean()
    assert mae <= 2.0, f"{case}: MAE {mae:.2f} vs ffmpeg CLI"
    assert decode_clip(path.read_bytes()).shape == ours.shape  # bytes in, same frames out
    info = probe(path)
    assert isinstance(info, VideoInfo) and info.num_frames == len(ours)
    assert (info.height, info.width) == ours.shape[1:3]


def test_odd_size_and_rotation_shapes(videos):
    assert decode_clip(videos["h264_yuv444_odd_mkv"]).shape[1:3] == (47, 63)
    assert decode_clip(videos["vp9_odd_webm"]).shape[1:3] == (49, 65)
    assert decode_clip(videos["rot90_mp4"]).shape[1:3] == (64, 48)
    assert probe(videos["rot90_mp4"]).rotation in (90, 270)
    assert probe(videos["h264_audio_mov"]).has_audio


def test_window_and_stride(videos):
    full = decode_clip(videos["h264_mp4"])
    clip = decode_clip(videos["h264_mp4"], start=2, num_frames=3, stride=2)
    np.testing.assert_array_equal(clip, full[[2, 4, 6]])
    np.testing.assert_array_equal(decode_clip(videos["h264_mp4"], start=7), full[7:])
    with pytest.raises(ValueError, match="too short"):
        decode_clip(videos["h264_mp4"], start=5, num_frames=4, stride=2)
    with pytest.raises(ValueError, match="stride"):
        decode_clip(videos["h264_mp4"], stride=0)


def test_resize_and_center_crop(videos):
    assert resize_crop_shape(48, 64, 32) == (32, 43, 32, 32)
    assert resize_crop_shape(48, 64, (16, 40)) == (30, 40, 16, 40)
    clip = decode_clip(videos["h264_mp4"], num_frames=2, size=32)
    assert clip.shape == (2, 32, 32, 3)
    full = decode_clip(videos["h264_mp4"], num_frames=2).astype(np.float32)
    # downscaling by 1.5 then cropping the centre ≈ area-averaging the centre of the full frame
    ref = full[:, :, 8:56].reshape(2, 16, 3, 16, 3, 3).mean((2, 4))  # (T, 16, 16, 3) from a 48x48 centre
    small = decode_clip(videos["h264_mp4"], num_frames=2, size=16).astype(np.float32)
    assert np.abs(small - ref).mean() < 12
    rot = decode_clip(videos["rot90_mp4"], num_frames=1, size=(40, 20))
    assert rot.shape == (1, 40, 20, 3)


def test_probe_rejects_with_reasons(tmp_path):
    expected = write_mixed_folder(tmp_path)
    for rel, code in expected.items():
        result = probe(tmp_path / rel, min_frames=8)
        if code is None:
            assert isinstance(result, VideoInfo), f"{rel}: {result}"
        else:
            assert isinstance(result, Rejected) and result.code == code, f"{rel}: expected {code}, got {result}"
            assert str(result).startswith(code + ": ") and len(str(result)) > len(code) + 5
    assert probe(tmp_path / "missing.mp4").code == "unreadable"
    assert probe(b"").code == "empty"
