"""Synthetic dataset: determinism, labels, bounce rule, learnability, files on disk; MP4/GIF writers."""

from __future__ import annotations

import io
import json

import av
import numpy as np
import pytest

from arvid_ray.config import SynthConfig
from arvid_ray.video.io import encode_mp4, tile_videos, write_gif_grid, write_mp4
from arvid_ray.video.synthetic import CLASSES, DIRECTIONS, SHAPES, render_video, write_dataset


def _decode_all(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_classes_are_shape_times_direction():
    assert len(CLASSES) == 16 and len(set(CLASSES)) == 16
    assert CLASSES[0] == "square right" and CLASSES[8] == "circle right"
    assert {c.split(" ")[0] for c in CLASSES} == set(SHAPES)
    assert {c.split(" ")[1] for c in CLASSES} == set(DIRECTIONS)


def test_render_is_deterministic_and_typed():
    cfg = SynthConfig(num_frames=9, resolution=32)
    a, b = render_video(3, cfg), render_video(3, cfg)
    assert a.frames.dtype == np.uint8 and a.frames.shape == (9, 32, 32, 3)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert (a.label, a.caption, a.split) == (b.label, b.caption, b.split)
    assert not np.array_equal(a.frames, render_video(4, cfg).frames)
    assert not np.array_equal(a.frames, render_video(3, SynthConfig(num_frames=9, resolution=32, seed=1)).frames)
    for key in ("position", "velocity"):
        assert a.state[key].dtype == np.float32 and a.state[key].shape == (9, 2)
    with pytest.raises(ValueError, match="index"):
        render_video(-1, cfg)


def test_labels_balanced_caption_matches_class():
    cfg = SynthConfig(num_frames=3, resolution=32)
    videos = [render_video(i, cfg) for i in range(32)]
    assert np.bincount([v.label for v in videos], minlength=16).tolist() == [2] * 16
    for v in videos:
        shape, direction = CLASSES[v.label].split(" ")
        assert v.caption.split(" ")[0] in ("a", "an") and v.caption.split(",")[0].endswith(f" {shape} moving {direction}")
    assert any(v.caption.startswith("an orange ") for v in videos)


def test_splits_follow_fractions():
    cfg = SynthConfig(num_frames=2, resolution=16, val_fraction=0.2, test_fraction=0.1)
    from arvid_ray.video.synthetic import split_of

    splits = [split_of(i, cfg) for i in range(2000)]
    assert abs(splits.count("val") / 2000 - 0.2) < 0.03
    assert abs(splits.count("test") / 2000 - 0.1) < 0.03


def test_bounce_flips_velocity_and_keeps_label():
    cfg = SynthConfig(num_frames=33, resolution=32, second_object_prob=0.0)
    bounced = 0
    for i in range(16):
        v = render_video(i, cfg)
        pos, vel, r = v.state["position"], v.state["velocity"], float(v.state["radius"][0])
        assert (pos >= r - 1e-4).all() and (pos <= 31 - r + 1e-4).all()
        direction = CLASSES[v.label].split(" ")[1]
        # initial velocity points in the labelled direction (y down: "up" means vy < 0)
        vx0, vy0 = vel[0]
        assert ("right" in direction) == (vx0 > 1e-3) and ("left" in direction) == (vx0 < -1e-3)
        assert ("up" in direction) == (vy0 < -1e-3) and ("down" in direction) == (vy0 > 1e-3)
        flips = np.sign(vel[1:]) != np.sign(vel[:-1])
        bounced += int(flips.any())
        # speed magnitude per axis never changes, only the sign
        np.testing.assert_allclose(np.abs(vel), np.abs(vel[:1]).repeat(33, 0), rtol=1e-5)
    assert bounced >= 8, "33 frames at these speeds should make most objects hit a wall"



def test_bounce_positions_is_the_render_rule_in_closed_form():
    from arvid_ray.video.synthetic import bounce_positions

    cfg = SynthConfig(num_frames=77, resolution=48, second_object_prob=0.0)
    for i in range(12):  # 77 frames: several bounces per video, on both axes
        state = render_video(i, cfg).state
        pos, vel, r = state["position"], state["velocity"], float(state["radius"][0])
        np.testing.assert_allclose(bounce_positions(pos[0], vel[0], r, 48, 77), pos, atol=1e-3)
    # batched: leading candidate dimensions broadcast
    batch = bounce_positions(np.zeros((3, 2)) + 10, np.ones((3, 2)), np.full(3, 4.0), 48, 5)
    assert batch.shape == (3, 5, 2)
    # a longer render continues the same video: its first frames and trajectory are unchanged
    short, long = render_video(3, SynthConfig(num_frames=33)), render_video(3, SynthConfig(num_frames=77))
    np.testing.assert_array_equal(short.frames, long.frames[:33])

def _flow_and_shape_features(gray: np.ndarray) -> np.ndarray:
    """Translation-invariant features from frame differences: unit flow direction + a corner score."""
    kernel = np.ones(5) / 5
    blur = np.apply_along_axis(lambda r: np.convolve(r, kernel, "same"), -1, gray)
    blur = np.apply_along_axis(lambda r: np.convolve(r, kernel, "same"), -2, blur)
    gy, gx = np.gradient(blur, axis=(-2, -1))
    diff = blur[:, 1:] - blur[:, :-1]  # (N, T-1, H, W): brightness constancy  diff ≈ -(vx gx + vy gy)
    gx, gy = gx[:, :-1], gy[:, :-1]
    ata = np.stack([[(gx * gx).sum((1, 2, 3)), (gx * gy).sum((1, 2, 3))],
                    [(gx * gy).sum((1, 2, 3)), (gy * gy).sum((1, 2, 3))]]).transpose(2, 0, 1)
    atb = -np.stack([(gx * diff).sum((1, 2, 3)), (gy * diff).sum((1, 2, 3))], 1)
    flow = np.linalg.solve(ata + 1e-6, atb[..., None])[..., 0]
    unit = flow / np.linalg.norm(flow, axis=1, keepdims=True)
    gy0, gx0 = np.gradient(gray[:, 0], axis=(-2, -1))
    corner = np.abs(gx0 * gy0).sum((1, 2)) / (gx0**2 + gy0**2).sum((1, 2))
    return np.column_stack([unit, corner * 10, np.ones(len(gray))])


def _softmax_regression(x: np.ndarray, y: np.ndarray, steps: int = 1500, lr: float = 0.5) -> np.ndarray:
    w = np.zeros((x.shape[1], 16))
    for _ in range(steps):
        z = x @ w
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(y)), y] -= 1
        w -= lr * x.T @ p / len(y)
    return w


