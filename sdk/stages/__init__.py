"""Inspection stages (masker, detector, regions, classifier, rejector); they hold the pre/post-processing,
backends only run graphs. Their protocols and the data they exchange are in :mod:`.contracts`."""

from __future__ import annotations

from protoinspect.sdk.stages.contracts import (
    ClassificationInput,
    ClassificationOutput,
    DefectClassifier,
    Masker,
    OutlierRejector,
    RegionClass,
    RegionFinder,
)
from protoinspect.sdk.stages.detector import DetectorOutput, DetectorStage
from protoinspect.sdk.stages.masker import MaskerSettings, NoMasker, OtsuMasker, RoiMasker, build_masker
from protoinspect.sdk.stages.regions import MapRegionFinder, Regions, RegionSettings

__all__ = [
    "ClassificationInput",
    "ClassificationOutput",
    "DefectClassifier",
    "DetectorOutput",
    "DetectorStage",
    "MapRegionFinder",
    "Masker",
    "MaskerSettings",
    "NoMasker",
    "OtsuMasker",
    "OutlierRejector",
    "RegionClass",
    "RegionFinder",
    "RegionSettings",
    "Regions",
    "RoiMasker",
    "build_masker",
]
