"""The default stages of an :class:`~protoinspect.sdk.inspector.Inspector`, built from its config and bundle.

The one place where :class:`~protoinspect.sdk.config.InspectorConfig` is translated into each stage's own
small settings object (:class:`MaskerSettings`, :class:`RegionSettings`, :class:`ClassifierSettings`, the
rejector's threshold); the stages never see the whole config.
"""

from __future__ import annotations

import logging

from protoinspect.sdk.backends.base import DETECTOR_FEATURES, Backend, parse_device
from protoinspect.sdk.backends.classifier_base import has_classifier
from protoinspect.sdk.backends.registry import create_classifier_backend
from protoinspect.sdk.bundle import Bundle
from protoinspect.sdk.config import InspectorConfig
from protoinspect.sdk.errors import BundleError
from protoinspect.sdk.stages.contracts import Masker
from protoinspect.sdk.stages.masker import MaskerSettings, build_masker
from protoinspect.sdk.stages.region_classifier import ClassifierSettings, RegionClassifier, VmfRejector, bundle_vit
from protoinspect.sdk.stages.regions import MapRegionFinder, RegionSettings

logger = logging.getLogger(__name__)


def masker_settings(config: InspectorConfig) -> MaskerSettings:
    """The masker's settings from the config (``masker``, ``color_order``, ROI and SAM fields, ``device``)."""
    return MaskerSettings(kind=config.masker, color_order=config.color_order, roi_xyxy=config.roi_xyxy,
                          sam_checkpoint=config.sam_checkpoint, sam_model_type=config.sam_model_type,
                          sam_box_xyxy=config.sam_box_xyxy, sam_points=config.sam_points, device=config.device)


def default_masker(config: InspectorConfig) -> Masker | None:
    """The config's masker; None for ``masker="none"`` (no object mask is ever computed then).

    Raises:
        ConfigError, MissingDependencyError: see :func:`protoinspect.sdk.stages.masker.build_masker`.
    """
    return None if config.masker == "none" else build_masker(masker_settings(config))


def pixel_threshold(bundle: Bundle, config: InspectorConfig) -> float:
    """The config's ``pixel_threshold``, else the bundle's calibrated ``thresholds.pixel``."""
    return float(bundle.manifest.thresholds["pixel"] if config.pixel_threshold is None else config.pixel_threshold)


def default_regions(bundle: Bundle, config: InspectorConfig) -> MapRegionFinder:
    """The region stage: for a bundle with a classifier, its ``region_method`` (the peak component with
    the pixel threshold, or MEBin with the pixel threshold as a floor), else the pixel threshold (see
    :mod:`protoinspect.sdk.stages.regions`)."""
    section = bundle.manifest.discovery
    return MapRegionFinder(RegionSettings(pixel_threshold=pixel_threshold(bundle, config),
                                          min_area_px=config.min_defect_area_px,
                                          discovery=None if section is None else section.settings))


def classifier_device(backend_name: str, device: str) -> str:
    """The classifier runtime's device for a detector on ``device``: the same one, except onnxruntime's
    ``tensorrt:N``, which runs the classifier on ``cuda:N`` (the few crops of a frame do not pay for
    a TensorRT build; a TensorRT classifier is the ``tensorrt`` backend's engine)."""
    if backend_name == "onnxruntime":
        kind, index = parse_device(device, ("cpu", "cuda", "tensorrt"))
        if kind == "tensorrt":
            return "cuda" if index is None else f"cuda:{index}"
    return device


def default_classifier(bundle: Bundle, backend: Backend, config: InspectorConfig
                       ) -> tuple[RegionClassifier | None, VmfRejector | None]:
    """The bundle's classifier on the same kind of runtime as the detector (onnxruntime:
    ``classifier.onnx``; torch: its weights; tensorrt: its engine from ``export/build_engine.py``),
    and its rejector; (None, None) when ``config.classify`` is off or the bundle has no classifier.

    Raises:
        BundleError: the detector graph lacks the ``features`` output the classifier needs, or the
            classifier's graph / engine is missing or stale (with the command that fixes it).
        MissingDependencyError, BackendError: from the classifier runtime.
    """
    if not (config.classify and has_classifier(bundle)):
        return None, None
    settings = ClassifierSettings.from_bundle(bundle, config.color_order)
    if settings.discovery.token_source == "detector" and DETECTOR_FEATURES not in backend.output_names:
        raise BundleError(f"{bundle.path}: the detector graph has no '{DETECTOR_FEATURES}' output, which the defect "
                          f"classifier needs: re-export with `protoinspect export {bundle.path}` (or classify=False)")
    device = classifier_device(backend.name, backend.device)
    runtime = create_classifier_backend(backend.name, bundle, device=device)
    try:
        classifier = RegionClassifier(runtime, settings, vit=bundle_vit(bundle, settings.discovery))
    except BaseException:
        runtime.close()
        raise
    logger.info("defect classifier of bundle %s on %s (%s)", bundle.manifest.bundle_id, runtime.name, device)
    rejector = VmfRejector(settings.discovery.reject_threshold) if config.reject_outliers else None
    return classifier, rejector
