"""Runtime settings of an :class:`~protoinspect.sdk.inspector.Inspector`: one frozen, validated dataclass."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from protoinspect.sdk import config_codec
from protoinspect.sdk.errors import ConfigError

MaskerName = Literal["none", "otsu", "roi", "sam"]
BackendName = Literal["auto", "onnxruntime", "torch", "tensorrt"]
DropPolicyName = Literal["block", "drop_oldest", "drop_newest"]

_COLOR_ORDERS = ("rgb", "bgr")
_MASKERS = ("none", "otsu", "roi", "sam")
_BACKENDS = ("auto", "onnxruntime", "torch", "tensorrt")
#: what :class:`~protoinspect.sdk.live_stream.LiveInspector` does when frames come faster than inspection
DROP_POLICIES: tuple[str, ...] = ("block", "drop_oldest", "drop_newest")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class InspectorConfig:
    """How an Inspector treats frames; facts about the model (size, mean/std, thresholds) stay in the bundle.

    Attributes:
        color_order: channel order of 3-channel frames handed in: ``"bgr"`` (default, OpenCV's
            order for camera frames) or ``"rgb"``. Gray HxW frames need no order.
        latency_budget_ms: per-frame budget; a result whose total time exceeds it has
            ``over_budget=True`` (nothing is skipped because of it). None: no budget.
        masker: object-mask stage: ``"none"`` (the whole frame), ``"otsu"`` (Otsu threshold plus
            morphology), ``"roi"`` (the static rectangle ``roi_xyxy``) or ``"sam"`` (Segment Anything
            prompted with ``sam_box_xyxy`` and/or ``sam_points``; see :class:`protoinspect.sdk.stages.sam_masker.SamMasker`,
            which computes the mask once per frame size: the object must not move, as on a fixture).
        roi_xyxy: (x1, y1, x2, y2) in frame pixels, x2/y2 exclusive; required for ``"roi"`` only.
        sam_checkpoint: path of a local SAM checkpoint file; required for ``"sam"`` (never downloaded).
        sam_model_type: key of ``segment_anything.sam_model_registry`` (``"vit_b"``, ``"vit_l"``, ``"vit_h"``).
        sam_box_xyxy: SAM box prompt (x1, y1, x2, y2) in frame pixels, 0 <= x1 < x2, 0 <= y1 < y2.
        sam_points: SAM point prompts ((x, y), ...) in frame pixels, all foreground (label 1).
            ``"sam"`` needs a box, points, or both.
        mask_reuse_frames: degrading policy chosen by the user: after computing a mask, reuse it for
            the frames of the same size among the next ``mask_reuse_frames`` frames that need a mask
            (each such result has ``mask_reused=True``); the mask is never older than that many
            frames. 0: compute the mask for every frame that needs one.
        image_threshold: anomaly score at or above which a frame is ANOMALOUS; None: the bundle's
            calibrated ``thresholds.image``. +/-inf are allowed (force OK / ANOMALOUS).
        pixel_threshold: anomaly-map value above which a pixel belongs to a defect region; None:
            the bundle's ``thresholds.pixel``.
        min_defect_area_px: connected regions smaller than this many frame pixels are dropped.
        backend: ``"auto"``, ``"onnxruntime"``, ``"torch"`` or ``"tensorrt"`` (an engine built with
            ``protoinspect build-engine``; never chosen by ``"auto"``), resolved once at construction.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (and ``"tensorrt:N"`` for onnxruntime).
        threads: CPU threads of the backend (onnxruntime intra-op threads; for torch this sets the
            process-wide ``torch.set_num_threads``). None: the runtime's default.
        classify: use the bundle's defect classifier (when it has one) on anomalous frames: regions
            get a class id/name and ``is_novel``. False: regions stay unclassified.
        reject_outliers: frames whose defects match no known or discovered class (merged vMF score
            below the bundle's calibrated threshold) get the verdict REJECTED; needs ``classify``.
        frame_map: make every result's frame-resolution ``anomaly_map`` while inspecting (timed as
            ``"frame_map"``). False (default): it is made on the first access of
            ``result.anomaly_map`` (4 bytes per frame pixel); ``result.model_map`` is always there.
        mask_every_frame: compute the object mask for every frame. False (default): only when a
            stage needs it (anomalous frames: regions and classifier), so OK frames carry
            ``mask=None``. ``mask_reuse_frames`` counts frames either way.
        drop_policy: live streams (:class:`~protoinspect.sdk.live_stream.LiveInspector`) when frames come
            faster than they are inspected: ``"block"`` (default: ``submit`` waits for room), ``"drop_oldest"``
            (the oldest waiting frame is discarded) or ``"drop_newest"`` (the incoming frame is discarded);
            every dropped frame appears in the result stream as dropped, with its id.
        queue_size: frames a live stream holds waiting for inspection (>= 1; the frame being inspected
            is not counted).
        trusted_keys: public keys (PEM file paths or PEM text) of whoever may release bundles: when given,
            :meth:`~protoinspect.sdk.inspector.Inspector.from_bundle` refuses an unsigned, untrusted or changed
            bundle (:mod:`protoinspect.sdk.bundle_signing`). Empty (default): signatures are not checked.

    Raises:
        ConfigError: any value out of its domain (raised by the constructor).
    """

    color_order: Literal["rgb", "bgr"] = "bgr"
    latency_budget_ms: float | None = None
    masker: MaskerName = "none"
    roi_xyxy: tuple[int, int, int, int] | None = None
    sam_checkpoint: str | None = None
    sam_model_type: str = "vit_b"
    sam_box_xyxy: tuple[float, float, float, float] | None = None
    sam_points: tuple[tuple[float, float], ...] | None = None
    mask_reuse_frames: int = 0
    image_threshold: float | None = None
    pixel_threshold: float | None = None
    min_defect_area_px: int = 16
    backend: BackendName = "auto"
    device: str = "cpu"
    threads: int | None = None
    classify: bool = True
    reject_outliers: bool = True
    frame_map: bool = False
    mask_every_frame: bool = False
    trusted_keys: tuple[str, ...] = ()
    drop_policy: DropPolicyName = "block"
    queue_size: int = 4

    def __post_init__(self) -> None:
        if self.color_order not in _COLOR_ORDERS:
            raise ConfigError(f"color_order must be 'rgb' or 'bgr', got {self.color_order!r}")
        budget = self.latency_budget_ms
        if budget is not None and (not _is_number(budget) or not math.isfinite(budget) or budget <= 0):
            raise ConfigError(f"latency_budget_ms must be a positive finite number or None, got {budget!r}")
        if self.masker not in _MASKERS:
            raise ConfigError(f"masker must be one of {', '.join(_MASKERS)}, got {self.masker!r}")
        self._check_roi()
        self._check_sam()
        if not _is_int(self.mask_reuse_frames) or self.mask_reuse_frames < 0:
            raise ConfigError(f"mask_reuse_frames must be an integer >= 0, got {self.mask_reuse_frames!r}")
        for name in ("image_threshold", "pixel_threshold"):
            value = getattr(self, name)
            if value is not None and (not _is_number(value) or math.isnan(value)):
                raise ConfigError(f"{name} must be a number (not NaN) or None, got {value!r}")
            if value is not None:
                object.__setattr__(self, name, float(value))
        if not _is_int(self.min_defect_area_px) or self.min_defect_area_px < 1:
            raise ConfigError(f"min_defect_area_px must be an integer >= 1, got {self.min_defect_area_px!r}")
        if self.backend not in _BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(_BACKENDS)}, got {self.backend!r}")
        if not isinstance(self.device, str) or not self.device.strip():
            raise ConfigError(f"device must be a non-empty string such as 'cpu' or 'cuda:0', got {self.device!r}")
        if self.threads is not None and (not _is_int(self.threads) or self.threads < 1):
            raise ConfigError(f"threads must be an integer >= 1 or None, got {self.threads!r}")
        if budget is not None:
            object.__setattr__(self, "latency_budget_ms", float(budget))
        for name in ("classify", "reject_outliers", "frame_map", "mask_every_frame"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        keys = self.trusted_keys
        if not isinstance(keys, (tuple, list)) or not all(
                (isinstance(k, str) or hasattr(k, "__fspath__")) and str(k).strip() for k in keys):
            raise ConfigError(f"trusted_keys must be a sequence of public key PEM paths or PEM strings, got {keys!r}")
        object.__setattr__(self, "trusted_keys", tuple(str(k) for k in keys))
        if self.drop_policy not in DROP_POLICIES:
            raise ConfigError(f"drop_policy must be one of {', '.join(DROP_POLICIES)}, got {self.drop_policy!r}")
        if not _is_int(self.queue_size) or self.queue_size < 1:
            raise ConfigError(f"queue_size must be an integer >= 1, got {self.queue_size!r}")

    def _check_roi(self) -> None:
        roi = self.roi_xyxy
        if roi is None:
            if self.masker == "roi":
                raise ConfigError("masker='roi' needs roi_xyxy=(x1, y1, x2, y2) in frame pixels")
            return
        if not isinstance(roi, (tuple, list)) or len(roi) != 4 or not all(_is_int(v) for v in roi):
            raise ConfigError(f"roi_xyxy must be 4 integers (x1, y1, x2, y2), got {roi!r}")
        x1, y1, x2, y2 = roi
        if x1 < 0 or y1 < 0 or x2 <= x1 or y2 <= y1:
            raise ConfigError(f"roi_xyxy must satisfy 0 <= x1 < x2 and 0 <= y1 < y2, got {roi!r}")
        object.__setattr__(self, "roi_xyxy", tuple(int(v) for v in roi))

    def _check_sam(self) -> None:
        ckpt = self.sam_checkpoint
        if ckpt is not None and (not isinstance(ckpt, str) or not ckpt.strip()):
            raise ConfigError(f"sam_checkpoint must be a non-empty path string or None, got {ckpt!r}")
        if not isinstance(self.sam_model_type, str) or not self.sam_model_type.strip():
            raise ConfigError(f"sam_model_type must be a non-empty string such as 'vit_b', got {self.sam_model_type!r}")
        box = self.sam_box_xyxy
        if box is not None:
            if not isinstance(box, (tuple, list)) or len(box) != 4 or not all(_is_number(v) and math.isfinite(v) for v in box):
                raise ConfigError(f"sam_box_xyxy must be 4 finite numbers (x1, y1, x2, y2), got {box!r}")
            x1, y1, x2, y2 = box
            if x1 < 0 or y1 < 0 or x2 <= x1 or y2 <= y1:
                raise ConfigError(f"sam_box_xyxy must satisfy 0 <= x1 < x2 and 0 <= y1 < y2, got {box!r}")
            object.__setattr__(self, "sam_box_xyxy", tuple(float(v) for v in box))
        points = self.sam_points
        if points is not None:
            ok = isinstance(points, (tuple, list)) and len(points) > 0 and all(
                isinstance(p, (tuple, list)) and len(p) == 2 and all(_is_number(v) and math.isfinite(v) for v in p)
                for p in points)
            if not ok:
                raise ConfigError(f"sam_points must be a non-empty sequence of (x, y) number pairs, got {points!r}")
            object.__setattr__(self, "sam_points", tuple((float(p[0]), float(p[1])) for p in points))
        if self.masker == "sam":
            if ckpt is None:
                raise ConfigError("masker='sam' needs sam_checkpoint= the path of a local SAM checkpoint file")
            if box is None and points is None:
                raise ConfigError("masker='sam' needs a prompt: sam_box_xyxy=(x1, y1, x2, y2) and/or sam_points=((x, y), ...)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (infinite thresholds become the strings ``"inf"`` / ``"-inf"``; tuples lists; nested
        settings dicts), by :func:`protoinspect.sdk.config_codec.to_dict`."""
        return config_codec.to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InspectorConfig:
        """Inverse of :meth:`to_dict` (a saved config, a JSON / YAML file); missing keys take their defaults.

        Raises:
            ConfigError: an unknown key (the valid ones are named), a value of the wrong type or out of its domain.
        """
        return config_codec.from_dict(cls, d)
