"""What an Inspector returns per frame: the verdict, maps, defect regions and stage timings."""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import InitVar, dataclass
from enum import Enum
from typing import Any

import numpy as np

from protoinspect.sdk.errors import InputError


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
        model_map: H' x W' float32 anomaly map at the model's input size (always there; what the
            regions were found on).
        mask: H x W bool object mask at frame resolution, or None when no mask was computed: masker
            ``"none"``, or an OK frame (the mask is computed only for frames whose regions or classes
            need it, unless ``InspectorConfig.mask_every_frame``).
        defects: anomalous regions inside the mask (boxes and areas in frame pixels); empty when the
            verdict is OK.
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
        frame_size: (H, W) of the frame; None: ``model_map``'s shape (a map given at frame size).
        frame_map: (constructor only) the frame-resolution map when already made; None: made on
            first access of :attr:`anomaly_map`.

    The frame-resolution map is :attr:`anomaly_map`, made on first access (4 bytes per frame pixel:
    256 MB for an 8000x8000 frame) unless the Inspector made it already (``InspectorConfig.frame_map``).
    """

    verdict: Verdict
    anomaly_score: float
    model_map: np.ndarray
    mask: np.ndarray | None
    defects: tuple[Defect, ...]
    timings_ms: Mapping[str, float]
    over_budget: bool
    bundle_id: str
    frame_index: int
    mask_empty: bool = False
    mask_reused: bool = False
    image_class_id: int | None = None
    image_class_name: str | None = None
    frame_size: tuple[int, int] | None = None
    frame_map: InitVar[np.ndarray | None] = None

    def __post_init__(self, frame_map: np.ndarray | None) -> None:
        size = tuple(self.model_map.shape) if self.frame_size is None else tuple(int(v) for v in self.frame_size)
        object.__setattr__(self, "frame_size", size)
        if frame_map is not None and tuple(frame_map.shape) != size:
            raise InputError(f"frame_map has shape {frame_map.shape}, the frame is {size}")
        if frame_map is None and size == tuple(self.model_map.shape):
            frame_map = self.model_map
        object.__setattr__(self, "_frame_map", frame_map)
        object.__setattr__(self, "_frame_map_lock", threading.Lock())

    @property
    def anomaly_map(self) -> np.ndarray:
        """H x W float32 anomaly map at frame resolution: bilinear upsampling of :attr:`model_map`.

        Made on the first access and kept (later accesses return the same array); the model-size
        map is the cheap one to keep, send or store.
        """
        with self._frame_map_lock:  # type: ignore[attr-defined]
            if self._frame_map is None:  # type: ignore[attr-defined]
                from protoinspect.sdk.preprocess import resize_map

                object.__setattr__(self, "_frame_map", resize_map(self.model_map, self.frame_size))  # type: ignore[arg-type]
            return self._frame_map  # type: ignore[attr-defined]

    @property
    def has_frame_map(self) -> bool:
        """Whether the frame-resolution :attr:`anomaly_map` exists already (reading it does not allocate)."""
        return self._frame_map is not None  # type: ignore[attr-defined]

    def to_dict(self, include_maps: bool = False) -> dict[str, Any]:
        """JSON-safe form of the result.

        Args:
            include_maps: also include ``anomaly_map`` at frame resolution (nested lists of floats;
                made now if it was not) and ``mask`` (nested lists of bools, or None); otherwise only
                their shapes are given.

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
            "map_shape": [int(v) for v in self.frame_size],  # type: ignore[union-attr]
            "model_map_shape": [int(v) for v in self.model_map.shape],
        }
        if include_maps:
            d["anomaly_map"] = np.asarray(self.anomaly_map, np.float32).astype(float).tolist()
            d["mask"] = None if self.mask is None else np.asarray(self.mask, bool).tolist()
        return d
