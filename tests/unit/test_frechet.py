"""Fréchet distance against closed forms and scipy's reference sqrtm; streaming stats; KVD; floor."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from arvid_ray.metrics.frechet import (
    FeatureStats,
    frechet_distance,
    frechet_from_features,
    kernel_distance,
    real_floor,
)


def _random_cov(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _scipy_reference(mu1, s1, mu2, s2):
    """The pytorch-fid / StyleGAN-V computation: scipy sqrtm of the product."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def test_one_dimensional_closed_form():
    # 1-D: (m1-m2)^2 + (s1 - s2)^2 with s = standard deviation
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0)


def test_diagonal_closed_form():
    rng = np.random.default_rng(0)
    v1, v2 = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_identical_is_zero_and_symmetric():
    rng = np.random.default_rng(1)
    s1, s2 = _random_cov(rng, 12), _random_cov(rng, 12)
    mu1, mu2 = rng.normal(size=12), rng.normal(size=12)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-10)


def test_rotation_invariance_and_scaling():
    rng = np.random.default_rng(2)
    s1, s2 = _random_cov(rng, 10), _random_cov(rng, 10)
    mu1, mu2 = rng.normal(size=10), rng.normal(size=10)
    d = frechet_distance(mu1, s1, mu2, s2)
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    rotated = frechet_distance(q @ mu1, q @ s1 @ q.T, q @ mu2, q @ s2 @ q.T)
    assert rotated == pytest.approx(d, rel=1e-9)
    c = 3.0  # features scaled by c: distance scales by c^2
    assert frechet_distance(c * mu1, c**2 * s1, c * mu2, c**2 * s2) == pytest.approx(c**2 * d, rel=1e-9)


def test_matches_scipy_reference():
    rng = np.random.default_rng(3)
    for d in (2, 17, 64):
        s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_scipy_reference(mu1, s1, mu2, s2), rel=1e-7)


def test_rank_deficient_covariances_stay_finite():
    # N < D: singular covariances (the usual small-N situation) must not give NaN or negative values
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(8, 32)), rng.normal(size=(8, 32)) + 0.5
    value = frechet_from_features(x, y)
    assert np.isfinite(value) and value > 0
    assert frechet_from_features(x, x) == pytest.approx(0.0, abs=1e-6)


def test_streaming_stats_equal_batch_stats_and_roundtrip(tmp_path):
    rng = np.random.default_rng(5)
    feats = rng.normal(size=(101, 7)) * 5 + 100  # offset stresses the numerics of naive sums
    stats = FeatureStats(dim=7)
    for chunk in np.array_split(feats, 9):
        stats.update(chunk)
    np.testing.assert_allclose(stats.mean, feats.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov(), np.cov(feats, rowvar=False), rtol=1e-10)
    merged = FeatureStats.from_features(feats[:40]).merge(FeatureStats.from_features(feats[40:]))
    np.testing.assert_allclose(merged.cov(), stats.cov(), rtol=1e-10)
    stats.save(tmp_path / "s.npz")
    loaded = FeatureStats.load(tmp_path / "s.npz")
    assert loaded.count == 101
    np.testing.assert_allclose(loaded.cov(), stats.cov())
    with pytest.raises(ValueError, match=r"\(B, 7\)"):
        stats.update(np.zeros((3, 6)))


def test_kernel_distance_unbiased_and_sensitive():
    rng = np.random.default_rng(6)
    same = [kernel_distance(rng.normal(size=(50, 8)), rng.normal(size=(50, 8)), seed=i) for i in range(20)]
    assert abs(np.mean(same)) < 0.05  # unbiased: centred on 0 for equal distributions
    shifted = kernel_distance(rng.normal(size=(50, 8)), rng.normal(size=(50, 8)) + 1.0)
    assert shifted > 0.2


def test_real_floor_uses_disjoint_subsets():
    rng = np.random.default_rng(7)
    real = rng.normal(size=(200, 4))
    floor = real_floor(real, 100)
    assert 0 < floor < frechet_from_features(real[:100], rng.normal(size=(100, 4)) + 1.0)
    with pytest.raises(ValueError, match="needs 400 real features"):
        real_floor(real, 200)
