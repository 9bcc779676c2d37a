"""Test helpers: tiny videos encoded by the ffmpeg CLI itself, and a folder of good and broken inputs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

# name -> (container extension, ffmpeg output args, video filter or None, source size, extra inputs)
FFMPEG_CASES = {
    "h264_mp4": ("mp4", ["-c:v", "libx264", "-pix_fmt", "yuv420p"], None, "64x48", []),
    "h264_yuv444_odd_mkv": ("mkv", ["-c:v", "libx264", "-pix_fmt", "yuv444p"], "scale=63:47", "64x48", []),
    "hevc_mp4": ("mp4", ["-c:v", "libx265", "-pix_fmt", "yuv420p", "-x265-params", "log-level=none"],
                 None, "64x48", []),
    "vp8_webm": ("webm", ["-c:v", "libvpx", "-pix_fmt", "yuv420p"], None, "64x48", []),
    "vp9_odd_webm": ("webm", ["-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p"], "scale=65:49", "64x48", []),
    "mpeg4_avi": ("avi", ["-c:v", "mpeg4", "-pix_fmt", "yuv420p"], None, "64x48", []),
    "mjpeg_mov": ("mov", ["-c:v", "mjpeg", "-pix_fmt", "yuvj422p"], None, "64x48", []),
    "h264_audio_mov": ("mov", ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac"], None, "48x32",
                       ["-f", "lavfi", "-i", "sine=frequency=440:duration=1"]),
    "h264_smpte_mp4": ("mp4", ["-c:v", "libx264", "-pix_fmt", "yuv420p"], None, "smptehdbars:64x36", []),
}


def need_ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        pytest.fail("the ffmpeg CLI is required for these tests: apt-get install -y ffmpeg")
    return exe


def ffmpeg(*args: str) -> None:
    subprocess.run([need_ffmpeg(), "-y", "-loglevel", "error", *args], check=True)


def make_video(path: Path, case: str, seconds: float = 1.0, rate: int = 10) -> Path:
    """Encode a test-source video with the ffmpeg CLI according to FFMPEG_CASES[case]."""
    _, out_args, vf, size, extra = FFMPEG_CASES[case]
    source, _, size = size.rpartition(":") if ":" in size else ("testsrc2", "", size)
    args = ["-f", "lavfi", "-i", f"{source}=size={size}:rate={rate}", *extra, "-t", str(seconds)]
    if vf:
        args += ["-vf", vf]
    ffmpeg(*args, *out_args, str(path))
    return path


def ffmpeg_rgb(path: Path, width: int, height: int) -> np.ndarray:
    """Decode with the ffmpeg CLI to rgb24 (autorotate on, as by default): uint8 [T, H, W, 3]."""
    raw = subprocess.run([need_ffmpeg(), "-loglevel", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def write_mixed_folder(root: Path, min_frames: int = 8) -> dict[str, str | None]:
    """A UCF-101-style folder of good and broken inputs; returns {relative path: reject code or None}.

    Layout: ``root/<class>/<file>``. Good files are accepted; each broken one has a known reject code.
    """
    good = root / "juggling" / "g1.mp4"
    good.parent.mkdir(parents=True, exist_ok=True)
    make_video(good, "h264_mp4", seconds=1.2)
    make_video(root / "juggling" / "g2.webm", "vp8_webm", seconds=1.0)
    (root / "surfing").mkdir()
    make_video(root / "surfing" / "g3.avi", "mpeg4_avi", seconds=1.0)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10", "-t", "1", "-c:v", "libx264",
           "-movflags", "+faststart", str(root / "surfing" / "fast.mp4"))
    data = (root / "surfing" / "fast.mp4").read_bytes()
    (root / "surfing" / "fast.mp4").unlink()
    (root / "surfing" / "cut.mp4").write_bytes(data[: len(data) // 2])
    (root / "surfing" / "empty.mp4").write_bytes(b"")
    (root / "surfing" / "notes.mp4").write_text("this is not a video\n" * 20)
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(root / "surfing" / "song.m4a"))
    make_video(root / "juggling" / "short.mp4", "h264_mp4", seconds=0.3)  # 3 frames < min_frames
    rng = np.random.default_rng(0)
    garbled = bytearray(data)
    garbled[1500:] = rng.integers(0, 256, len(data) - 1500, dtype=np.uint8).tobytes()
    (root / "juggling" / "garbled.mp4").write_bytes(bytes(garbled))
    return {
        "juggling/g1.mp4": None, "juggling/g2.webm": None, "surfing/g3.avi": None,
        "surfing/cut.mp4": "truncated", "surfing/empty.mp4": "empty", "surfing/notes.mp4": "non-video",
        "surfing/song.m4a": "no-video-stream", "juggling/short.mp4": "too-short",
        "juggling/garbled.mp4": "undecodable",
    }


def shared_synth_cfg(tmp_path_factory):
    """A tiny built-in-dataset config whose cache (under the session's base temp dir) test modules share."""
    from arvid_ray.config import ExperimentConfig

    workdir = tmp_path_factory.getbasetemp() / "shared-synth-workdir"
    return ExperimentConfig.from_flat({
        "experiment.workdir": str(workdir), "synth.num_videos": 12, "synth.num_frames": 17,
        "synth.resolution": 32, "synth.val_fraction": 0.3, "synth.test_fraction": 0.0,
        "data.num_frames": 9, "data.resolution": 32, "data.decode_cpus": 0.5, "data.decode_batch_size": 4,
        "data.cache_clip_hop": 8, "tokenizer.name": "fsq", "tokenizer.batch_size": 4})
