"""Interfaces of the defect-classification and outlier-rejection stages.

The Inspector calls a :class:`DefectClassifier` on anomalous frames only; it returns one
:class:`RegionClass` (or None: "not classified") per defect region. An :class:`OutlierRejector` then
decides from those classes whether the frame is so unlike every known defect type that a person must
look at it (verdict REJECTED). Without a classifier, anomalous frames carry regions without a class:
no class is ever invented.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from protoinspect.sdk.result import Defect
from protoinspect.sdk.stages.detector import DetectorOutput


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
            the Inspector's config).
        detection: the detector's output (map at frame resolution, score, and the model-size map and
            feature map when the graph provides them).
        mask: H x W bool object mask at frame resolution.
        defects: the frame's defect regions (unclassified).
    """

    frame: np.ndarray
    detection: DetectorOutput
    mask: np.ndarray
    defects: tuple[Defect, ...]


@dataclass(frozen=True)
class ClassificationOutput:
    """Per-region classes (one entry per defect, None = not classified) and the frame-level class."""

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
