"""Overlays for people at the line: anomaly heat map, defect boxes, verdict and score on the frame."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from protoinspect.sdk.errors import InputError
from protoinspect.sdk.preprocess import resize_map, to_rgb, validate_frame
from protoinspect.sdk.result import InspectionResult, Verdict

# BGR colours of the verdict text and boxes
VERDICT_COLORS: dict[Verdict, tuple[int, int, int]] = {
    Verdict.OK: (60, 200, 60),
    Verdict.ANOMALOUS: (40, 40, 235),
    Verdict.REJECTED: (0, 165, 255),
}


def _cv2() -> Any:
    from protoinspect.sdk._imports import require

    return require("cv2")


def normalize_map(anomaly_map: np.ndarray, pixel_threshold: float | None = None) -> np.ndarray:
    """Map anomaly values to uint8 0..255 with the pixel threshold at the middle of the range.

    Args:
        anomaly_map: HxW float anomaly map.
        pixel_threshold: the value drawn at mid-range (128). With a finite threshold > 0 the range
            is ``[0, 2 * threshold]``; otherwise (None, <= 0 or infinite) it is the map's own
            min..max, centred on the threshold when finite. Values outside are clipped.

    Returns:
        HxW uint8.
    """
    m = np.nan_to_num(np.asarray(anomaly_map, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    t = pixel_threshold
    if t is not None and math.isfinite(t) and t > 0:
        lo, hi = 0.0, 2.0 * float(t)
    else:
        lo, hi = (float(m.min()), float(m.max())) if m.size else (0.0, 1.0)
        if t is not None and math.isfinite(t):
            half = max(abs(hi - t), abs(t - lo))
            lo, hi = t - half, t + half
    span = hi - lo if hi > lo else 1.0
    return np.clip((m - lo) / span * 255.0, 0, 255).astype(np.uint8)


def overlay(frame_bgr: np.ndarray, result: InspectionResult, alpha: float = 0.5, *,
            pixel_threshold: float | None = None) -> np.ndarray:
    """Draw the anomaly heat map, defect boxes and the verdict with its score on a copy of the frame.

    Args:
        frame_bgr: HxWx3 uint8 BGR or HxW uint8 gray frame the result belongs to.
        result: the frame's inspection result.
        alpha: weight of the heat map (0: frame only, 1: heat map only).
        pixel_threshold: anomaly value shown at the middle of the colour map (JET: green-cyan);
            pass the Inspector's ``pixel_threshold``. None: the map's own range (see
            :func:`normalize_map`).

    Returns:
        HxWx3 uint8 BGR image (gray frames come back as 3-channel images).

    Raises:
        InputError: invalid frame or ``alpha`` outside [0, 1].
    """
    cv2 = _cv2()
    frame = validate_frame(frame_bgr)
    if not 0.0 <= float(alpha) <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha!r}")
    base = to_rgb(frame, "rgb")  # gray -> 3 channels; a BGR frame keeps its order (drawn as BGR)
    h, w = base.shape[:2]
    if result.has_frame_map and result.anomaly_map.shape == (h, w):
        amap = np.asarray(result.anomaly_map, np.float32)
    else:  # from the model-size map: the result's frame-size map is not made just for drawing
        amap = resize_map(result.model_map, (h, w))
    heat = cv2.applyColorMap(normalize_map(amap, pixel_threshold), cv2.COLORMAP_JET)
    out = cv2.addWeighted(base, 1.0 - float(alpha), heat, float(alpha), 0.0)
    color = VERDICT_COLORS.get(result.verdict, (255, 255, 255))
    thickness = max(1, round(min(h, w) / 200))
    for defect in result.defects:
        x1, y1, x2, y2 = (int(v) for v in defect.bbox_xyxy)
        cv2.rectangle(out, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), color, thickness)
    text = f"{result.verdict.value} {result.anomaly_score:.3f}"
    scale = max(0.3, min(h, w) / 500)
    (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    cv2.rectangle(out, (0, 0), (min(w - 1, tw + 6), min(h - 1, th + baseline + 6)), (0, 0, 0), -1)
    cv2.putText(out, text, (3, th + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)
    return out


def thumbnail(image: np.ndarray, max_side: int = 256) -> np.ndarray:
    """Shrink ``image`` so its longer side is at most ``max_side`` pixels (never enlarges)."""
    cv2 = _cv2()
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
