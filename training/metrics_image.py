"""Image-level anomaly-detection metrics (AUROC, AP, F1-max) and the input checks they share.

Public names are re-exported by :mod:`protoinspect.training.metrics`, which documents the metric definitions;
:mod:`protoinspect.training.metrics_pixel` reuses this module's input checks and the Mann-Whitney AUROC kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from protoinspect.sdk.errors import InputError

__all__ = [
    "auroc",
    "average_precision",
    "f1_max",
    "image_metrics",
]


# --------------------------------------------------------------------------- checks


def _check_finite(values: np.ndarray, name: str) -> None:
    """Raise when ``values`` holds a NaN or an infinity (O(1) extra memory)."""
    if values.dtype.kind != "f" or values.size == 0:
        return
    lo, hi = values.min(), values.max()  # min/max propagate NaN
    if np.isnan(lo) or np.isnan(hi):
        msg = f"{name} contains NaN"
        raise InputError(msg)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        msg = f"{name} contains an infinite value"
        raise InputError(msg)


def _as_scores(scores: Any, name: str) -> np.ndarray:
    """Return ``scores`` as a numeric ndarray (float16 and bool widened, others kept)."""
    arr = np.asarray(scores)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    elif arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    if arr.dtype.kind not in "iuf":
        msg = f"{name} must be numeric (got dtype {arr.dtype})"
        raise InputError(msg)
    _check_finite(arr, name)
    return arr


def _as_labels(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate 1-D binary labels and scores of equal length; return (bool labels, scores)."""
    y = np.asarray(labels)
    s = _as_scores(scores, "scores")
    if y.ndim != 1 or s.ndim != 1:
        msg = f"labels and scores must be 1-D (got shapes {y.shape} and {s.shape})"
        raise InputError(msg)
    if y.shape[0] != s.shape[0]:
        msg = f"labels and scores differ in length ({y.shape[0]} != {s.shape[0]})"
        raise InputError(msg)
    if y.shape[0] == 0:
        msg = "labels and scores are empty"
        raise InputError(msg)
    if y.dtype != np.bool_:
        if y.dtype.kind not in "iuf":
            msg = f"labels must be bool or 0/1 numbers (got dtype {y.dtype})"
            raise InputError(msg)
        _check_finite(y, "labels")
        if not np.all((y == 0) | (y == 1)):
            msg = f"labels must be 0/1 (got values {np.unique(y)[:10].tolist()})"
            raise InputError(msg)
        y = y == 1
    return y, s


def _require_both_classes(n_pos: int, n_neg: int, what: str, unit: str) -> None:
    """Raise a clear error when the anomalous or the normal class is missing."""
    if n_pos == 0 or n_neg == 0:
        present = "normal" if n_pos == 0 else "anomalous"
        msg = (
            f"{what} is undefined when only one class is present: all {n_pos + n_neg} "
            f"{unit} are {present}; at least one anomalous and one normal are needed"
        )
        raise InputError(msg)


# ---------------------------------------------------------------- shared kernels


def _mann_whitney_auc(pos_sorted: np.ndarray, neg_sorted: np.ndarray) -> float:
    """AUROC = (#{pos > neg} + 0.5 #{pos == neg}) / (n_pos n_neg), exact in integers.

    Args:
        pos_sorted: ascending scores of the positive samples.
        neg_sorted: ascending scores of the negative samples (same dtype).

    Returns:
        The AUROC, equal to the trapezoidal area under the ROC curve.
    """
    # left[i] = #neg < pos[i], right[i] = #neg <= pos[i]; left + right = 2 #less + #equal.
    twice_u = int(np.searchsorted(neg_sorted, pos_sorted, side="left").sum(dtype=np.int64))
    twice_u += int(np.searchsorted(neg_sorted, pos_sorted, side="right").sum(dtype=np.int64))
    return twice_u / (2 * int(pos_sorted.size) * int(neg_sorted.size))


