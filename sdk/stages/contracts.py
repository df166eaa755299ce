"""The contracts of the Inspector's stages: the protocols a stage implements and the data they exchange.

An :class:`~protoinspect.sdk.inspector.Inspector` runs, per frame: a :class:`Masker` (object mask, only
when a later stage needs it), the detector, then on anomalous frames a :class:`RegionFinder` (the
regions, once, on the model-size map), a :class:`DefectClassifier` (one class per defect, from the
same regions) and an :class:`OutlierRejector` (verdict REJECTED for frames that match no class).
Each is injectable: ``Inspector(bundle, backend, config, masker=..., regions=..., classifier=...,
rejector=...)``. Without a classifier anomalous frames carry regions without a class: no class is
ever invented.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import numpy as np

from protoinspect.sdk.result import Defect
from protoinspect.sdk.stages.detector import DetectorOutput
from protoinspect.sdk.stages.regions import Regions


@runtime_checkable
class Masker(Protocol):
    """A stage that finds the object in a validated frame."""

    def mask(self, frame: np.ndarray) -> np.ndarray:
        """HxW gray or HxWx3 uint8 frame (any strides) -> HxW bool object mask (may be all False)."""
        ...


@runtime_checkable
class RegionFinder(Protocol):
    """Finds the anomalous regions of a frame on the detector's model-size map (once per frame)."""

    def find(self, model_map: np.ndarray, frame_size: tuple[int, int],
             object_mask: np.ndarray | None = None) -> Regions:
        """Regions of ``model_map`` (H' x W'); defects in frame pixels of ``frame_size`` (H, W);
        ``object_mask`` H' x W' bool (None / all False: search everywhere)."""
        ...


@dataclass(frozen=True)
class RegionClass:
    """Class assigned to one defect region.

    Attributes:
        class_id: index into the bundle's class list.
        class_name: that class's (user-editable) name.
        is_novel: the class was discovered without labels (not one of the labelled known types).
        score: classifier confidence for this class (for vMF prototypes: the cosine similarity of
            the region embedding to the class prototype, in [-1, 1]).
    """

    class_id: int
    class_name: str
    is_novel: bool
    score: float


@dataclass(frozen=True, eq=False)
class ClassificationInput:
    """Everything a classifier may look at for one anomalous frame.

    Attributes:
        frame: the validated frame as handed to the Inspector (HxW or HxWx3 uint8, colour order of
            the Inspector's config; any strides).
        detection: the detector's output (model-size map, score; ``features()`` copies the feature
            map from the runtime on request).
        regions: the frame's regions (model size) with its unclassified ``defects``; classify
            ``regions.defects``, in order.
        object_mask: H' x W' bool object mask at model size; None: no masker (all is object).
    """

    frame: np.ndarray
    detection: DetectorOutput
    regions: Regions
    object_mask: np.ndarray | None

    @property
    def defects(self) -> tuple[Defect, ...]:
        """The defects to classify (``regions.defects``)."""
        return self.regions.defects


@dataclass(frozen=True)
class ClassificationOutput:
    """Per-defect classes (one entry per defect, None = not classified) and the frame-level class."""

    regions: tuple[RegionClass | None, ...]
    image_class: RegionClass | None


class DefectClassifier(Protocol):
    """Assigns a defect class to each region of an anomalous frame."""

    def classify(self, inputs: ClassificationInput) -> ClassificationOutput:
        """Classes of ``inputs.defects`` (same order and length) and the merged frame-level class."""
        ...


class OutlierRejector(Protocol):
    """Decides that an anomalous frame's defects match no known or discovered class."""

    def is_outlier(self, output: ClassificationOutput) -> bool:
        """True: the frame must go to a person (verdict REJECTED)."""
        ...


def apply_classes(defects: Sequence[Defect], output: ClassificationOutput) -> tuple[Defect, ...]:
    """Defects with their class fields filled from ``output.regions`` (None leaves a region unclassified).

    Raises:
        ValueError: the classifier returned a different number of regions than there are defects.
    """
    if len(output.regions) != len(defects):
        msg = f"classifier returned {len(output.regions)} region classes for {len(defects)} defects"
        raise ValueError(msg)
    return tuple(
        d if c is None else replace(d, class_id=c.class_id, class_name=c.class_name, is_novel=c.is_novel, class_score=c.score)
        for d, c in zip(defects, output.regions)
    )
