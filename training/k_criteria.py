"""The criteria that score each candidate number of clusters k (higher score = better k).

* ``silhouette``: mean Euclidean silhouette of the k-means partition.
* ``silhouette_cosine``: mean cosine silhouette of the spherical k-means partition (what discovery used).
* ``eigengap``: log gap log(lambda_k + c) - log(lambda_(k-1) + c), c = ``EIGENGAP_FLOOR``, between consecutive
  eigenvalues (0-based, ascending) of the symmetric normalised Laplacian
  of a self-tuning affinity (Zelnik-Manor & Perona: A_ij = exp(-d_ij^2 / (s_i s_j)), s_i = distance to the
  ``SCALE_FRACTION`` * n -th neighbour (at least the 7th, their choice: with 7, many small gaps inside each
  cluster rivalled the true one; exact K on the blob grid 0.87 -> 0.95). Clusters with fewer than about
  n / 10 points tend to be merged into a neighbour by this criterion. The log gap rather than the plain gap:
  the spectrum of one smooth blob has gaps as large as the one after the last near-zero eigenvalue, but not
  relative to their size (exact K 0.95 -> 0.98 on the blob grid).
* ``bic``: minus the Bayesian information criterion of a full-covariance Gaussian mixture fitted by EM from
  k-means, on the top ``BIC_MAX_DIMS`` principal components (diagonal covariances split rotated elongated
  clusters: exact K on the blob grid 0.92 -> 0.99).
* ``stability``: mean adjusted Rand index between the partitions of all points induced by k-means fitted on two
  independent subsamples (Lange et al.); k = 1 has no score.

Each function takes the candidate ks and returns {k: score}; :func:`protoinspect.training.k_estimation.pick_k`
picks the best k. :class:`Fits` caches
the k-means partitions shared by the silhouette and BIC criteria.
"""

from __future__ import annotations

import numpy as np
from protoinspect.training.k_clustering import (
    adjusted_rand_index,
    fit_gmm,
    kmeans,
    sq_distances,
)
from protoinspect.training.kmeans import spherical_kmeans

#: a point's local scale in the eigengap affinity is its distance to neighbour number max(7, SCALE_FRACTION * n)
SCALE_FRACTION = 0.1
#: eigenvalues below about this count as zero in the eigengap's log gap
EIGENGAP_FLOOR = 0.03
#: the BIC criterion works on at most this many principal components (a GMM in hundreds of dimensions pays so
#: many parameters per component that BIC would always pick the smallest k)
BIC_MAX_DIMS = 8
#: covariance of the BIC criterion's mixture components: "full" fits rotated elongated clusters that a
#: diagonal mixture splits in several
BIC_COVARIANCE = "full"
#: pairs of subsamples per k for the stability criterion, and the fraction of the points in each subsample
STABILITY_PAIRS = 8
STABILITY_FRACTION = 0.7


class Fits:
    """Lazily computed, cached Euclidean k-means partitions of one data set.

    Args:
        x: data, n x D float64.
        seed: seed of the per-k generators (each k has its own stream, so results do not depend on the order
            in which the criteria ask for partitions).
    """

    def __init__(self, x: np.ndarray, seed: int) -> None:
        self.x = x
        self.seed = seed
        self._labels: dict[int, np.ndarray] = {}

    def rng(self, k: int, salt: int) -> np.random.Generator:
        """A generator for (seed, k, salt): independent streams per use, reproducible."""
        return np.random.default_rng([self.seed, k, salt])

    def labels(self, k: int) -> np.ndarray:
        """The k-means partition of ``x`` into ``k`` clusters (computed once)."""
        if k not in self._labels:
            self._labels[k] = kmeans(self.x, k, self.rng(k, 0))[0]
        return self._labels[k]


