"""Clustering primitives for estimating the number of clusters (numpy only, deterministic given a generator).

Euclidean k-means (k-means++ seeding, best of several starts), a full- or diagonal-covariance Gaussian mixture
fitted by EM (for the penalised-likelihood criterion), pairwise distances and the adjusted Rand index. Used by
:mod:`protoinspect.training.k_criteria`; kept free of any model or dataset code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: relative floor on GMM variances (times the data's per-dimension variance) so EM never collapses
VAR_FLOOR = 1e-3


def sq_distances(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``x`` (n x D) and ``c`` (m x D), clipped at 0; n x m."""
    d = (x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]
    return np.clip(d, 0.0, None)


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, n_init: int = 4,
           iters: int = 100) -> tuple[np.ndarray, np.ndarray, float]:
    """Euclidean k-means of ``x`` (n x D) into ``k`` groups: k-means++ seeding, Lloyd iterations, best of ``n_init``.

    Args:
        x: data, n x D float.
        k: number of clusters, 1 <= k <= n.
        rng: generator (the only source of randomness).
        n_init: number of seeded starts; the lowest inertia wins.
        iters: maximum Lloyd iterations per start.

    Returns:
        (labels n int, centres k x D, inertia = sum of squared distances to the assigned centre).

    Raises:
        ValueError: ``k`` outside [1, n].
    """
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(n_init):
        idx = [int(rng.integers(n))]
        closest = sq_distances(x, x[idx]).ravel()
        for _ in range(1, k):
            total = closest.sum()
            p = closest / total if total > 0 else np.full(n, 1.0 / n)
            idx.append(int(rng.choice(n, p=p)))
            closest = np.minimum(closest, sq_distances(x, x[idx[-1:]]).ravel())
        c = x[idx].astype(np.float64)
        labels = np.full(n, -1)
        for _ in range(iters):
            new_labels = sq_distances(x, c).argmin(1)
            if np.array_equal(new_labels, labels):
                break
            labels = new_labels
            for j in range(k):
                members = labels == j
                if members.any():
                    c[j] = x[members].mean(0)
                else:  # empty cluster: restart it on the point farthest from its centre
                    far = int(sq_distances(x, c)[np.arange(n), labels].argmax())
                    c[j] = x[far]
        labels = sq_distances(x, c).argmin(1)
        inertia = float(sq_distances(x, c)[np.arange(n), labels].sum())
        if best is None or inertia < best[0]:
            best = (inertia, labels, c.copy())
    assert best is not None
    return best[1], best[2], best[0]


@dataclass(frozen=True)
class GaussianMixture:
    """A fitted Gaussian mixture.

    Attributes:
        weights: k mixing proportions.
        means: k x D component means.
        covariances: k x D x D covariance matrices (diagonal ones when fitted with ``covariance="diagonal"``).
        covariance: ``"full"`` or ``"diagonal"``.
        log_likelihood: total log-likelihood of the data it was fitted on.
    """

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    covariance: str
    log_likelihood: float

    @property
    def num_parameters(self) -> int:
        """Free parameters: (k - 1) weights + k*D means + k*D variances (diagonal) or k*D(D+1)/2 (full)."""
        k, d = self.means.shape
        per_cov = d if self.covariance == "diagonal" else d * (d + 1) // 2
        return (k - 1) + k * d + k * per_cov


def _log_gaussian(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """log N(x_i | mean, cov) for every row of ``x``; ``cov`` symmetric positive definite."""
    chol = np.linalg.cholesky(cov)
    z = np.linalg.solve(chol, (x - mean).T)
    log_det = 2.0 * np.log(np.diag(chol)).sum()
    return -0.5 * (x.shape[1] * np.log(2.0 * np.pi) + log_det + (z * z).sum(0))


def _logsumexp_rows(a: np.ndarray) -> np.ndarray:
    """Row-wise log(sum(exp(a))) without overflow."""
    m = a.max(1, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(1, keepdims=True))).ravel()


def fit_gmm(x: np.ndarray, labels: np.ndarray, k: int, covariance: str = "full", iters: int = 100,
            tol: float = 1e-6) -> GaussianMixture:
    """Fit a k-component Gaussian mixture by EM, started from a hard partition (e.g. k-means labels).

    Every covariance gets ``VAR_FLOOR`` times the data's per-dimension variance added to its diagonal, so a
    component that shrinks onto a few points cannot drive the likelihood to infinity.

    Args:
        x: data, n x D float.
        labels: initial partition, n ints in [0, k).
        k: number of components.
        covariance: ``"full"`` or ``"diagonal"``.
        iters: maximum EM iterations.
        tol: stop when the mean log-likelihood improves by less than this.

    Returns:
        The fitted mixture with its total log-likelihood.

    Raises:
        ValueError: an unknown ``covariance``.
    """
    if covariance not in ("full", "diagonal"):
        raise ValueError(f"covariance must be 'full' or 'diagonal', got {covariance!r}")
    n, d = x.shape
    floor = np.diag(VAR_FLOOR * np.maximum(x.var(0), 1e-12))
    resp = np.zeros((n, k))
    resp[np.arange(n), labels] = 1.0
    prev = -np.inf
    ll = -np.inf
    weights, means, covs = np.empty(0), np.empty((k, d)), np.empty((k, d, d))
    for _ in range(iters):
        nk = resp.sum(0) + 1e-10
        weights = nk / n
        means = (resp.T @ x) / nk[:, None]
        for j in range(k):
            c = x - means[j]
            cov = (resp[:, j, None] * c).T @ c / nk[j]
            covs[j] = (np.diag(np.diag(cov)) if covariance == "diagonal" else cov) + floor
        log_p = np.stack([_log_gaussian(x, means[j], covs[j]) for j in range(k)], axis=1) + np.log(weights)
        norm = _logsumexp_rows(log_p)
        ll = float(norm.sum())
        resp = np.exp(log_p - norm[:, None])
        if (ll - prev) / n < tol:
            break
        prev = ll
    return GaussianMixture(weights, means, covs.copy(), covariance, ll)


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labellings of the same points (1 identical, ~0 chance; 1 if both are trivial)."""
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(table, (ai, bi), 1.0)

    def pairs(v: np.ndarray) -> float:
        return float((v * (v - 1) / 2.0).sum())

    n = len(a)
    total = n * (n - 1) / 2.0
    index = pairs(table)
    rows, cols = pairs(table.sum(1)), pairs(table.sum(0))
    expected = rows * cols / total if total > 0 else 0.0
    max_index = (rows + cols) / 2.0
    if max_index == expected:
        return 1.0
    return (index - expected) / (max_index - expected)
