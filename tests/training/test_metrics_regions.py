"""Region quality on hand-made masks with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from protoinspect.sdk.errors import InputError
from protoinspect.training.metrics_regions import MISS_IOU, image_region_quality, mask_iou, region_quality


def _box(y0: int, y1: int, x0: int, x1: int, size: int = 20) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_mask_iou_known_values() -> None:
    a, b = _box(0, 4, 0, 4), _box(0, 4, 2, 6)  # 16 and 16 px, 8 shared
    assert mask_iou(a, b) == pytest.approx(8 / 24)
    assert mask_iou(a, a) == 1.0
    assert mask_iou(np.zeros((5, 5), bool), np.zeros((5, 5), bool)) == 1.0
    assert mask_iou(a, _box(10, 12, 10, 12)) == 0.0


def test_image_quality_split_miss_and_false() -> None:
    gt = _box(0, 4, 0, 4) | _box(10, 14, 10, 14)  # two GT regions of 16 px
    pred = _box(0, 4, 0, 2) | _box(0, 4, 3, 4) | _box(17, 19, 17, 19)  # first GT split 8 + 4, one false blob
    q = image_region_quality(pred, gt)
    assert q.num_pred == 3 and q.num_false == 1 and q.num_missed == 1
    assert q.gt_best_iou == pytest.approx((8 / 16, 0.0))
    assert q.gt_coverage == pytest.approx((12 / 16, 0.0))
    assert q.iou == pytest.approx(12 / (32 + 4))


def test_grazing_overlap_counts_as_missed() -> None:
    gt = _box(0, 10, 0, 10)  # 100 px
    pred = _box(9, 19, 9, 19)  # 100 px, 1 shared: IoU 1/199 < MISS_IOU, not a false region
    q = image_region_quality(pred, gt)
    assert q.gt_best_iou[0] < MISS_IOU and q.num_missed == 1 and q.num_false == 0
    assert image_region_quality(pred, gt, miss_iou=0.001).num_missed == 0


def test_summary() -> None:
    gt = [_box(0, 4, 0, 4), _box(5, 10, 5, 10)]
    pred = [_box(0, 4, 0, 4), np.zeros((20, 20), bool)]
    s = region_quality(pred, gt)
    assert s["num_images"] == 2 and s["num_gt_regions"] == 2 and s["num_pred_regions"] == 1
    assert s["image_iou_mean"] == pytest.approx(0.5) and s["region_iou_mean"] == pytest.approx(0.5)
    assert s["miss_rate"] == 0.5 and s["false_region_rate"] == 0.0 and s["empty_prediction_rate"] == 0.5
    assert s["pred_regions_per_image"] == 0.5 and s["gt_regions_per_image"] == 1.0
    none = region_quality([np.zeros((20, 20), bool)], [gt[0]])
    assert none["false_region_rate"] is None and none["miss_rate"] == 1.0


def test_errors() -> None:
    with pytest.raises(InputError):
        mask_iou(np.zeros((4, 4), np.uint8), np.zeros((4, 4), bool))
    with pytest.raises(InputError):
        image_region_quality(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
    with pytest.raises(InputError):
        region_quality([], [])
    with pytest.raises(InputError):
        region_quality([np.zeros((4, 4), bool)], [])
