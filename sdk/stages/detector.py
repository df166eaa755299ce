"""Detector stage: frame -> model-size RGB image -> backend -> model-size anomaly map and score.

Nothing here works at frame resolution: the frame-size map is made by whoever asks for it
(:meth:`DetectorOutput.frame_map`, :attr:`protoinspect.sdk.result.InspectionResult.anomaly_map`), and
the feature map stays with the runtime until a stage reads it (:meth:`DetectorOutput.features`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from protoinspect.sdk.backends.base import DETECTOR_FEATURES, DETECTOR_INPUT, DETECTOR_OUTPUTS, Backend, GraphOutputs
from protoinspect.sdk.preprocess import PreprocessSpec, resize_map, resize_to_rgb


@dataclass(frozen=True, eq=False)
class DetectorOutput:
    """Output of the detector for one frame.

    Attributes:
        model_map: H' x W' float32 anomaly map at the model's input size.
        score: image-level anomaly score.
        frame_size: (H, W) of the frame it belongs to.
        outputs: the backend run's outputs (the feature map is read from it on request); None: no
            features.
        image: the H' x W' x 3 uint8 RGB image the detector saw (the frame resized once; the ViT
            token source crops it); None when not kept.
    """

    model_map: np.ndarray
    score: float
    frame_size: tuple[int, int]
    outputs: GraphOutputs | None = None
    image: np.ndarray | None = None

    @property
    def has_features(self) -> bool:
        """Whether the graph has a ``features`` output (exports before it existed do not)."""
        return self.outputs is not None and DETECTOR_FEATURES in self.outputs

    def features(self) -> np.ndarray | None:
        """C x h x w float32 fused encoder features (the classifier's tokens), copied from the runtime on
        the first call; None when the graph has no ``features`` output.

        Valid until the backend runs again (read it while inspecting the frame)."""
        return self.outputs[DETECTOR_FEATURES][0] if self.has_features else None  # type: ignore[index]

    def frame_map(self) -> np.ndarray:
        """H x W float32 map at frame resolution (bilinear; allocated on every call)."""
        return resize_map(self.model_map, self.frame_size)


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
        """Run the backend on one model-size RGB image of a frame of ``frame_size`` (h, w); only the map
        and the score are copied to the host now."""
        out = self.backend.run_lazy({DETECTOR_INPUT: image_rgb[None]})
        amap = out[DETECTOR_OUTPUTS[0]][0, 0]  # H' x W'
        score = float(out[DETECTOR_OUTPUTS[1]][0])
        return DetectorOutput(model_map=amap, score=score, frame_size=(int(frame_size[0]), int(frame_size[1])),
                              outputs=out, image=image_rgb)

    def detect(self, frame: np.ndarray) -> DetectorOutput:
        """Anomaly map (model size) and score of one frame.

        Args:
            frame: validated HxW gray or HxWx3 uint8 frame in ``color_order`` (any strides).

        Raises:
            BackendError: the backend is closed or failed.
        """
        return self.run_prepared(self.prepare(frame), frame.shape[:2])
