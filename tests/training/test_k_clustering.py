"""k-means, the diagonal GMM and the adjusted Rand index used by the K estimators."""

from __future__ import annotations

import numpy as np
import pytest
from protoinspect.training.k_clustering import adjusted_rand_index, fit_gmm, kmeans, sq_distances


def two_blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(size=(50, 3)), rng.normal(size=(30, 3)) + 10.0])
    return x, np.repeat([0, 1], [50, 30])


def test_sq_distances_match_the_definition() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 4)), rng.normal(size=(5, 4))
    expected = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(sq_distances(a, b), expected, atol=1e-10)
    assert (sq_distances(a, a) >= 0).all()


def test_kmeans_separates_two_blobs_and_is_seeded() -> None:
    x, y = two_blobs()
    labels, centres, inertia = kmeans(x, 2, np.random.default_rng(0))
    assert adjusted_rand_index(labels, y) == 1.0
    assert centres.shape == (2, 3) and inertia > 0
    again = kmeans(x, 2, np.random.default_rng(0))
    np.testing.assert_array_equal(labels, again[0])
    with pytest.raises(ValueError, match="k must be in"):
        kmeans(x, 0, np.random.default_rng(0))


def test_kmeans_handles_duplicate_points() -> None:
    x = np.zeros((10, 2))
    labels, _, inertia = kmeans(x, 3, np.random.default_rng(0))
    assert labels.shape == (10,) and inertia == 0.0


def test_diagonal_gmm_fits_two_blobs_better_than_one() -> None:
    x, y = two_blobs()
    one = fit_gmm(x, np.zeros(len(x), dtype=int), 1, "diagonal")
    two = fit_gmm(x, y, 2, "diagonal")
    assert two.log_likelihood > one.log_likelihood
    np.testing.assert_allclose(np.sort(two.weights), [30 / 80, 50 / 80], atol=1e-6)
    assert one.num_parameters == 0 + 2 * 3 and two.num_parameters == 1 + 2 * 2 * 3
    assert (np.linalg.eigvalsh(two.covariances) > 0).all()
    assert np.count_nonzero(two.covariances[0] - np.diag(np.diag(two.covariances[0]))) == 0  # diagonal


def test_full_gmm_beats_diagonal_on_a_rotated_elongated_blob() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2)) * [3.0, 0.3] @ np.array([[0.6, 0.8], [-0.8, 0.6]])
    labels = np.zeros(200, dtype=int)
    full, diag = fit_gmm(x, labels, 1, "full"), fit_gmm(x, labels, 1, "diagonal")
    assert full.log_likelihood > diag.log_likelihood + 50
    assert full.num_parameters == 2 + 3
    with pytest.raises(ValueError, match="covariance must be"):
        fit_gmm(x, labels, 1, "spherical")


def test_ari_known_values() -> None:
    a = np.array([0, 0, 1, 1, 2, 2])
    assert adjusted_rand_index(a, a) == 1.0
    assert adjusted_rand_index(a, np.array([5, 5, 3, 3, 9, 9])) == 1.0  # label names do not matter
    # sklearn.metrics.adjusted_rand_score([0,0,1,1,2,2],[0,0,1,2,2,2]) = 0.444...
    assert adjusted_rand_index(a, np.array([0, 0, 1, 2, 2, 2])) == pytest.approx(4 / 9)
    assert adjusted_rand_index(np.zeros(4), np.zeros(4)) == 1.0
