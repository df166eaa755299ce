"""Spherical k-means and the cosine silhouette, to estimate the number of novel defect classes."""

from __future__ import annotations

import numpy as np


def spherical_kmeans(x: np.ndarray, k: int, rng: np.random.Generator, n_init: int = 5,
                     iters: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Cluster unit vectors ``x`` (n x D) into ``k`` groups by cosine; k-means++ seeding, best of ``n_init``.

    Returns:
        (labels n, unit centroids k x D).
    """
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(n_init):
        centres = [x[rng.integers(n)]]
        for _ in range(1, k):
            d = np.clip(1.0 - (x @ np.stack(centres).T).max(axis=1), 0.0, None)
            p = d / d.sum() if d.sum() > 0 else np.full(n, 1.0 / n)
            centres.append(x[rng.choice(n, p=p)])
        c = np.stack(centres)
        for _ in range(iters):
            labels = (x @ c.T).argmax(axis=1)
            new = np.stack([x[labels == j].sum(0) if (labels == j).any() else c[j] for j in range(k)])
            new /= np.linalg.norm(new, axis=1, keepdims=True).clip(1e-12)
            if np.allclose(new, c):
                break
            c = new
        labels = (x @ c.T).argmax(axis=1)
        inertia = float((1.0 - (x * c[labels]).sum(1)).sum())
        if best is None or inertia < best[0]:
            best = (inertia, labels, c)
    assert best is not None
    return best[1], best[2]


def silhouette_cosine(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette with cosine distance (as sklearn's silhouette_score(metric="cosine")); 0 for one cluster."""
    uniq = np.unique(labels)
    if len(uniq) < 2:
        return 0.0
    d = np.clip(1.0 - x @ x.T, 0.0, None)
    s = np.zeros(len(x))
    for i in range(len(x)):
        same = labels == labels[i]
        if same.sum() <= 1:
            continue  # singleton: silhouette 0
        a = d[i, same].sum() / (same.sum() - 1)
        b = min(d[i, labels == c].mean() for c in uniq if c != labels[i])
        s[i] = (b - a) / max(a, b) if max(a, b) > 0 else 0.0
    return float(s.mean())


def estimate_num_classes(x: np.ndarray, k_max: int, rng: np.random.Generator) -> tuple[int, dict[int, float]]:
    """The k in [2, k_max] (capped at n - 1) whose spherical k-means clustering has the best cosine
    silhouette; returns (k, {k: silhouette})."""
    upper = min(k_max, len(x) - 1)
    if upper < 2:
        return 1, {}
    table = {k: silhouette_cosine(x, spherical_kmeans(x, k, rng)[0]) for k in range(2, upper + 1)}
    return max(table, key=lambda k: (table[k], -k)), table
