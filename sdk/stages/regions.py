"""Region extraction: anomaly map + pixel threshold + object mask -> defect regions."""

from __future__ import annotations

import numpy as np

from sdk._imports import require
from sdk.result import Defect


def extract_defects(anomaly_map: np.ndarray, pixel_threshold: float, mask: np.ndarray,
                    min_area_px: int) -> tuple[Defect, ...]:
    """Connected regions (8-connectivity) of ``anomaly_map > pixel_threshold`` inside ``mask``.

    Args:
        anomaly_map: H x W float32 map at frame resolution.
        pixel_threshold: map values strictly above it are anomalous.
        mask: H x W bool object mask; an all-False mask means "no object found" and the whole map
            is searched instead.
        min_area_px: regions with fewer pixels are dropped.

    Returns:
        Defects sorted by decreasing score, unclassified (class_id/class_name None, is_novel False).
    """
    cv2 = require("cv2")
    binary = anomaly_map > pixel_threshold
    if mask.any():
        binary &= mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    defects: list[Defect] = []
    for label in range(1, count):
        area = int(stats[label, cv2.CC_STAT_AREA])
        if area < min_area_px:
            continue
        x, y = int(stats[label, cv2.CC_STAT_LEFT]), int(stats[label, cv2.CC_STAT_TOP])
        w, h = int(stats[label, cv2.CC_STAT_WIDTH]), int(stats[label, cv2.CC_STAT_HEIGHT])
        window = labels[y:y + h, x:x + w] == label
        score = float(anomaly_map[y:y + h, x:x + w][window].max())
        defects.append(Defect(class_id=None, class_name=None, is_novel=False, score=score,
                              bbox_xyxy=(x, y, x + w, y + h), area_px=area))
    defects.sort(key=lambda d: -d.score)
    return tuple(defects)
