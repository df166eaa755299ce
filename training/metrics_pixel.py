"""Pixel-level anomaly-detection metrics (pixel AUROC, AUPRO) for full test sets.

Public names are re-exported by :mod:`protoinspect.training.metrics`, which documents the exact, sort-once
algorithms; input checks and the Mann-Whitney kernel come from :mod:`protoinspect.training.metrics_image`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from protoinspect.sdk.errors import InputError
from protoinspect.training.metrics_image import _as_scores, _check_finite, _mann_whitney_auc, _require_both_classes

__all__ = [
    "aupro",
    "pixel_auroc",
    "pixel_metrics",
]

# 8-connectivity within one image.
_STRUCTURE_8 = np.ones((3, 3), dtype=bool)


# --------------------------------------------------------------------------- checks


def _as_pixel_inputs(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate (N, H, W) masks and maps (a single (H, W) pair is accepted too).

    Returns:
        (bool masks of shape (N, H, W), maps of shape (N, H, W)); views where possible.
    """
    m = np.asarray(masks)
    a = _as_scores(maps, "maps")
    if a.ndim not in (2, 3):
        msg = f"maps must have shape (N, H, W) or (H, W) (got {a.shape})"
        raise InputError(msg)
    if m.shape != a.shape:
        msg = f"masks and maps differ in shape ({m.shape} != {a.shape})"
        raise InputError(msg)
    if m.dtype != np.bool_:
        if m.dtype.kind not in "iuf":
            msg = f"masks must be bool or numeric (got dtype {m.dtype})"
            raise InputError(msg)
        _check_finite(m, "masks")
        m = m != 0  # 0/1 and 0/255 masks alike: nonzero is anomalous
    if a.ndim == 2:
        m, a = m[None], a[None]
    if a.size == 0:
        msg = "masks and maps are empty"
        raise InputError(msg)
    return m, a


# ---------------------------------------------------------------- AUPRO kernels


def _normal_tail(neg: np.ndarray, max_fpr: float, presorted: bool) -> tuple[np.ndarray, int]:
    """The highest normal scores AUPRO needs, sorted ascending, and #normals >= the lowest.

    With ``m = floor(max_fpr * n_neg)`` that is the ``min(n_neg, m + 1)`` highest scores
    (see :func:`_aupro_core`); only those get sorted, after an O(n) partition.

    Args:
        neg: the normal scores, ascending when ``presorted``; otherwise partitioned in
            place (it must be a private copy).
        max_fpr: integration limit in (0, 1].
        presorted: whether ``neg`` is already sorted ascending.

    Returns:
        (tail, count of normal scores >= tail[0]); ``tail`` is a view into ``neg``.
    """
    n_neg = int(neg.size)
    k = min(n_neg, int(np.floor(max_fpr * n_neg)) + 1)
    if not presorted:
        if k < n_neg:
            neg.partition(n_neg - k)  # the k highest scores now sit at the end
        neg[n_neg - k :].sort()
    tail = neg[n_neg - k :]
    n_at_least_lowest = k + int(np.count_nonzero(neg[: n_neg - k] == tail[0]))
    return tail, n_at_least_lowest


def _aupro_core(
    pos_sorted: np.ndarray,
    pos_weight_sorted: np.ndarray,
    neg_tail: np.ndarray,
    n_neg: int,
    n_at_least_lowest: int,
    max_fpr: float,
) -> float:
    """Exact AUPRO from sorted anomalous scores and the top of the normal scores.

    The PRO-vs-FPR curve is piecewise linear between consecutive distinct thresholds
    (a pixel is predicted anomalous when its score >= t). Only the steps where the FPR
    grows have area, and the FPR grows exactly when t crosses a distinct normal score
    u: from ``(#neg > u, W(pos > u))`` to ``(#neg >= u, W(pos >= u))``, where
    ``W(pos >= u)`` (the PRO at threshold u) is the summed weight ``1 / (K size_k)`` of
    the anomalous pixels scoring >= u. Every such step lying entirely below
    ``max_fpr`` adds ``c_u / n_neg * (W(pos > u) + W(pos >= u)) / 2``; swapping the two
    sums, that total is ``sum_i w_i (#{neg < s_i} + #{neg <= s_i}) / (2 n_neg)`` over
    those normal pixels -- a weighted Mann-Whitney count done with ``searchsorted``.
    The one step that crosses ``max_fpr`` is added as a trapezoid cut there, the curve
    interpolated linearly; steps past it add nothing. Vertical segments (PRO rising at a
    constant FPR) have no area. This is the trapezoid integral of the full curve.

    With ``m = floor(max_fpr n_neg) < n_neg``, the crossing step is that of the
    ``(m + 1)``-th highest normal score u: ``#neg >= u >= m + 1 > max_fpr n_neg``, while
    every higher normal score v has ``#neg >= v <= m``, a step below the limit.

    Args:
        pos_sorted: ascending scores of the anomalous pixels.
        pos_weight_sorted: ``1 / (K * size of its component)`` per anomalous pixel, in
            the order of ``pos_sorted``.
        neg_tail: the ``min(n_neg, m + 1)`` highest normal scores, ascending (same dtype
            as pos_sorted), from :func:`_normal_tail`.
        n_neg: number of normal pixels.
        n_at_least_lowest: number of normal pixels scoring >= ``neg_tail[0]``.
        max_fpr: upper integration limit in (0, 1].

    Returns:
        The normalised area in [0, 1].
    """
    area = 0.0
    if int(np.floor(max_fpr * n_neg)) >= n_neg:  # max_fpr == 1: no step crosses the limit
        included = neg_tail
    else:
        u = neg_tail[0]
        past = int(np.searchsorted(neg_tail, u, side="right"))
        fpr_lo = (neg_tail.size - past) / n_neg  # at a threshold just above u
        fpr_hi = n_at_least_lowest / n_neg  # at threshold u
        if fpr_lo < max_fpr:
            pro_lo = float(pos_weight_sorted[np.searchsorted(pos_sorted, u, side="right") :].sum())
            pro_hi = float(pos_weight_sorted[np.searchsorted(pos_sorted, u, side="left") :].sum())
            x_end = min(max_fpr, fpr_hi)
            y_end = pro_lo + (pro_hi - pro_lo) * (x_end - fpr_lo) / (fpr_hi - fpr_lo)
            area += (x_end - fpr_lo) * (pro_lo + y_end) * 0.5
        included = neg_tail[past:]  # every normal score above u
    twice = np.searchsorted(included, pos_sorted, side="left")
    twice += np.searchsorted(included, pos_sorted, side="right")
    area += float(np.dot(pos_weight_sorted, twice)) / (2 * n_neg)
    return min(1.0, max(0.0, area / max_fpr))