def silhouette_from_distances(dist: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of ``labels`` given the n x n distance matrix ``dist``; singletons count 0, one cluster 0."""
    uniq, inv = np.unique(labels, return_inverse=True)
    if len(uniq) < 2:
        return 0.0
    n = len(labels)
    onehot = np.zeros((n, len(uniq)))
    onehot[np.arange(n), inv] = 1.0
    counts = onehot.sum(0)
    sums = dist @ onehot
    own = counts[inv]
    a = sums[np.arange(n), inv] / np.maximum(own - 1.0, 1.0)
    other = sums / counts[None, :]
    other[np.arange(n), inv] = np.inf
    b = other.min(1)
    denom = np.maximum(a, b)
    s = np.where(denom > 0, (b - a) / np.where(denom > 0, denom, 1.0), 0.0)
    s[own <= 1] = 0.0
    return float(s.mean())


def silhouette_scores(fits: Fits, ks: list[int]) -> dict[int, float]:
    """Euclidean silhouette of the k-means partition for each k >= 2 (k = 1 has no silhouette)."""
    dist = np.sqrt(sq_distances(fits.x, fits.x))
    return {k: silhouette_from_distances(dist, fits.labels(k)) for k in ks if k >= 2}


def cosine_silhouette_scores(fits: Fits, ks: list[int]) -> dict[int, float]:
    """Cosine silhouette of the spherical k-means partition of the unit-normalised rows, for each k >= 2."""
    u = fits.x / np.linalg.norm(fits.x, axis=1, keepdims=True).clip(1e-12)
    dist = np.clip(1.0 - u @ u.T, 0.0, None)
    return {k: silhouette_from_distances(dist, spherical_kmeans(u, k, fits.rng(k, 1))[0]) for k in ks if k >= 2}


def laplacian_eigenvalues(x: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` smallest eigenvalues (ascending) of the symmetric normalised Laplacian of the self-tuning
    affinity of ``x``."""
    n = len(x)
    d2 = sq_distances(x, x)
    np.fill_diagonal(d2, 0.0)
    neighbour = min(max(7, int(SCALE_FRACTION * n)), n - 1)
    scale = np.sqrt(np.partition(d2, neighbour, axis=1)[:, neighbour])
    scale = np.maximum(scale, 1e-12 + 1e-9 * scale.max())
    affinity = np.exp(-d2 / (scale[:, None] * scale[None, :]))
    np.fill_diagonal(affinity, 0.0)
    deg = affinity.sum(1)
    inv_sqrt = 1.0 / np.sqrt(np.maximum(deg, 1e-300))
    normalised = inv_sqrt[:, None] * affinity * inv_sqrt[None, :]
    mu = np.linalg.eigvalsh(normalised)  # ascending; Laplacian eigenvalues are 1 - mu
    return np.sort(1.0 - mu)[:count]


def eigengap_scores(fits: Fits, ks: list[int]) -> dict[int, float]:
    """Log eigengap log(lambda_k + c) - log(lambda_(k-1) + c) (0-based eigenvalues, c = ``EIGENGAP_FLOOR``)."""
    lam = np.log(np.clip(laplacian_eigenvalues(fits.x, max(ks) + 1), 0.0, None) + EIGENGAP_FLOOR)
    return {k: float(lam[k] - lam[k - 1]) for k in ks}


def _principal_components(x: np.ndarray, dims: int) -> np.ndarray:
    """``x`` projected on its top ``dims`` principal components (unchanged when it has no more columns)."""
    if x.shape[1] <= dims:
        return x
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:dims].T


def bic_scores(fits: Fits, ks: list[int]) -> dict[int, float]:
    """-BIC = 2 log L - p log n of a ``BIC_COVARIANCE`` Gaussian mixture started from k-means, for each k."""
    z = _principal_components(fits.x, BIC_MAX_DIMS)
    n = len(z)
    out: dict[int, float] = {}
    for k in ks:
        labels = fits.labels(k) if z is fits.x else kmeans(z, k, fits.rng(k, 2))[0]
        gmm = fit_gmm(z, labels, k, BIC_COVARIANCE)
        out[k] = 2.0 * gmm.log_likelihood - gmm.num_parameters * np.log(n)
    return out


def stability_scores(fits: Fits, ks: list[int]) -> dict[int, float]:
    """Mean ARI, over ``STABILITY_PAIRS`` pairs of subsamples, between the nearest-centre partitions of all
    points by the k-means centres of each subsample; for each k >= 2."""
    x = fits.x
    n = len(x)
    size = max(2, round(STABILITY_FRACTION * n))
    out: dict[int, float] = {}
    for k in ks:
        if k < 2 or k > size:
            continue
        rng = fits.rng(k, 3)
        values = []
        for _ in range(STABILITY_PAIRS):
            partitions = []
            for _ in range(2):
                sub = rng.choice(n, size=size, replace=False)
                centres = kmeans(x[sub], k, rng, n_init=2)[1]
                partitions.append(sq_distances(x, centres).argmin(1))
            values.append(adjusted_rand_index(partitions[0], partitions[1]))
        out[k] = float(np.mean(values))
    return out
