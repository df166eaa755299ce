"""Inspection stages (masker, detector, region extraction); they hold the pre/post-processing, backends only run graphs."""

from __future__ import annotations

from protoinspect.sdk.stages.detector import DetectorOutput, DetectorStage
from protoinspect.sdk.stages.masker import Masker, NoMasker, OtsuMasker, RoiMasker, build_masker
from protoinspect.sdk.stages.regions import extract_defects

__all__ = [
    "DetectorOutput",
    "DetectorStage",
    "Masker",
    "NoMasker",
    "OtsuMasker",
    "RoiMasker",
    "build_masker",
    "extract_defects",
]