def _split_pixels(m: np.ndarray, a: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (anomalous scores, normal scores) in C order, unsorted, in the maps' dtype."""
    n_pos = int(np.count_nonzero(m))
    _require_both_classes(n_pos, int(m.size) - n_pos, what, "pixels")
    return a[m], a[~m]


def _component_weights(m: np.ndarray) -> np.ndarray:
    """Per anomalous pixel (C order, as ``maps[masks]``): ``1 / (K * size of its region)``.

    Regions are the 8-connected components of each image's mask (a region never spans
    two images); K is their total number over all images.
    """
    parts: list[np.ndarray] = []
    offset = 0
    for mask in m:
        if not mask.any():
            continue  # an empty mask only contributes normal pixels
        lab, k = ndimage.label(mask, structure=_STRUCTURE_8)
        parts.append(lab[mask].astype(np.int64) + (offset - 1))
        offset += int(k)
    comp = np.concatenate(parts)
    sizes = np.bincount(comp, minlength=offset).astype(np.float64)
    return (1.0 / (offset * sizes))[comp]


def _quantize(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Index of the highest threshold <= value (values >= thresholds[i] iff index >= i)."""
    return (np.searchsorted(thresholds, values, side="right") - 1).astype(np.int32)


def _check_aupro_args(max_fpr: float, num_thresholds: int | None) -> None:
    """Validate the AUPRO options."""
    if not (0.0 < float(max_fpr) <= 1.0):
        msg = f"max_fpr must lie in (0, 1] (got {max_fpr})"
        raise InputError(msg)
    if num_thresholds is not None and (
        isinstance(num_thresholds, bool)
        or not isinstance(num_thresholds, (int, np.integer))
        or num_thresholds < 2
    ):
        msg = f"num_thresholds must be None (exact) or an integer >= 2 (got {num_thresholds})"
        raise InputError(msg)


def _aupro_pixels(
    m: np.ndarray,
    pos: np.ndarray,
    neg: np.ndarray,
    max_fpr: float,
    num_thresholds: int | None,
    sort_all_normals: bool,
) -> tuple[float, np.ndarray]:
    """AUPRO from the split pixels.

    Args:
        m: (N, H, W) bool masks.
        pos: scores of the anomalous pixels in C order (``maps[m]``).
        neg: scores of the normal pixels (a private copy): sorted in place when
            ``sort_all_normals`` (for reuse by pixel AUROC), else only partitioned.
        max_fpr: integration limit in (0, 1].
        num_thresholds: None for the exact curve, else the size of the threshold grid.
        sort_all_normals: sort every normal score, not only the top ``max_fpr`` part.

    Returns:
        (AUPRO, anomalous scores ascending).
    """
    weights = _component_weights(m)
    order = np.argsort(pos)
    pos_sorted = pos[order]
    w_sorted = weights[order]
    del weights, order
    if sort_all_normals:
        neg.sort()
    pos_q, neg_q = pos_sorted, neg
    if num_thresholds is not None:
        lo = min(float(pos_sorted[0]), float(neg.min()))
        hi = max(float(pos_sorted[-1]), float(neg.max()))
        thresholds = np.linspace(lo, hi, int(num_thresholds))
        # Quantising is monotone: sorted inputs stay sorted, the curve is read at the grid.
        pos_q, neg_q = _quantize(pos_sorted, thresholds), _quantize(neg, thresholds)
    tail, n_at_least_lowest = _normal_tail(neg_q, max_fpr, presorted=sort_all_normals)
    value = _aupro_core(pos_q, w_sorted, tail, int(neg_q.size), n_at_least_lowest, max_fpr)
    return value, pos_sorted


# ------------------------------------------------------------------- pixel level


def pixel_auroc(masks: Any, maps: Any) -> float:
    """AUROC over all pixels of all images (exact, scikit-learn tie semantics).

    Memory: one copy of the pixels in the maps' own dtype (split into anomalous and
    normal, each sorted in place) plus two int64 arrays of the anomalous-pixel count.
    Pass float32 maps to keep the copy at 4 bytes per pixel.

    Args:
        masks: (N, H, W) ground truth, bool or numeric (nonzero = anomalous, so 0/255
            masks work); a single (H, W) pair is accepted too.
        maps: anomaly maps of the same shape, higher = more anomalous.

    Returns:
        The pixel AUROC in [0, 1].

    Raises:
        InputError: (a ``ValueError``) when shapes differ, the maps hold NaN/inf, or
            there is no anomalous or no normal pixel.
    """
    m, a = _as_pixel_inputs(masks, maps)
    pos, neg = _split_pixels(m, a, "pixel AUROC")
    pos.sort()
    neg.sort()
    return _mann_whitney_auc(pos, neg)


def aupro(
    masks: Any,
    maps: Any,
    max_fpr: float = 0.3,
    num_thresholds: int | None = None,
) -> float:
    """Normalised area under the PRO curve up to ``max_fpr`` (MVTec AD "AUPRO").

    For a threshold t (pixel predicted anomalous when its score >= t): PRO(t) is the
    mean over all ground-truth regions (8-connected components of each mask, over all
    images) of the fraction of the region predicted anomalous, and FPR(t) is the
    fraction of all normal pixels predicted anomalous. The curve through every
    distinct score, from (0, 0) to (1, 1), is integrated with the trapezoid rule from
    FPR 0 to ``max_fpr`` (interpolated at ``max_fpr``) and divided by ``max_fpr``.

    The curve is computed exactly in O(P log P) for P pixels: components are labelled
    once, the scores sorted once, and FPR / PRO read from cumulative normal-pixel
    counts and cumulative ``1 / (K * region size)`` weights of the anomalous pixels.

    Args:
        masks: (N, H, W) ground truth, bool or numeric (nonzero = anomalous); a single
            (H, W) pair is accepted too. Images with empty masks only add normal pixels.
        maps: anomaly maps of the same shape, higher = more anomalous.
        max_fpr: upper FPR integration limit, in (0, 1]; 0.3 is the MVTec convention.
        num_thresholds: None (default) evaluates the curve at every distinct score
            (exact). An integer n evaluates it only at ``np.linspace(min, max, n)`` of
            the scores (compared in float64), like binned implementations do.

    Returns:
        The AUPRO in [0, 1]; a perfect map gives 1.0, a constant map ``max_fpr / 2``.

    Raises:
        InputError: (a ``ValueError``) when shapes differ, the maps hold NaN/inf, there
            is no anomalous or no normal pixel, or an option is out of range.
    """
    _check_aupro_args(max_fpr, num_thresholds)
    m, a = _as_pixel_inputs(masks, maps)
    pos, neg = _split_pixels(m, a, "AUPRO")
    value, _ = _aupro_pixels(m, pos, neg, float(max_fpr), num_thresholds, sort_all_normals=False)
    return value


def pixel_metrics(
    masks: Any,
    maps: Any,
    *,
    max_fpr: float = 0.3,
    num_thresholds: int | None = None,
) -> dict[str, float]:
    """Pixel AUROC and AUPRO at once, sharing one split and one sort of the pixels.

    Args:
        masks: (N, H, W) ground truth, bool or numeric (nonzero = anomalous).
        maps: anomaly maps of the same shape, higher = more anomalous.
        max_fpr: AUPRO integration limit (see :func:`aupro`).
        num_thresholds: AUPRO threshold grid (see :func:`aupro`); None = exact.

    Returns:
        ``{"pixel_auroc", "aupro"}`` as Python floats.

    Raises:
        InputError: (a ``ValueError``) as :func:`pixel_auroc` and :func:`aupro`.
    """
    _check_aupro_args(max_fpr, num_thresholds)
    m, a = _as_pixel_inputs(masks, maps)
    pos, neg = _split_pixels(m, a, "pixel AUROC / AUPRO")
    pro, pos_sorted = _aupro_pixels(
        m, pos, neg, float(max_fpr), num_thresholds, sort_all_normals=True
    )
    return {"pixel_auroc": _mann_whitney_auc(pos_sorted, neg), "aupro": pro}
