"""Detector stage: frame -> model-size RGB image -> backend -> anomaly map at frame resolution and score."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from protoinspect.sdk.backends.base import DETECTOR_FEATURES, DETECTOR_INPUT, DETECTOR_OUTPUTS, Backend
from protoinspect.sdk.preprocess import PreprocessSpec, resize_map, resize_to_rgb


@dataclass(frozen=True, eq=False)
class DetectorOutput:
    """Output of the detector for one frame.

    Attributes:
        anomaly_map: H x W float32 at frame resolution.
        score: image-level anomaly score.
        model_map: H' x W' float32 map at the model's input size (what discovery works on).
        features: C x h x w float32 fused encoder features (the defect classifier's tokens); None
            when the graph has no ``features`` output (exported before it existed).
    """

    anomaly_map: np.ndarray
    score: float
    model_map: np.ndarray | None = None
    features: np.ndarray | None = None


class DetectorStage:
    """Runs the detector graph on one frame; the graph itself normalises the uint8 RGB input."""

    def __init__(self, backend: Backend, spec: PreprocessSpec, color_order: Literal["rgb", "bgr"]) -> None:
        """Keep the backend and how frames are resized.

        Args:
            backend: an open backend executing the bundle's detector graph.
            spec: the bundle's pre-processing (model input size).
            color_order: channel order of 3-channel frames handed in.
        """
        self.backend = backend
        self.spec = spec
        self.color_order = color_order

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        """Validated HxW or HxWx3 uint8 frame -> model-size H' x W' x 3 uint8 RGB (resized first)."""
        return resize_to_rgb(frame, self.spec, self.color_order)

    def run_prepared(self, image_rgb: np.ndarray, frame_size: tuple[int, int]) -> DetectorOutput:
        """Run the backend on one model-size RGB image and resize its map to ``frame_size`` (h, w)."""
        out = self.backend.run({DETECTOR_INPUT: image_rgb[None]})
        amap = out[DETECTOR_OUTPUTS[0]][0, 0]  # H' x W'
        score = float(out[DETECTOR_OUTPUTS[1]][0])
        feats = out.get(DETECTOR_FEATURES)
        return DetectorOutput(anomaly_map=resize_map(amap, frame_size), score=score, model_map=amap,
                              features=None if feats is None else feats[0])

    def detect(self, frame: np.ndarray) -> DetectorOutput:
        """Anomaly map and score of one frame.

        Args:
            frame: validated HxW gray or HxWx3 uint8 frame in ``color_order`` (any strides).

        Returns:
            The map (H x W float32, bilinear from the model size) and the score.

        Raises:
            BackendError: the backend is closed or failed.
        """
        return self.run_prepared(self.prepare(frame), frame.shape[:2])
