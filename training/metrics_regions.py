"""Region quality: how well predicted defect regions match the ground-truth masks.

Per image (:func:`image_region_quality`), with 8-connected components (as the runtime's region stage):

* ``iou``: IoU of the whole predicted mask vs the whole ground-truth mask (both empty: 1).
* ``gt_best_iou``: per ground-truth component, the best IoU with any single predicted component
  (one-to-one matching quality: a region split in two scores the larger half).
* ``gt_coverage``: per ground-truth component, the share of its pixels inside the predicted mask.
* a ground-truth component is **missed** when its best IoU is below :data:`MISS_IOU` (0.1: the
  prediction at best grazes it; the same order as PRO's overlap floor of "detected" regions);
* a predicted component is **false** when it shares no pixel with the ground truth.

:func:`region_quality` sums these over images: ``miss_rate`` = missed / all ground-truth regions,
``false_region_rate`` = false / all predicted regions, means and medians of the IoUs, and the share of
images with no predicted region at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from protoinspect.sdk._imports import require
from protoinspect.sdk.errors import InputError

#: a ground-truth region whose best IoU with a predicted region is below this is missed
MISS_IOU = 0.1


@dataclass(frozen=True)
class ImageRegionQuality:
    """Region quality of one image (see the module docstring).

    Attributes:
        iou: whole-mask IoU.
        gt_best_iou: best single-component IoU per ground-truth component.
        gt_coverage: covered share per ground-truth component.
        num_pred: predicted components.
        num_false: predicted components without any ground-truth pixel.
        num_missed: ground-truth components with best IoU < ``MISS_IOU``.
    """

    iou: float
    gt_best_iou: tuple[float, ...]
    gt_coverage: tuple[float, ...]
    num_pred: int
    num_false: int
    num_missed: int


def _components(mask: np.ndarray) -> tuple[int, np.ndarray]:
    cv2 = require("cv2")
    n, labels = cv2.connectedComponents(mask.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    return n - 1, labels


def _check(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, g = np.asarray(pred), np.asarray(gt)
    if p.dtype != np.bool_ or g.dtype != np.bool_ or p.ndim != 2 or p.shape != g.shape:
        raise InputError(f"pred and gt must be HxW bool masks of one shape, got {p.dtype} {p.shape} and "
                         f"{g.dtype} {g.shape}")
    return p, g


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU of two HxW bool masks; 1.0 when both are empty.

    Raises:
        InputError: not two bool masks of one shape.
    """
    p, g = _check(pred, gt)
    union = int(np.count_nonzero(p | g))
    return 1.0 if union == 0 else int(np.count_nonzero(p & g)) / union


def image_region_quality(pred: np.ndarray, gt: np.ndarray, miss_iou: float = MISS_IOU) -> ImageRegionQuality:
    """Region quality of one image's predicted mask against its ground-truth mask.

    Raises:
        InputError: not two bool masks of one shape.
    """
    p, g = _check(pred, gt)
    n_pred, p_lab = _components(p)
    n_gt, g_lab = _components(g)
    # joint histogram of (gt label, pred label) over all pixels: overlaps and component areas in one pass
    joint = np.bincount(g_lab.ravel() * (n_pred + 1) + p_lab.ravel(),
                        minlength=(n_gt + 1) * (n_pred + 1)).reshape(n_gt + 1, n_pred + 1)
    inter = joint[1:, 1:].astype(np.float64)  # n_gt x n_pred
    gt_area, pred_area = joint[1:].sum(1).astype(np.float64), joint[:, 1:].sum(0).astype(np.float64)
    best = (inter / (gt_area[:, None] + pred_area[None, :] - inter)).max(1) if n_pred else np.zeros(n_gt)
    coverage = inter.sum(1) / gt_area if n_gt else np.zeros(0)
    return ImageRegionQuality(iou=mask_iou(p, g), gt_best_iou=tuple(float(v) for v in best),
                              gt_coverage=tuple(float(v) for v in coverage), num_pred=n_pred,
                              num_false=int((inter.sum(0) == 0).sum()) if n_pred else 0,
                              num_missed=int((best < miss_iou).sum()))


def region_quality(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], miss_iou: float = MISS_IOU
                   ) -> dict[str, Any]:
    """Summary of :func:`image_region_quality` over images.

    Returns:
        ``num_images``, ``num_gt_regions``, ``num_pred_regions``, ``image_iou_mean`` /
        ``image_iou_median``, ``region_iou_mean`` / ``region_iou_median`` (per ground-truth region best
        IoU), ``region_coverage_mean``, ``miss_rate``, ``false_region_rate`` (None without predicted
        regions), ``false_regions_per_image``, ``empty_prediction_rate``, ``pred_regions_per_image``,
        ``gt_regions_per_image``, ``miss_iou``.

    Raises:
        InputError: no images, lists of different lengths, or invalid masks.
    """
    if len(preds) != len(gts) or not preds:
        raise InputError(f"need as many predicted as ground-truth masks (>= 1), got {len(preds)} and {len(gts)}")
    per = [image_region_quality(p, g, miss_iou) for p, g in zip(preds, gts)]
    best = np.asarray([v for q in per for v in q.gt_best_iou])
    cover = np.asarray([v for q in per for v in q.gt_coverage])
    ious = np.asarray([q.iou for q in per])
    n_pred, n_false = sum(q.num_pred for q in per), sum(q.num_false for q in per)
    n = len(per)
    return {
        "num_images": n, "num_gt_regions": len(best), "num_pred_regions": int(n_pred),
        "image_iou_mean": float(ious.mean()), "image_iou_median": float(np.median(ious)),
        "region_iou_mean": float(best.mean()) if len(best) else None,
        "region_iou_median": float(np.median(best)) if len(best) else None,
        "region_coverage_mean": float(cover.mean()) if len(cover) else None,
        "miss_rate": float(sum(q.num_missed for q in per) / len(best)) if len(best) else None,
        "false_region_rate": float(n_false / n_pred) if n_pred else None,
        "false_regions_per_image": n_false / n,
        "empty_prediction_rate": sum(q.num_pred == 0 for q in per) / n,
        "pred_regions_per_image": n_pred / n, "gt_regions_per_image": len(best) / n,
        "miss_iou": float(miss_iou),
    }
