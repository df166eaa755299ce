"""Novel-class-discovery clustering metrics exactly as methods.md §3(b).8 (image level, per category).

* ``f1`` -- clustering accuracy: the D x D contingency ``w[p, q] = #(pred p, true q)`` with
  ``D = max(#pred labels, #true labels)``, Hungarian assignment maximising ``sum w`` (scipy's
  ``linear_sum_assignment`` on ``max(w) - w``); the share of samples whose mapped prediction is right,
  which is the micro-F1 of the mapped predictions.
* ``nmi`` -- scikit-learn's ``normalized_mutual_info_score`` (arithmetic mean of the entropies).
* ``ari`` -- scikit-learn's ``adjusted_rand_score`` (pair-counting, exact integer arithmetic).

NMI and ARI are re-implemented in numpy with scikit-learn's formulas and edge cases (both labelings a
single cluster: NMI = ARI = 1; one side a single cluster: NMI = 0); scikit-learn is only the tests' oracle.
Labels may be any ints or strings: each labeling is mapped to codes ``0..C-1`` first (the metrics are
invariant to renaming). Empty or mismatched inputs raise :class:`protoinspect.sdk.errors.InputError`, a ``ValueError``.
Image AUROC lives in :mod:`protoinspect.training.metrics_image`.
"""

from __future__ import annotations

from math import log
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from protoinspect.sdk.errors import InputError

__all__ = ["ari", "cluster_accuracy", "ncd_metrics", "nmi"]


def _codes(labels: Any, name: str) -> tuple[np.ndarray, int]:
    """1-D labels -> (codes 0..C-1 as int64, C)."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        msg = f"{name} must be 1-D (got shape {arr.shape})"
        raise InputError(msg)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        msg = f"{name} contains NaN or infinite labels"
        raise InputError(msg)
    try:
        uniques, codes = np.unique(arr, return_inverse=True)
    except TypeError as exc:  # object arrays mixing incomparable types
        msg = f"{name} mixes label types that cannot be compared ({exc})"
        raise InputError(msg) from exc
    return codes.reshape(-1).astype(np.int64), int(uniques.size)


def _contingency(y_true: Any, y_pred: Any) -> np.ndarray:
    """(#true labels, #pred labels) int64 contingency of two equally long, non-empty labelings."""
    t, n_true = _codes(y_true, "y_true")
    p, n_pred = _codes(y_pred, "y_pred")
    if t.size != p.size:
        msg = f"y_true and y_pred differ in length ({t.size} != {p.size})"
        raise InputError(msg)
    if t.size == 0:
        msg = "y_true and y_pred are empty"
        raise InputError(msg)
    return np.bincount(t * n_pred + p, minlength=n_true * n_pred).reshape(n_true, n_pred)


def cluster_accuracy(y_true: Any, y_pred: Any) -> float:
    """Best-mapping accuracy (= micro-F1 of the mapped predictions) via the Hungarian assignment."""
    c = _contingency(y_true, y_pred)
    d = max(c.shape)
    w = np.zeros((d, d), np.int64)
    w[:c.shape[1], :c.shape[0]] = c.T  # rows: predicted cluster, columns: true class (as the reference code)
    rows, cols = linear_sum_assignment(w.max() - w)
    return float(w[rows, cols].sum() / c.sum())


def _entropy(counts: np.ndarray) -> float:
    """Entropy (nats) of a labeling from its cluster sizes, as scikit-learn computes it."""
    pi = counts[counts > 0].astype(np.float64)
    if pi.size == 1:
        return 0.0
    pi_sum = np.sum(pi)
    return float(-np.sum((pi / pi_sum) * (np.log(pi) - log(pi_sum))))


def _mutual_info(c: np.ndarray) -> float:
    """Mutual information (nats) of a contingency table, scikit-learn's expression and rounding rule."""
    pi, pj = c.sum(axis=1), c.sum(axis=0)
    if pi.size == 1 or pj.size == 1:
        return 0.0
    nzx, nzy = np.nonzero(c)
    nz_val = c[nzx, nzy].astype(np.float64)
    total = float(c.sum())
    contingency_nm = nz_val / total
    outer = pi.take(nzx).astype(np.int64) * pj.take(nzy).astype(np.int64)
    log_outer = -np.log(outer) + log(pi.sum()) + log(pj.sum())
    mi = contingency_nm * (np.log(nz_val) - log(total)) + contingency_nm * log_outer
    mi = np.where(np.abs(mi) < np.finfo(mi.dtype).eps, 0.0, mi)
    return float(np.clip(mi.sum(), 0.0, None))


def nmi(y_true: Any, y_pred: Any) -> float:
    """Normalised mutual information, arithmetic normalisation (= sklearn's default NMI)."""
    c = _contingency(y_true, y_pred)
    if c.shape == (1, 1):  # neither labeling splits the data: a perfect match
        return 1.0
    mi = _mutual_info(c)
    if mi == 0:
        return 0.0
    normalizer = float(np.mean([_entropy(c.sum(axis=1)), _entropy(c.sum(axis=0))]))
    return float(mi / normalizer)


def ari(y_true: Any, y_pred: Any) -> float:
    """Adjusted Rand index (= sklearn's ``adjusted_rand_score``), pair counts in exact Python ints."""
    c = _contingency(y_true, y_pred)
    n = int(c.sum())
    sum_squares = int((c.astype(object) ** 2).sum())
    same_pred = int((c.sum(axis=0).astype(object) ** 2).sum())
    same_true = int((c.sum(axis=1).astype(object) ** 2).sum())
    tp = sum_squares - n
    fp = same_pred - sum_squares
    fn = same_true - sum_squares
    tn = n * n - fp - fn - sum_squares
    if fn == 0 and fp == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def ncd_metrics(y_true: Any, y_pred: Any) -> dict[str, float]:
    """``{"nmi", "ari", "f1"}`` of one category's image-level predictions (§3(b).8)."""
    return {"nmi": nmi(y_true, y_pred), "ari": ari(y_true, y_pred), "f1": cluster_accuracy(y_true, y_pred)}
