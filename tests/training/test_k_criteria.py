"""The per-k scores of each K criterion."""

from __future__ import annotations

import numpy as np
import pytest
from protoinspect.training.k_criteria import (
    Fits,
    bic_scores,
    eigengap_scores,
    laplacian_eigenvalues,
    silhouette_from_distances,
    stability_scores,
)


def blobs(k: int, dims: int = 2, n_each: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = 15.0 * np.eye(max(k, dims))[:k, :dims] if dims >= k else 15.0 * rng.normal(size=(k, dims))
    return np.concatenate([c + rng.normal(size=(n_each, dims)) for c in centres])


def test_silhouette_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(25, 2))
    labels = rng.integers(0, 3, 25)
    labels[0] = 3  # a singleton counts 0
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    s = []
    for i in range(len(x)):
        same = labels == labels[i]
        if same.sum() == 1:
            s.append(0.0)
            continue
        a = d[i, same].sum() / (same.sum() - 1)
        b = min(d[i, labels == c].mean() for c in set(labels.tolist()) if c != labels[i])
        s.append((b - a) / max(a, b))
    assert silhouette_from_distances(d, labels) == pytest.approx(float(np.mean(s)))
    assert silhouette_from_distances(d, np.zeros(25)) == 0.0


def test_laplacian_has_one_near_zero_eigenvalue_per_separated_blob() -> None:
    lam = laplacian_eigenvalues(blobs(3, dims=3), 5)
    assert lam[:3].max() < 1e-6 and lam[3] > 0.05
    assert np.all(np.diff(lam) >= -1e-9)


def test_eigengap_bic_and_stability_peak_at_the_true_k() -> None:
    fits = Fits(blobs(3, dims=3), seed=0)
    ks = [1, 2, 3, 4, 5]
    for scores in (eigengap_scores(fits, ks), bic_scores(fits, ks)):
        assert max(scores, key=scores.get) == 3
    stab = stability_scores(fits, ks)
    assert 1 not in stab and stab[3] == pytest.approx(1.0) and stab[5] < 1.0


def test_bic_projects_high_dimensional_features() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(60, 64)), rng.normal(size=(60, 64)) + 4.0])
    scores = bic_scores(Fits(x, seed=0), [1, 2, 3, 4])
    assert max(scores, key=scores.get) == 2
