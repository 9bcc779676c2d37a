"""Fréchet distance between Gaussian fits of feature sets, its small-N companion KVD, and a noise floor.

Design trade-off: feature statistics are accumulated in a streaming fashion (Chan's parallel merge of
mean and scatter matrix in float64) so that an evaluation never holds all features of N videos in
memory and real-data statistics can be cached and merged across batches; the trace of the matrix
square root is computed with two symmetric eigendecompositions (tr sqrt(S1 S2) =
tr sqrt(sqrt(S1) S2 sqrt(S1)), a PSD matrix) instead of scipy's general ``sqrtm``, which is slower,
can return complex noise, and whose ``disp=`` argument is deprecated. The price is that tiny negative
eigenvalues from round-off must be clipped to zero, which we do explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "FeatureStats",
    "frechet_distance",
    "frechet_from_features",
    "kernel_distance",
    "real_floor",
    "sqrtm_trace",
    "stats_distance",
]


@dataclass
class FeatureStats:
    """Streaming mean and scatter matrix of D-dimensional features, accumulated in float64."""

    dim: int
    count: int = 0
    mean: np.ndarray | None = None
    scatter: np.ndarray | None = None  # sum of outer products of centred features, (D, D)

    def __post_init__(self) -> None:
        if self.mean is None:
            self.mean = np.zeros(self.dim, dtype=np.float64)
        if self.scatter is None:
            self.scatter = np.zeros((self.dim, self.dim), dtype=np.float64)

    def update(self, feats: np.ndarray) -> FeatureStats:
        """Add a batch of features ``(B, D)``; merges with Chan et al.'s pairwise formula."""
        x = np.asarray(feats, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"features must have shape (B, {self.dim}); got {x.shape}")
        if len(x) == 0:
            return self
        n_b = len(x)
        mean_b = x.mean(axis=0)
        centred = x - mean_b  # (B, D)
        scatter_b = centred.T @ centred  # (D, D)
        self._merge(n_b, mean_b, scatter_b)
        return self

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Fold another accumulator into this one (same dimension)."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge feature stats of dim {other.dim} into dim {self.dim}")
        if other.count:
            self._merge(other.count, other.mean, other.scatter)
        return self

    def _merge(self, n_b: int, mean_b: np.ndarray, scatter_b: np.ndarray) -> None:
        n_a, n = self.count, self.count + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.scatter = self.scatter + scatter_b + np.outer(delta, delta) * (n_a * n_b / n)
        self.count = n

    def cov(self) -> np.ndarray:
        """Unbiased covariance (N-1 denominator), as in the reference FID/FVD implementations."""
        if self.count < 2:
            raise ValueError(f"need at least 2 samples for a covariance; have {self.count}")
        return self.scatter / (self.count - 1)

    @classmethod
    def from_features(cls, feats: np.ndarray) -> FeatureStats:
        feats = np.asarray(feats)
        return cls(dim=feats.shape[1]).update(feats)

    def save(self, path: str | Path) -> None:
        np.savez(path, dim=self.dim, count=self.count, mean=self.mean, scatter=self.scatter)

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        with np.load(path) as z:
            return cls(dim=int(z["dim"]), count=int(z["count"]), mean=z["mean"], scatter=z["scatter"])


def _psd_sqrt(mat: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix via eigh; negative round-off eigenvalues clipped to 0."""
    sym = (mat + mat.T) / 2
    vals, vecs = np.linalg.eigh(sym)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def sqrtm_trace(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """tr sqrt(cov1 @ cov2) for PSD cov1, cov2, via the similar PSD matrix sqrt(cov1) cov2 sqrt(cov1)."""
    root1 = _psd_sqrt(np.asarray(cov1, dtype=np.float64))
    inner = root1 @ np.asarray(cov2, dtype=np.float64) @ root1
    vals = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(vals, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(cov1 + cov2 - 2 sqrt(cov1 cov2)), in float64, clipped at 0."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, cov {cov1.shape} vs {cov2.shape}")
    diff = mu1 - mu2
    value = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * sqrtm_trace(cov1, cov2)
    return float(max(value, 0.0))


def stats_distance(a: FeatureStats, b: FeatureStats) -> float:
    """Fréchet distance between two accumulators."""
    return frechet_distance(a.mean, a.cov(), b.mean, b.cov())


def frechet_from_features(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between feature sets ``(N, D)`` and ``(M, D)``."""
    return stats_distance(FeatureStats.from_features(x), FeatureStats.from_features(y))


def kernel_distance(x: np.ndarray, y: np.ndarray, degree: int = 3, coef: float = 1.0,
                    max_subset: int = 1000, num_subsets: int = 10, seed: int = 0) -> float:
    """Unbiased MMD² with the polynomial kernel (x·y/D + coef)^degree (KID/KVD), averaged over subsets.

    Unlike the Fréchet distance it is unbiased in N, so it is the better number when N is small.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sets must be (N, D) with equal D; got {x.shape} and {y.shape}")
    m = min(len(x), len(y), max_subset)
    if m < 2:
        raise ValueError(f"kernel distance needs at least 2 samples per set; got {len(x)} and {len(y)}")
    rng = np.random.default_rng(seed)
    dim = x.shape[1]
    values = []
    for _ in range(num_subsets if m < max(len(x), len(y)) else 1):
        xs = x[rng.choice(len(x), m, replace=False)]
        ys = y[rng.choice(len(y), m, replace=False)]
        kxx = (xs @ xs.T / dim + coef) ** degree  # (m, m)
        kyy = (ys @ ys.T / dim + coef) ** degree
        kxy = (xs @ ys.T / dim + coef) ** degree
        off_xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        off_yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(off_xx + off_yy - 2.0 * kxy.mean())
    return float(np.mean(values))


def real_floor(real: np.ndarray, n: int, seed: int = 0) -> float:
    """Fréchet distance between two disjoint random real subsets of size ``n`` each (the noise floor).

    A generated-vs-real distance at or below this value is indistinguishable from sampling noise at
    that N. Needs at least 2n real features.
    """
    real = np.asarray(real)
    if len(real) < 2 * n:
        raise ValueError(f"real-vs-real floor at N={n} needs {2 * n} real features; have {len(real)} "
                         f"(lower eval.num_videos or provide more real clips)")
    idx = np.random.default_rng(seed).permutation(len(real))
    return frechet_from_features(real[idx[:n]], real[idx[n:2 * n]])