def test_labels_are_learnable_from_motion_not_from_one_frame():
    cfg = SynthConfig(num_frames=4, resolution=64)
    videos = [render_video(i, cfg) for i in range(400)]
    gray = np.stack([v.frames for v in videos]).astype(np.float32).mean(-1)  # (N, T, H, W)
    y = np.array([v.label for v in videos])
    x = _flow_and_shape_features(gray)
    w = _softmax_regression(x[:300], y[:300])
    acc = ((x[300:] @ w).argmax(1) == y[300:]).mean()
    assert acc > 0.5, f"logistic regression on frame differences got {acc:.2f} (chance 0.06)"
    # one frame: object centroid + shape cue carry no direction information
    first = gray[:, 0] - np.median(gray[:, 0], axis=(1, 2), keepdims=True)  # (N, H, W)
    mass = np.clip(first, 0, None)
    ys, xs = np.mgrid[0:64, 0:64]
    cx = (mass * xs).sum((1, 2)) / mass.sum((1, 2)) / 64
    cy = (mass * ys).sum((1, 2)) / mass.sum((1, 2)) / 64
    x1 = np.column_stack([cx, cy, x[:, 2], np.ones(len(gray))])
    w1 = _softmax_regression(x1[:300], y[:300])
    dir_acc = ((x1[300:] @ w1).argmax(1) % 8 == y[300:] % 8).mean()
    assert dir_acc < 0.3, f"direction readable from a single frame ({dir_acc:.2f}; chance 0.125)"


def test_mp4_roundtrip_and_odd_sizes(tmp_path):
    frames = render_video(1, SynthConfig(num_frames=6, resolution=32)).frames
    decoded = _decode_all(encode_mp4(frames, fps=8))
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames).mean() < 4
    odd = np.ascontiguousarray(frames[:, :31, :29])
    path = write_mp4(odd, tmp_path / "sub" / "odd.mp4", fps=5)
    decoded = _decode_all(path.read_bytes())
    assert decoded.shape == (6, 32, 30, 3)  # padded to even by edge replication
    with pytest.raises(ValueError, match="uint8"):
        encode_mp4(frames.astype(np.float32))
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        encode_mp4(frames[0])


def test_gif_grid(tmp_path):
    from PIL import Image

    cfg = SynthConfig(num_frames=5, resolution=16)
    videos = [render_video(i, cfg).frames for i in range(5)]
    videos[4] = videos[4][:3]  # shorter video holds its last frame
    grid = tile_videos(videos)
    assert grid.shape == (5, 16 * 2 + 2, 16 * 3 + 4, 3)
    np.testing.assert_array_equal(grid[4, 18:34, 18:34], videos[4][2])
    path = write_gif_grid(videos, tmp_path / "grid.gif", fps=4)
    with Image.open(path) as img:
        assert img.n_frames == 5 and img.size == (52, 34)


def test_write_dataset(tmp_path):
    cfg = SynthConfig(num_videos=5, num_frames=9, resolution=32, fps=6, second_object_prob=1.0)
    manifest = write_dataset(cfg, tmp_path)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(rows) == 5
    assert (tmp_path / "classes.txt").read_text().splitlines() == CLASSES
    for i, row in enumerate(rows):
        video = render_video(i, cfg)
        assert (row["label"], row["caption"], row["split"]) == (video.label, video.caption, video.split)
        assert "with a small" in row["caption"]
        assert np.asarray(row["state"]["position"]).shape == (9, 2)
        assert np.asarray(row["state"]["distractor_velocity"]).shape == (9, 2)
        with av.open(str(tmp_path / row["path"])) as container:
            stream = container.streams.video[0]
            assert stream.average_rate == 6
            assert sum(1 for _ in container.decode(stream)) == 9