def _pr_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True/false-positive counts at every distinct threshold, highest threshold first.

    Same construction as scikit-learn's binary classification curve: samples sorted
    by score descending, and one point per distinct score (ties grouped).
    """
    order = np.argsort(s, kind="stable")[::-1]
    s_desc = s[order]
    y_desc = y[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(s_desc)), s_desc.size - 1]
    tps = np.cumsum(y_desc, dtype=np.int64)[last_of_group]
    fps = (last_of_group + 1) - tps
    return tps, fps


# ------------------------------------------------------------------- image level


def auroc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve, identical to ``sklearn.metrics.roc_auc_score``.

    Ties are handled like scikit-learn's trapezoidal ROC: a tied positive/negative
    pair counts one half.

    Args:
        labels: 1-D ground truth, bool or 0/1 (1 = anomalous).
        scores: 1-D anomaly scores of the same length, higher = more anomalous.

    Returns:
        The AUROC in [0, 1].

    Raises:
        InputError: (a ``ValueError``) when the lengths differ, the inputs are empty or
            not 1-D, labels are not binary, scores contain NaN/inf, or only one class
            is present.
    """
    y, s = _as_labels(labels, scores)
    n_pos = int(np.count_nonzero(y))
    _require_both_classes(n_pos, y.size - n_pos, "AUROC", "samples")
    pos = np.sort(s[y])
    neg = np.sort(s[~y])
    return _mann_whitney_auc(pos, neg)


def average_precision(labels: Any, scores: Any) -> float:
    """Average precision, identical to ``sklearn.metrics.average_precision_score``.

    The step-wise (non-interpolated) sum ``sum_n (R_n - R_{n-1}) P_n`` over the
    distinct score thresholds, tied scores forming a single threshold.

    Args:
        labels: 1-D ground truth, bool or 0/1 (1 = anomalous).
        scores: 1-D anomaly scores of the same length, higher = more anomalous.

    Returns:
        The AP in [0, 1].

    Raises:
        InputError: (a ``ValueError``) on invalid inputs (see :func:`auroc`) or when there
            is no positive sample (recall is undefined). Only positives is allowed
            (AP = 1), as in scikit-learn.
    """
    y, s = _as_labels(labels, scores)
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0:
        msg = "average precision is undefined without any anomalous (positive) sample"
        raise InputError(msg)
    tps, fps = _pr_counts(y, s)
    precision = tps / (tps + fps)
    d_recall = np.diff(tps, prepend=0) / n_pos
    return float(max(0.0, np.sum(d_recall * precision)))


def f1_max(labels: Any, scores: Any) -> float:
    """Best F1 over all thresholds of the precision-recall curve ("F1-max").

    As anomalib / ADer compute it from ``precision_recall_curve``: the maximum of
    ``2 P R / (P + R)`` over the distinct score thresholds (the curve's extra
    ``(R=0, P=1)`` end point has F1 = 0). Computed as ``2 TP / (TP + FP + n_pos)``,
    which is the same quantity without a 0/0.

    Args:
        labels: 1-D ground truth, bool or 0/1 (1 = anomalous).
        scores: 1-D anomaly scores of the same length, higher = more anomalous.

    Returns:
        The F1-max in (0, 1].

    Raises:
        InputError: (a ``ValueError``) on invalid inputs (see :func:`auroc`) or when there
            is no positive sample.
    """
    y, s = _as_labels(labels, scores)
    n_pos = int(np.count_nonzero(y))
    if n_pos == 0:
        msg = "F1-max is undefined without any anomalous (positive) sample"
        raise InputError(msg)
    tps, fps = _pr_counts(y, s)
    return float(np.max(2.0 * tps / (tps + fps + n_pos)))


def image_metrics(labels: Any, scores: Any) -> dict[str, float]:
    """All image-level metrics at once.

    Args:
        labels: 1-D ground truth per image, bool or 0/1 (1 = anomalous).
        scores: 1-D image anomaly scores.

    Returns:
        ``{"image_auroc", "image_ap", "image_f1_max"}`` as Python floats.

    Raises:
        InputError: (a ``ValueError``) as :func:`auroc`.
    """
    return {
        "image_auroc": auroc(labels, scores),
        "image_ap": average_precision(labels, scores),
        "image_f1_max": f1_max(labels, scores),
    }
