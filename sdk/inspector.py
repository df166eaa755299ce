"""The Inspector: orchestrates mask -> detect -> decide -> regions for each frame and times every stage."""

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

from protoinspect.sdk.backends.base import DETECTOR_FEATURES, Backend
from protoinspect.sdk.backends.registry import create_backend, resolve_backend_name
from protoinspect.sdk.bundle import Bundle, load_bundle
from protoinspect.sdk.config import InspectorConfig
from protoinspect.sdk.errors import BackendError, BundleError, ConfigError
from protoinspect.sdk.preprocess import validate_frame
from protoinspect.sdk.result import InspectionResult, Verdict
from protoinspect.sdk.stages.classification import ClassificationInput, DefectClassifier, OutlierRejector, apply_classes
from protoinspect.sdk.stages.detector import DetectorStage
from protoinspect.sdk.stages.discovery import DiscoveryClassifier, VmfRejector, has_classifier
from protoinspect.sdk.stages.masker import Masker, build_masker
from protoinspect.sdk.stages.regions import extract_defects

logger = logging.getLogger(__name__)


class Inspector:
    """Inspects camera frames with a model bundle.

    Example::

        with Inspector.from_bundle("bundles/tile", config=InspectorConfig(color_order="bgr")) as insp:
            result = insp.inspect(frame)  # frame: HxWx3 uint8 BGR (or HxW gray)

    Thread safety: an Inspector may be shared by threads; calls are serialised by an internal lock
    (backend call, mask-reuse state and frame counter). For parallelism create one Inspector per
    thread.

    Memory: the anomaly map is returned at frame resolution (float32), e.g. 256 MB for an
    8000x8000 frame; the model itself only ever sees the frame resized to the bundle's input size.
    """

    def __init__(self, bundle: Bundle, backend: Backend, config: InspectorConfig | None = None, *,
                 classifier: DefectClassifier | None = None, rejector: OutlierRejector | None = None) -> None:
        """Assemble an Inspector from a loaded bundle and an open backend (see :meth:`from_bundle`).

        Args:
            bundle: the loaded model bundle.
            backend: an open backend running the bundle's detector graph (owned from now on:
                :meth:`close` closes it).
            config: runtime settings; None: ``InspectorConfig()``.
            classifier: classifies the defect regions of anomalous frames; None: regions carry no
                class.
            rejector: turns anomalous frames whose classes it judges outliers into REJECTED;
                needs a classifier.
        """
        if rejector is not None and classifier is None:
            raise ConfigError("an outlier rejector needs a classifier (it judges the classifier's output)")
        self.classifier = classifier
        self.rejector = rejector
        self.config = config if config is not None else InspectorConfig()
        self.bundle = bundle
        self.backend = backend
        thresholds = bundle.manifest.thresholds
        cfg = self.config
        self.image_threshold = float(thresholds["image"] if cfg.image_threshold is None else cfg.image_threshold)
        self.pixel_threshold = float(thresholds["pixel"] if cfg.pixel_threshold is None else cfg.pixel_threshold)
        self.masker: Masker = build_masker(cfg)
        self.detector = DetectorStage(backend, bundle.manifest.preprocess_spec, cfg.color_order)
        self._lock = threading.Lock()
        self._frame_index = 0
        self._cached_mask: np.ndarray | None = None
        self._cached_mask_empty = False
        self._mask_age = 0  # frames the cached mask has been reused for
        self._closed = False

    @classmethod
    def from_bundle(cls, path: str | os.PathLike[str], *, backend: str | None = None, device: str | None = None,
                    config: InspectorConfig | None = None) -> Inspector:
        """Load and verify a bundle, create its backend once and return a ready Inspector.

        Args:
            path: bundle directory.
            backend: ``"auto"``, ``"onnxruntime"`` or ``"torch"``; None: ``config.backend`` (default
                ``"auto"``: onnxruntime when the bundle has ``detector.onnx``, else torch). The
                choice is logged at INFO and reported by :meth:`describe`.
            device: ``"cpu"``, ``"cuda:N"``, ...; None: ``config.device`` (default ``"cpu"``).
            config: runtime settings; None: ``InspectorConfig()``. ``backend``/``device`` given
                here take precedence over the config's and are recorded in :attr:`config`.

        Returns:
            The Inspector.

        Raises:
            BundleError: the bundle is missing, corrupt or tampered with.
            ConfigError: an unknown backend or device, or bad config values.
            MissingDependencyError: the chosen backend's runtime is not installed.
        """
        cfg = config if config is not None else InspectorConfig()
        if not isinstance(cfg, InspectorConfig):
            raise ConfigError(f"config must be an InspectorConfig, got {type(cfg).__name__}")
        cfg = replace(cfg, backend=cfg.backend if backend is None else backend,
                      device=cfg.device if device is None else device)
        bundle = load_bundle(path)
        name = resolve_backend_name(cfg.backend, bundle)
        kwargs: dict[str, Any] = {"device": cfg.device}
        if cfg.threads is not None and name != "tensorrt":  # CPU threads mean nothing to a TensorRT engine
            kwargs["intra_op_threads" if name == "onnxruntime" else "threads"] = cfg.threads
        runtime = create_backend(name, bundle, **kwargs)
        classifier, rejector = None, None
        if cfg.classify and has_classifier(bundle):
            try:
                classifier, rejector = _discovery_stages(bundle, runtime, cfg)
            except Exception:
                runtime.close()
                raise
        logger.info("Inspector for bundle %s (%s): backend %s (requested %s) on %s",
                    bundle.manifest.bundle_id, bundle.path, runtime.name, cfg.backend, cfg.device)
        return cls(bundle, runtime, cfg, classifier=classifier, rejector=rejector)

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

    def _mask(self, frame: np.ndarray) -> tuple[np.ndarray, bool, bool]:
        """(mask, mask_empty, reused) following the mask_reuse_frames policy."""
        cached = self._cached_mask
        reuse = self.config.mask_reuse_frames
        if cached is not None and self._mask_age < reuse and cached.shape == frame.shape[:2]:
            self._mask_age += 1
            return cached.copy(), self._cached_mask_empty, True
        mask = np.asarray(self.masker.mask(frame), dtype=bool)
        empty = not bool(mask.any())
        if reuse > 0:
            self._cached_mask, self._cached_mask_empty, self._mask_age = mask.copy(), empty, 0
        return mask, empty, False

    def _inspect_locked(self, frame: np.ndarray) -> InspectionResult:
        self._check_open()
        t0 = time.perf_counter()
        mask, mask_empty, reused = self._mask(frame)
        t1 = time.perf_counter()
        out = self.detector.detect(frame)
        t2 = time.perf_counter()
        image_class = None
        if out.score < self.image_threshold:
            verdict, defects = Verdict.OK, ()
            t3 = t4 = t2
        else:
            verdict = Verdict.ANOMALOUS
            defects = extract_defects(out.anomaly_map, self.pixel_threshold, mask, self.config.min_defect_area_px)
            t3 = time.perf_counter()
            if self.classifier is not None:
                classes = self.classifier.classify(ClassificationInput(frame, out, mask, defects))
                defects = apply_classes(defects, classes)
                image_class = classes.image_class
                if self.rejector is not None and self.rejector.is_outlier(classes):
                    verdict = Verdict.REJECTED
            t4 = time.perf_counter()
        total = (time.perf_counter() - t0) * 1e3
        timings = {"mask": (t1 - t0) * 1e3, "detect": (t2 - t1) * 1e3, "regions": (t3 - t2) * 1e3,
                   "classify": (t4 - t3) * 1e3, "total": total}
        budget = self.config.latency_budget_ms
        index = self._frame_index
        self._frame_index += 1
        return InspectionResult(
            verdict=verdict,
            anomaly_score=out.score,
            anomaly_map=out.anomaly_map,
            mask=mask,
            defects=defects,
            timings_ms=MappingProxyType(timings),
            over_budget=budget is not None and total > budget,
            bundle_id=self.bundle.manifest.bundle_id,
            frame_index=index,
            mask_empty=mask_empty,
            mask_reused=reused,
            image_class_id=None if image_class is None else image_class.class_id,
            image_class_name=None if image_class is None else image_class.class_name,
        )

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
            "config": self.config.to_dict(),
            "closed": self._closed,
        }

    def close(self) -> None:
        """Close the backend; idempotent. Later calls of :meth:`inspect` raise BackendError."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self.backend.close()

    def __enter__(self) -> Inspector:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"Inspector(bundle={self.bundle.manifest.bundle_id!r}, backend={self.backend.name!r}, {state})"


def _discovery_stages(bundle: Bundle, runtime: Backend, cfg: InspectorConfig
                      ) -> tuple[DiscoveryClassifier, VmfRejector | None]:
    """The bundle's classifier (on the same kind of runtime as the detector) and its rejector."""
    if DETECTOR_FEATURES not in runtime.output_names:
        msg = (f"{bundle.path}: the detector graph has no '{DETECTOR_FEATURES}' output, which the defect "
               f"classifier needs: re-export with `protoinspect export {bundle.path}` (or classify=False)")
        raise BundleError(msg)
    kind = "torch" if runtime.name == "torch" else "onnxruntime"  # TensorRT detector: the small classifier on ORT
    classifier = DiscoveryClassifier(bundle, kind, color_order=cfg.color_order)
    rejector = VmfRejector(classifier.settings.reject_threshold) if cfg.reject_outliers else None
    return classifier, rejector


def _json_threshold(value: float) -> float | str:
    if value == float("inf"):
        return "inf"
    if value == float("-inf"):
        return "-inf"
    return value
