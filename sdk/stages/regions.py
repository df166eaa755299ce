"""Region extraction: anomaly map + pixel threshold + object mask -> defect regions."""

from __future__ import annotations

import numpy as np

from protoinspect.sdk._imports import require
from protoinspect.sdk.result import Defect

WORKING_SIDE = 1024  # regions of larger maps are found on a copy resized to this long side



def extract_defects(anomaly_map: np.ndarray, pixel_threshold: float, mask: np.ndarray,
                    min_area_px: int, working_side: int = WORKING_SIDE) -> tuple[Defect, ...]:
    """Connected regions (8-connectivity) of ``anomaly_map > pixel_threshold`` inside ``mask``.

    Maps longer than ``working_side`` pixels (e.g. 8000x8000 frames) are searched on a bilinear copy
    (nearest for the mask) resized to that long side, so memory stays bounded; boxes are then scaled
    back to frame pixels (rounded outwards) and areas by the pixel ratio. The maps come from the
    model-size map, so this loses no detail the model saw.

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
    full_h, full_w = anomaly_map.shape
    scale = min(1.0, working_side / max(full_h, full_w))
    if scale < 1.0:
        size = (max(1, round(full_w * scale)), max(1, round(full_h * scale)))
        anomaly_map = cv2.resize(anomaly_map, size, interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    sy, sx = full_h / anomaly_map.shape[0], full_w / anomaly_map.shape[1]
    binary = anomaly_map > pixel_threshold
    if mask.any():
        binary &= mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    defects: list[Defect] = []
    for label in range(1, count):
        area = int(round(int(stats[label, cv2.CC_STAT_AREA]) * sx * sy))
        if area < min_area_px:
            continue
        x, y = int(stats[label, cv2.CC_STAT_LEFT]), int(stats[label, cv2.CC_STAT_TOP])
        w, h = int(stats[label, cv2.CC_STAT_WIDTH]), int(stats[label, cv2.CC_STAT_HEIGHT])
        window = labels[y:y + h, x:x + w] == label
        score = float(anomaly_map[y:y + h, x:x + w][window].max())
        box = (int(x * sx), int(y * sy), min(full_w, int(np.ceil((x + w) * sx))), min(full_h, int(np.ceil((y + h) * sy))))
        defects.append(Defect(class_id=None, class_name=None, is_novel=False, score=score, bbox_xyxy=box, area_px=area))
    defects.sort(key=lambda d: -d.score)
    return tuple(defects)
