"""The Inspector: orchestrates mask -> detect -> decide -> regions -> classify for each frame and times every stage."""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from types import MappingProxyType, TracebackType
from typing import Any

import numpy as np

from protoinspect.sdk.backends.base import Backend
from protoinspect.sdk.backends.registry import create_backend, resolve_backend_name
from protoinspect.sdk.bundle import Bundle, load_bundle
from protoinspect.sdk.bundle_signing import load_signed_bundle
from protoinspect.sdk.config import InspectorConfig
from protoinspect.sdk.errors import BackendError, ConfigError, InputError
from protoinspect.sdk.inspector_stages import default_classifier, default_masker, default_regions, pixel_threshold
from protoinspect.sdk.preprocess import resize_bool_mask, validate_frame
from protoinspect.sdk.result import InspectionResult, Verdict
from protoinspect.sdk.stages.contracts import (
    ClassificationInput,
    DefectClassifier,
    Masker,
    OutlierRejector,
    RegionFinder,
    apply_classes,
)
from protoinspect.sdk.stages.detector import DetectorStage

logger = logging.getLogger(__name__)


class Inspector:
    """Inspects camera frames with a model bundle.

    Example::

        with Inspector.from_bundle("bundles/tile", config=InspectorConfig(color_order="bgr")) as insp:
            result = insp.inspect(frame)  # frame: HxWx3 uint8 BGR (or HxW gray)

    Stages (SAM-style constructor injection; :meth:`from_bundle` builds the bundle's defaults): a
    masker (object mask), the detector (the backend), a region finder, a classifier and an outlier
    rejector; their protocols are in :mod:`protoinspect.sdk.stages.contracts`.

    Per frame: the detector runs at model size; OK frames (score below the image threshold) stop
    there. Anomalous frames get the object mask (only now, unless ``mask_every_frame``), their regions
    found once on the model-size map, and classes from the classifier on crops of those same regions
    (the detector's feature map is copied from the runtime only then).

    Thread safety: an Inspector may be shared by threads; calls are serialised by an internal lock
    (backend call, mask-reuse state and frame counter). For parallelism create one Inspector per
    thread.

    Memory: results carry the model-size map; the frame-size map (4 bytes per frame pixel, 256 MB
    for an 8000x8000 frame) is made only when read (``result.anomaly_map``) or when
    ``config.frame_map`` asks for it on every frame. Frames are never copied at full resolution.
    """

    def __init__(self, bundle: Bundle, backend: Backend, config: InspectorConfig | None = None, *,
                 masker: Masker | None = None, regions: RegionFinder | None = None,
                 classifier: DefectClassifier | None = None, rejector: OutlierRejector | None = None) -> None:
        """Assemble an Inspector from a loaded bundle, an open backend and its stages (see :meth:`from_bundle`).

        The Inspector owns what it is given: :meth:`close` closes the backend and every stage that has
        a ``close()`` method.

        Args:
            bundle: the loaded model bundle.
            backend: an open backend running the bundle's detector graph.
            config: runtime settings; None: ``InspectorConfig()``.
            masker: the object-mask stage; None: built from ``config.masker`` (``"none"``: no mask is
                ever computed; regions are searched in the whole map).
            regions: the region stage; None: built from the bundle and the config
                (:func:`protoinspect.sdk.inspector_stages.default_regions`).
            classifier: classifies the defect regions of anomalous frames; None: regions carry no class.
            rejector: turns anomalous frames whose classes it judges outliers into REJECTED; needs a
                classifier.

        Raises:
            ConfigError: a rejector without a classifier, or bad config values.
        """
        if rejector is not None and classifier is None:
            raise ConfigError("an outlier rejector needs a classifier (it judges the classifier's output)")
        self.config = config if config is not None else InspectorConfig()
        if not isinstance(self.config, InspectorConfig):
            raise ConfigError(f"config must be an InspectorConfig, got {type(self.config).__name__}")
        cfg = self.config
        self.bundle = bundle
        self.backend = backend
        self.image_threshold = float(bundle.manifest.thresholds["image"] if cfg.image_threshold is None
                                     else cfg.image_threshold)
        self.pixel_threshold = pixel_threshold(bundle, cfg)
        self.masker: Masker | None = default_masker(cfg) if masker is None else masker
        self.regions: RegionFinder = default_regions(bundle, cfg) if regions is None else regions
        self.classifier = classifier
        self.rejector = rejector
        self.detector = DetectorStage(backend, bundle.manifest.preprocess_spec, cfg.color_order)
        self._lock = threading.Lock()
        self._frame_index = 0
        self._cached_mask: np.ndarray | None = None
        self._cached_mask_empty = False
        self._mask_frame = 0  # frame index at which the cached mask was computed
        self._closed = False

    @classmethod
    def from_bundle(cls, path: str | os.PathLike[str], *, backend: str | None = None, device: str | None = None,
                    config: InspectorConfig | None = None, masker: Masker | None = None,
                    regions: RegionFinder | None = None, classifier: DefectClassifier | None = None,
                    rejector: OutlierRejector | None = None, **remote: Any) -> Inspector:
        """Load and verify a bundle, create its backend once and return a ready Inspector.

        ``backend="triton"`` returns a :class:`~protoinspect.sdk.remote_inspector.TritonInspector` instead (same
        public surface, inference on a Triton server, no local fallback); ``remote`` then holds its ``url``,
        ``protocol`` (``"grpc"``/``"http"``), ``model``, ``model_version`` and ``timeout_s``.

        The stages are the defaults of :mod:`protoinspect.sdk.inspector_stages`: the config's masker, the
        region finder of the bundle, and, when the bundle has one and ``config.classify``, its defect
        classifier on the same kind of runtime as the detector (through
        :func:`~protoinspect.sdk.backends.registry.create_classifier_backend`) with its vMF rejector.

        Args:
            path: bundle directory.
            backend: ``"auto"``, ``"onnxruntime"``, ``"torch"`` or ``"tensorrt"``; None: ``config.backend``
                (default ``"auto"``: onnxruntime when the bundle has ``detector.onnx``, else torch). The
                choice is logged at INFO and reported by :meth:`describe`.
            device: ``"cpu"``, ``"cuda:N"``, ...; None: ``config.device`` (default ``"cpu"``).
            config: runtime settings; None: ``InspectorConfig()``. ``backend``/``device`` given
                here take precedence over the config's and are recorded in :attr:`config`.
            masker, regions, classifier, rejector: stages that replace the defaults (None: the
                default; a classifier given here also replaces the default rejector unless one is given).

        Returns:
            The Inspector.

        Raises:
            BundleError: the bundle is missing, corrupt or tampered with; its classifier's graph or
                engine is missing or stale.
            BundleSignatureError: ``config.trusted_keys`` is set and the bundle is unsigned, signed by an
                untrusted key or changed after signing (the message names which).
            ConfigError: an unknown backend or device, or bad config values.
            MissingDependencyError: the chosen backend's runtime is not installed.
        """
        if backend == "triton":
            from protoinspect.sdk.remote_inspector import from_bundle_args

            return from_bundle_args(path, device, config, (masker, regions, classifier, rejector), remote)  # type: ignore[return-value]
        if remote:
            raise ConfigError(f"{sorted(remote)}: unknown arguments (url, protocol, ... apply to backend='triton' only)")
        cfg = config if config is not None else InspectorConfig()
        if not isinstance(cfg, InspectorConfig):
            raise ConfigError(f"config must be an InspectorConfig, got {type(cfg).__name__}")
        cfg = replace(cfg, backend=cfg.backend if backend is None else backend,
                      device=cfg.device if device is None else device)
        # with trusted keys: every file, the manifest and its signature are checked before any graph is loaded
        bundle = load_signed_bundle(path, cfg.trusted_keys)[0] if cfg.trusted_keys else load_bundle(path)
        name = resolve_backend_name(cfg.backend, bundle)
        kwargs: dict[str, Any] = {"device": cfg.device}
        if cfg.threads is not None and name != "tensorrt":  # CPU threads mean nothing to a TensorRT engine
            kwargs["intra_op_threads" if name == "onnxruntime" else "threads"] = cfg.threads
        runtime = create_backend(name, bundle, **kwargs)
        built = None
        try:
            if classifier is None:
                built, default_rejector = default_classifier(bundle, runtime, cfg)
                classifier, rejector = built, default_rejector if rejector is None else rejector
            inspector = cls(bundle, runtime, cfg, masker=masker, regions=regions, classifier=classifier,
                            rejector=rejector)
        except BaseException:
            if built is not None:
                built.close()
            runtime.close()
            raise
        logger.info("Inspector for bundle %s (%s): backend %s (requested %s) on %s",
                    bundle.manifest.bundle_id, bundle.path, runtime.name, cfg.backend, cfg.device)
        return inspector

    # ------------------------------------------------------------------------------------ frames

    def inspect(self, frame: np.ndarray) -> InspectionResult:
        """Inspect one frame.

        Args:
            frame: HxWx3 uint8 in ``config.color_order`` (default BGR) or HxW uint8 gray; any
                strides (ROI crops, flipped views) are accepted.

        Returns:
            The result: OK when the score is below the image threshold (fast path: no region
            extraction, no defects), else ANOMALOUS with its defect regions.

        Raises:
            InputError: None, not an array, not uint8, wrong channel count or empty; the Inspector
                stays usable for the next frame.
            BackendError: the Inspector is closed or the runtime failed.
        """
        frame = validate_frame(frame)
        with self._lock:
            return self._inspect_locked(frame)

    __call__ = inspect

    def inspect_batch(self, frames: Sequence[np.ndarray]) -> list[InspectionResult]:
        """Inspect frames in order; the results equal calling :meth:`inspect` on each in turn.

        All frames are validated before any is inspected, and the lock is held for the whole batch
        so the frames get consecutive ``frame_index`` values.

        Args:
            frames: frames as accepted by :meth:`inspect`.

        Returns:
            One result per frame, in order.

        Raises:
            InputError: any frame is invalid (nothing is inspected then).
            BackendError: the Inspector is closed or the runtime failed.
        """
        checked = [validate_frame(f) for f in frames]
        with self._lock:
            return [self._inspect_locked(f) for f in checked]

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError("Inspector is closed: create a new one with Inspector.from_bundle(...)")

    def _mask(self, frame: np.ndarray, index: int) -> tuple[np.ndarray, bool, bool]:
        """(mask, mask_empty, reused) of frame ``index`` following the mask_reuse_frames policy."""
        assert self.masker is not None
        cached = self._cached_mask
        reuse = self.config.mask_reuse_frames
        if cached is not None and index - self._mask_frame <= reuse and cached.shape == frame.shape[:2]:
            return cached.copy(), self._cached_mask_empty, True
        mask = np.asarray(self.masker.mask(frame), dtype=bool)
        if mask.shape != frame.shape[:2]:
            raise InputError(f"masker {type(self.masker).__name__} returned a {mask.shape} mask for a frame of "
                             f"{frame.shape[:2]}: a masker must return an H x W bool mask of the frame")
        empty = not bool(mask.any())
        if reuse > 0:
            self._cached_mask, self._cached_mask_empty, self._mask_frame = mask.copy(), empty, index
        return mask, empty, False

    def _inspect_locked(self, frame: np.ndarray) -> InspectionResult:
        self._check_open()
        index = self._frame_index
        t0 = time.perf_counter()
        mask, mask_empty, reused = None, False, False
        if self.masker is not None and self.config.mask_every_frame:
            mask, mask_empty, reused = self._mask(frame, index)
        t_mask = time.perf_counter() - t0
        t1 = time.perf_counter()
        out = self.detector.detect(frame)
        t2 = time.perf_counter()
        image_class, defects, t_regions, t_classify = None, (), 0.0, 0.0
        if out.score < self.image_threshold:
            verdict = Verdict.OK
        else:
            verdict = Verdict.ANOMALOUS
            if self.masker is not None and mask is None:
                mask, mask_empty, reused = self._mask(frame, index)
            t3 = time.perf_counter()
            t_mask += t3 - t2
            obj = None if mask is None else resize_bool_mask(mask, out.model_map.shape)
            regions = self.regions.find(out.model_map, out.frame_size, obj)
            defects = regions.defects
            t4 = time.perf_counter()
            t_regions = t4 - t3
            if self.classifier is not None:
                classes = self.classifier.classify(ClassificationInput(frame, out, regions, obj))
                defects = apply_classes(defects, classes)
                image_class = classes.image_class
                if self.rejector is not None and self.rejector.is_outlier(classes):
                    verdict = Verdict.REJECTED
                t_classify = time.perf_counter() - t4
        frame_map, t_frame_map = None, 0.0
        if self.config.frame_map:  # made now only when the config asks
            t5 = time.perf_counter()
            frame_map = out.frame_map()
            t_frame_map = time.perf_counter() - t5
        total = (time.perf_counter() - t0) * 1e3
        timings = {"mask": t_mask * 1e3, "detect": (t2 - t1) * 1e3, "regions": t_regions * 1e3,
                   "classify": t_classify * 1e3, "frame_map": t_frame_map * 1e3, "total": total}
        budget = self.config.latency_budget_ms
        self._frame_index += 1
        return InspectionResult(
            verdict=verdict, anomaly_score=out.score, model_map=out.model_map, mask=mask, defects=defects,
            timings_ms=MappingProxyType(timings), over_budget=budget is not None and total > budget,
            bundle_id=self.bundle.manifest.bundle_id, frame_index=index, mask_empty=mask_empty, mask_reused=reused,
            image_class_id=None if image_class is None else image_class.class_id,
            image_class_name=None if image_class is None else image_class.class_name,
            frame_size=out.frame_size, frame_map=frame_map)

    def warmup(self, num_frames: int = 3) -> None:
        """Run the detector on ``num_frames`` mid-gray frames at model size (first-call allocations).

        Warm-up frames do not count in ``frame_index`` and do not touch the mask-reuse state.

        Raises:
            ConfigError: ``num_frames`` is not an integer >= 0.
            BackendError: the Inspector is closed or the runtime failed.
        """
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 0:
            raise ConfigError(f"num_frames must be an integer >= 0, got {num_frames!r}")
        h, w = self.detector.spec.image_size
        image = np.full((h, w, 3), 128, dtype=np.uint8)
        with self._lock:
            self._check_open()
            for _ in range(num_frames):
                self.detector.run_prepared(image, (h, w))

    # ------------------------------------------------------------------------------------ lifecycle

    def describe(self) -> dict[str, Any]:
        """Versions, backend (as resolved), bundle id, thresholds and config, JSON-safe."""
        import protoinspect.sdk

        try:
            import cv2

            cv2_version: str | None = cv2.__version__
        except ImportError:
            cv2_version = None
        manifest = self.bundle.manifest
        return {
            "versions": {"protoinspect": protoinspect.sdk.__version__, "python": platform.python_version(),
                         "numpy": np.__version__, "opencv": cv2_version},
            "backend": {"name": self.backend.name, "requested": self.config.backend,
                        **({} if self._closed else self.backend.describe())},
            "bundle_id": manifest.bundle_id,
            "bundle_path": str(self.bundle.path),
            "input_size": list(self.detector.spec.image_size),
            "thresholds": {"image": _json_threshold(self.image_threshold),
                           "pixel": _json_threshold(self.pixel_threshold),
                           "bundle_image": float(manifest.thresholds["image"]),
                           "bundle_pixel": float(manifest.thresholds["pixel"])},
            "stages": {"masker": _stage_name(self.masker), "regions": _stage_name(self.regions),
                       "classifier": _stage_name(self.classifier), "rejector": _stage_name(self.rejector),
                       **({"classifier_runtime": self.classifier.runtime.describe()}  # type: ignore[attr-defined]
                          if not self._closed and hasattr(getattr(self.classifier, "runtime", None), "describe")
                          else {})},
            "config": self.config.to_dict(),
            "closed": self._closed,
        }

    def close(self) -> None:
        """Close the backend and the stages that have a ``close()`` (the classifier's runtime, ...); idempotent.

        Later calls of :meth:`inspect` raise BackendError.
        """
        with self._lock:
            if not self._closed:
                self._closed = True
                try:
                    for stage in (self.classifier, self.rejector, self.regions, self.masker):
                        closer = getattr(stage, "close", None)
                        if callable(closer):
                            closer()
                finally:
                    self.backend.close()

    def __enter__(self) -> Inspector:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"Inspector(bundle={self.bundle.manifest.bundle_id!r}, backend={self.backend.name!r}, {state})"


def _stage_name(stage: object) -> str | None:
    return None if stage is None else type(stage).__name__


def _json_threshold(value: float) -> float | str:
    if value == float("inf"):
        return "inf"
    if value == float("-inf"):
        return "-inf"
    return value
