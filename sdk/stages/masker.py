"""Object maskers: which pixels of a frame belong to the inspected object (HxW bool at frame resolution)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from protoinspect.sdk._imports import require
from protoinspect.sdk.errors import ConfigError
from protoinspect.sdk.preprocess import resize_frame, to_gray
from protoinspect.sdk.stages.contracts import Masker

__all__ = ["Masker", "MaskerSettings", "NoMasker", "OtsuMasker", "RoiMasker", "build_masker"]

MASKERS = ("none", "otsu", "roi", "sam")


@dataclass(frozen=True)
class MaskerSettings:
    """Which masker to build and its own settings (see :class:`protoinspect.sdk.config.InspectorConfig`).

    Attributes:
        kind: ``"none"``, ``"otsu"``, ``"roi"`` or ``"sam"``.
        color_order: channel order of 3-channel frames.
        roi_xyxy: the rectangle of ``"roi"``.
        sam_checkpoint / sam_model_type / sam_box_xyxy / sam_points: the model and prompts of ``"sam"``.
        device: torch device of ``"sam"``.
    """

    kind: str = "none"
    color_order: Literal["rgb", "bgr"] = "bgr"
    roi_xyxy: tuple[int, int, int, int] | None = None
    sam_checkpoint: str | None = None
    sam_model_type: str = "vit_b"
    sam_box_xyxy: tuple[float, float, float, float] | None = None
    sam_points: tuple[tuple[float, float], ...] | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.kind not in MASKERS:
            raise ConfigError(f"masker must be one of {', '.join(MASKERS)}, got {self.kind!r}")
        if self.color_order not in ("rgb", "bgr"):
            raise ConfigError(f"color_order must be 'rgb' or 'bgr', got {self.color_order!r}")
        if self.kind == "roi" and self.roi_xyxy is None:
            raise ConfigError("masker='roi' needs roi_xyxy=(x1, y1, x2, y2) in frame pixels")


class NoMasker:
    """The whole frame is the object."""

    def mask(self, frame: np.ndarray) -> np.ndarray:
        """Return an all-True HxW bool mask.

        Args:
            frame: validated HxW or HxWx3 uint8 frame.

        Returns:
            HxW bool, all True.
        """
        return np.ones(frame.shape[:2], dtype=bool)


class RoiMasker:
    """A static rectangle in frame pixels, clipped to each frame.

    A rectangle entirely outside the frame gives an all-False mask (reported as ``mask_empty``).
    """

    def __init__(self, roi_xyxy: tuple[int, int, int, int]) -> None:
        """Keep the rectangle.

        Args:
            roi_xyxy: (x1, y1, x2, y2), x1/y1 inclusive, x2/y2 exclusive, 0 <= x1 < x2, 0 <= y1 < y2.

        Raises:
            ConfigError: not such a rectangle.
        """
        roi = roi_xyxy
        if not isinstance(roi, (tuple, list)) or len(roi) != 4 or not all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in roi):
            raise ConfigError(f"roi_xyxy must be 4 integers (x1, y1, x2, y2), got {roi!r}")
        x1, y1, x2, y2 = (int(v) for v in roi)
        if x1 < 0 or y1 < 0 or x2 <= x1 or y2 <= y1:
            raise ConfigError(f"roi_xyxy must satisfy 0 <= x1 < x2 and 0 <= y1 < y2, got {roi!r}")
        self.roi_xyxy = (x1, y1, x2, y2)

    def mask(self, frame: np.ndarray) -> np.ndarray:
        """HxW or HxWx3 frame -> HxW bool mask, True inside the clipped rectangle."""
        h, w = frame.shape[:2]
        x1, y1, x2, y2 = self.roi_xyxy  # type: ignore[misc]
        out = np.zeros((h, w), dtype=bool)
        out[min(y1, h):min(y2, h), min(x1, w):min(x2, w)] = True
        return out


class OtsuMasker:
    """Otsu threshold plus morphology: fast (~1 ms) for an object that contrasts with its background.

    Steps: gray (colour frames converted in ``color_order``) -> downscale so the long side is at
    most ``work_size`` -> Gaussian blur -> Otsu threshold -> morphological open then close -> keep
    connected components covering at least ``min_component_fraction`` of the frame -> upscale
    (nearest) to the frame size.

    Polarity rule: of the two Otsu classes, the one that covers MORE of the frame border is the
    background; the object is the other one (ties: the bright class is the object). If no component
    is large enough the returned mask is all False: there is no fallback here; the Inspector reports
    it as ``mask_empty`` and then searches defect regions in the whole map.
    """

    def __init__(self, color_order: Literal["rgb", "bgr"] = "bgr", *, min_component_fraction: float = 0.01,
                 work_size: int = 512) -> None:
        """Configure the masker.

        Args:
            color_order: channel order of 3-channel frames.
            min_component_fraction: smallest kept component as a fraction of the frame area.
            work_size: longest side (pixels) at which thresholding runs.

        Raises:
            ConfigError: a bad colour order, fraction outside [0, 1) or work size below 32.
        """
        if color_order not in ("rgb", "bgr"):
            raise ConfigError(f"color_order must be 'rgb' or 'bgr', got {color_order!r}")
        if not 0.0 <= float(min_component_fraction) < 1.0:
            raise ConfigError(f"min_component_fraction must be in [0, 1), got {min_component_fraction!r}")
        if int(work_size) < 32:
            raise ConfigError(f"work_size must be >= 32, got {work_size!r}")
        self.color_order = color_order
        self.min_component_fraction = float(min_component_fraction)
        self.work_size = int(work_size)

    def _gray_small(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        scale = min(1.0, self.work_size / max(h, w))
        if scale < 1.0:  # resized in place (no full-resolution copy of a view)
            small, order = resize_frame(frame, (max(1, round(h * scale)), max(1, round(w * scale))), self.color_order)
            return to_gray(small, order)
        return to_gray(frame if frame.flags.c_contiguous else np.ascontiguousarray(frame), self.color_order)

    def mask(self, frame: np.ndarray) -> np.ndarray:
        """Find the object.

        Args:
            frame: validated HxW gray or HxWx3 uint8 frame in ``color_order`` (any strides).

        Returns:
            HxW bool object mask at frame resolution; all False when no object was found.
        """
        cv2 = require("cv2")
        h, w = frame.shape[:2]
        gray = self._gray_small(frame)
        gh, gw = gray.shape
        k = 5 if min(gh, gw) >= 32 else 3
        blurred = cv2.GaussianBlur(gray, (k, k), 0)
        _, binary = cv2.threshold(blurred, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        border = np.concatenate([binary[0], binary[-1], binary[:, 0], binary[:, -1]])
        bright_on_border = float(border.mean())
        if bright_on_border > 0.5:  # the bright class touches the border most: it is the background
            binary = 1 - binary
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, kernel)
        binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        min_area = self.min_component_fraction * gh * gw
        keep = np.zeros(count, dtype=bool)
        keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
        small = keep[labels]
        if (gh, gw) == (h, w):
            return small
        return cv2.resize(small.view(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).view(bool)


def build_masker(settings: MaskerSettings) -> Masker:
    """The masker named by ``settings.kind`` (``"none"``: :class:`NoMasker`, all object).

    Raises:
        ConfigError: bad settings; for ``"sam"``, a missing checkpoint file, prompt or unknown model type.
        MissingDependencyError: for ``"sam"``, segment_anything (or torch) is not installed.
    """
    if not isinstance(settings, MaskerSettings):
        raise ConfigError(f"build_masker takes MaskerSettings, got {type(settings).__name__}")
    if settings.kind == "sam":
        from protoinspect.sdk.stages.sam_masker import SamMasker  # lazy: pulls in torch and segment_anything

        return SamMasker(settings.sam_checkpoint, model_type=settings.sam_model_type, box_xyxy=settings.sam_box_xyxy,
                         points=settings.sam_points, color_order=settings.color_order, device=settings.device)
    if settings.kind == "otsu":
        return OtsuMasker(settings.color_order)
    if settings.kind == "roi":
        return RoiMasker(settings.roi_xyxy)  # type: ignore[arg-type]
    return NoMasker()
