"""Temporal consistency: flow warping error + motion, flow acceleration, trajectory error."""

from __future__ import annotations

import numpy as np
import pytest

from arvid_ray.metrics.consistency import (
    batch_flow_consistency,
    flow_consistency,
    track_centroids,
    trajectory_error,
)


def _moving_square(T=12, H=64, jitter=0.0, flicker=0.0, seed=0):
    """A textured square on a flat background moving (2, 1) px/frame; returns (video, centroids)."""
    rng = np.random.default_rng(seed)
    video = np.zeros((T, H, H, 3), np.uint8)
    video[:] = (30, 40, 50)
    centres = []
    for t in range(T):
        x = int(round(16 + 2 * t + (rng.uniform(-jitter, jitter) if jitter else 0.0)))
        y = 20 + t
        video[t, y:y + 10, x:x + 10] = (220, 60, 60)
        video[t, y + 3:y + 5, x + 2:x + 8] = (250, 250, 0)
        centres.append((x + 4.5, y + 4.5))
    if flicker:
        noise = rng.normal(0, flicker, (T, 1, 1, 3)) + rng.normal(0, flicker / 2, video.shape)
        video = np.clip(video + noise, 0, 255).astype(np.uint8)
    return video, np.array(centres)


def test_static_video_warps_perfectly_but_has_no_motion():
    video = np.repeat(_moving_square()[0][:1], 8, axis=0)
    score = flow_consistency(video)
    assert score.warp_error == pytest.approx(0.0, abs=1e-6)
    assert score.motion == pytest.approx(0.0, abs=1e-3)
    assert score.per_pair.shape == (7,)


def test_smooth_motion_beats_jitter_and_flicker():
    smooth = flow_consistency(_moving_square()[0])
    flicker = flow_consistency(_moving_square(flicker=20)[0])
    jitter = flow_consistency(_moving_square(jitter=6)[0])
    assert smooth.motion > 0.1  # it moves, so a low warp error is earned
    assert flicker.warp_error > 10 * smooth.warp_error
    assert jitter.accel > 5 * smooth.accel  # position jitter: the flow changes along pixel paths
    assert jitter.warp_error >= smooth.warp_error * 0.9


def test_batch_consistency_keys_and_bad_input():
    videos = np.stack([_moving_square(seed=i)[0] for i in range(2)])
    out = batch_flow_consistency(videos)
    assert set(out) == {"warp_error", "motion", "flow_accel", "valid_frac"}
    with pytest.raises(ValueError, match="T>=2"):
        flow_consistency(videos[0][:1])


def test_trajectory_error_follows_object_and_ignores_distractor():
    video, centres = _moving_square()
    video[:, 50:56, 5:11] = (0, 200, 0)  # a static distractor away from the path
    np.testing.assert_allclose(track_centroids(video, start=centres[0]), centres, atol=0.6)
    assert trajectory_error(video, centres) < 0.6
    assert trajectory_error(video[::-1], centres) > 5  # reversed motion is far off the ground truth
    blank = np.zeros_like(video)
    assert trajectory_error(blank, centres) > 50  # a vanished object is the worst case


def test_tracker_recovers_ground_truth_state_of_synthetic_videos():
    from arvid_ray.config import SynthConfig
    from arvid_ray.video.synthetic import render_video

    cfg = SynthConfig(num_videos=24, seed=3)
    errors = [trajectory_error(v.frames, v.state["position"]) for v in (render_video(i, cfg) for i in range(24))]
    assert max(errors) < 1.5 and float(np.mean(errors)) < 0.5  # pixels, distractors included


def _long_synthetic(n=8, frames=77):
    from arvid_ray.config import SynthConfig
    from arvid_ray.video.synthetic import render_video

    return np.stack([render_video(i, SynthConfig(num_frames=frames)).frames for i in range(n)])


def test_ground_truth_drift_is_low_on_real_videos_and_high_on_broken_ones():
    from arvid_ray.metrics.trajectory import ground_truth_drift

    real = _long_synthetic()
    starts = [0, 17, 37, 57]  # segments of a 4x rollout of 5 latent frames
    good = ground_truth_drift(real, starts, 17)
    assert len(good["traj_error"]) == 4 and max(good["traj_error"]) < 2.5
    assert min(good["identity"]) > 0.85
    rng = np.random.default_rng(0)
    shuffled = ground_truth_drift(np.stack([v[rng.permutation(len(v))] for v in real]), starts, 17)
    frozen = ground_truth_drift(np.repeat(real[:, :1], 77, axis=1), starts, 17)  # no motion is not bounce physics
    for bad in (shuffled, frozen):
        assert min(bad["traj_error"][1:]) > 4 * max(good["traj_error"])
    recoloured = real.copy()
    recoloured[:, 37:] = recoloured[:, 37:, :, :, ::-1]  # RGB -> BGR from segment 3 on: a new object colour
    ident = ground_truth_drift(recoloured, starts, 17)["identity"]
    assert ident[0] > 0.85 and ident[3] < 0.5
