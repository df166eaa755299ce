"""What an Inspector returns per frame: the verdict, maps, defect regions and stage timings."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np


class Verdict(str, Enum):
    """Decision for one frame."""

    OK = "OK"
    ANOMALOUS = "ANOMALOUS"
    REJECTED = "REJECTED"


def _json_float(value: float) -> float | str:
    value = float(value)
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


@dataclass(frozen=True)
class Defect:
    """One connected anomalous region of a frame.

    Attributes:
        class_id: defect class id; None until defect classification lands (no classes are invented).
        class_name: defect class name; None likewise.
        is_novel: whether the region belongs to a newly discovered class; False until then.
        score: maximum anomaly-map value inside the region.
        bbox_xyxy: (x1, y1, x2, y2) in frame pixels; x1/y1 inclusive, x2/y2 exclusive.
        area_px: number of frame pixels in the region.
        class_score: the classifier's confidence for ``class_id`` (None when unclassified).
    """

    class_id: int | None
    class_name: str | None
    is_novel: bool
    score: float
    bbox_xyxy: tuple[int, int, int, int]
    area_px: int
    class_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (Python ints and floats only)."""
        return {
            "class_id": None if self.class_id is None else int(self.class_id),
            "class_name": self.class_name,
            "is_novel": bool(self.is_novel),
            "score": _json_float(self.score),
            "bbox_xyxy": [int(v) for v in self.bbox_xyxy],
            "area_px": int(self.area_px),
            "class_score": None if self.class_score is None else _json_float(self.class_score),
        }


@dataclass(frozen=True, eq=False)
class InspectionResult:
    """Result of inspecting one frame (numpy arrays and Python scalars only).

    Attributes:
        verdict: OK (score below the image threshold), ANOMALOUS, or REJECTED.
        anomaly_score: image-level anomaly score from the detector.
        anomaly_map: H x W float32 anomaly map at frame resolution (bilinear upsampling of the
            model-size map; an 8000x8000 frame gives a 256 MB map).
        mask: H x W bool object mask at frame resolution (all True with masker "none").
        defects: anomalous regions inside the mask; empty when the verdict is OK.
        timings_ms: milliseconds per stage (``"mask"``, ``"detect"`` (pre-processing included),
            ``"regions"`` and ``"classify"`` (0.0 when skipped: OK fast path, no classifier)) and
            ``"total"``.
        over_budget: True when ``timings_ms["total"]`` exceeded the configured latency budget.
        bundle_id: id of the model bundle that produced the result.
        frame_index: 0-based count of frames this Inspector has inspected before this one.
        mask_empty: the masker found no object; defect regions were then searched in the whole map.
        mask_reused: the mask is the one of an earlier frame (``mask_reuse_frames`` policy).
        image_class_id / image_class_name: the frame's defect class after merging its regions
            (None when the frame is OK or the bundle has no classifier).
    """

    verdict: Verdict
    anomaly_score: float
    anomaly_map: np.ndarray
    mask: np.ndarray
    defects: tuple[Defect, ...]
    timings_ms: Mapping[str, float]
    over_budget: bool
    bundle_id: str
    frame_index: int
    mask_empty: bool = False
    mask_reused: bool = False
    image_class_id: int | None = None
    image_class_name: str | None = None

    def to_dict(self, include_maps: bool = False) -> dict[str, Any]:
        """JSON-safe form of the result.

        Args:
            include_maps: also include ``anomaly_map`` (nested lists of floats) and ``mask`` (nested
                lists of bools); otherwise only their shape is given.

        Returns:
            A dict that ``json.dumps`` accepts (non-finite floats as the strings "inf"/"-inf"/"nan").
        """
        d: dict[str, Any] = {
            "verdict": self.verdict.value,
            "anomaly_score": _json_float(self.anomaly_score),
            "defects": [defect.to_dict() for defect in self.defects],
            "timings_ms": {str(k): _json_float(v) for k, v in self.timings_ms.items()},
            "over_budget": bool(self.over_budget),
            "bundle_id": str(self.bundle_id),
            "frame_index": int(self.frame_index),
            "mask_empty": bool(self.mask_empty),
            "mask_reused": bool(self.mask_reused),
            "image_class_id": None if self.image_class_id is None else int(self.image_class_id),
            "image_class_name": self.image_class_name,
            "map_shape": [int(v) for v in self.anomaly_map.shape],
        }
        if include_maps:
            d["anomaly_map"] = np.asarray(self.anomaly_map, np.float32).astype(float).tolist()
            d["mask"] = np.asarray(self.mask, bool).tolist()
        return d
