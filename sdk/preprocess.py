"""The only resize / colour / normalisation code in ProtoInspect (training, export and SDK share it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from protoinspect.sdk.errors import InputError

ColorOrder = Literal["rgb", "bgr"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessSpec:
    """How a frame becomes the model input; stored in the bundle manifest.

    Attributes:
        image_size: (height, width) of the model input in pixels.
        mean: per-channel RGB mean in [0, 1] subtracted after scaling to [0, 1].
        std: per-channel RGB standard deviation in [0, 1].
        color_order: channel order of 3-channel frames handed in ("rgb" or "bgr").
    """

    image_size: tuple[int, int] = (256, 256)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    color_order: ColorOrder = "rgb"
    _scale: np.ndarray = field(init=False, repr=False, compare=False)
    _offset: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        h, w = (int(v) for v in self.image_size)
        if h < 16 or w < 16 or h % 16 or w % 16:
            msg = f"image_size must be positive multiples of 16 (got {self.image_size})"
            raise InputError(msg)
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            msg = f"mean/std must be 3 values with std > 0 (got {self.mean}, {self.std})"
            raise InputError(msg)
        if self.color_order not in ("rgb", "bgr"):
            msg = f"color_order must be 'rgb' or 'bgr' (got {self.color_order!r})"
            raise InputError(msg)
        object.__setattr__(self, "image_size", (h, w))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        std = np.asarray(self.std, np.float32)
        # x_norm = x_uint8 * scale + offset  ==  (x/255 - mean) / std
        object.__setattr__(self, "_scale", (1.0 / (255.0 * std)).reshape(3, 1, 1))
        object.__setattr__(
            self, "_offset", (-np.asarray(self.mean, np.float32) / std).reshape(3, 1, 1)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for the bundle manifest."""
        d = asdict(self)
        d.pop("_scale", None)
        d.pop("_offset", None)
        d["image_size"] = list(self.image_size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(
            image_size=tuple(d["image_size"]),  # type: ignore[arg-type]
            mean=tuple(d["mean"]),  # type: ignore[arg-type]
            std=tuple(d["std"]),  # type: ignore[arg-type]
            color_order=d.get("color_order", "rgb"),
        )


def validate_frame(frame: Any) -> np.ndarray:
    """Check a camera frame and return it as an ndarray (views are kept, not copied).

    Args:
        frame: HxW (gray) or HxWx3 uint8 array; any strides (ROI crops, flipped views) are fine.

    Returns:
        The same array.

    Raises:
        InputError: None, not an array, wrong dtype, wrong number of dimensions or channels, empty.
    """
    if frame is None:
        raise InputError("frame is None (did the camera read fail?)")
    if not isinstance(frame, np.ndarray):
        msg = f"frame must be a numpy.ndarray, got {type(frame).__name__}"
        raise InputError(msg)
    if frame.dtype != np.uint8:
        msg = f"frame dtype must be uint8, got {frame.dtype} (convert with np.clip(x, 0, 255).astype(np.uint8))"
        raise InputError(msg)
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim not in (2, 3):
        msg = f"frame must be HxW (gray) or HxWx3, got shape {frame.shape}"
        raise InputError(msg)
    if frame.ndim == 3 and frame.shape[2] != 3:
        msg = f"frame must have 1 or 3 channels, got {frame.shape[2]} (shape {frame.shape}); drop alpha before inspecting"
        raise InputError(msg)
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        msg = f"frame is empty (shape {frame.shape})"
        raise InputError(msg)
    return frame


def _cv2() -> Any:
    from protoinspect.sdk._imports import require

    return require("cv2")


def resize_to_rgb(frame: np.ndarray, spec: PreprocessSpec, color_order: ColorOrder | None = None) -> np.ndarray:
    """Resize a validated frame to ``spec.image_size`` and return it as HxWx3 uint8 RGB.

    Gray frames are replicated to three channels; BGR frames are reordered. Resizing happens first
    (area interpolation when shrinking), so an 8000x8000 frame never gets a full-size copy.
    """
    cv2 = _cv2()
    frame = validate_frame(frame)
    h, w = spec.image_size
    order = spec.color_order if color_order is None else color_order
    src = np.ascontiguousarray(frame) if not frame.flags.c_contiguous else frame
    shrinking = src.shape[0] >= h and src.shape[1] >= w
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    out = cv2.resize(src, (w, h), interpolation=interp)
    if out.ndim == 2:
        return np.repeat(out[:, :, None], 3, axis=2)
    if order == "bgr":
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def normalize(image_rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """HxWx3 uint8 RGB at model size -> 3xHxW float32 normalised with the spec's mean/std."""
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        msg = f"normalize expects HxWx3 uint8 RGB, got {image_rgb.shape} {image_rgb.dtype}"
        raise InputError(msg)
    chw = np.transpose(image_rgb, (2, 0, 1)).astype(np.float32)
    return chw * spec._scale + spec._offset


def normalize_batch(images_rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Batched :func:`normalize`: bit-identical to ``np.stack([normalize(im, spec) for im in images_rgb])``.

    Args:
        images_rgb: N x H x W x 3 uint8 RGB at model size (N >= 1, any strides).
        spec: the bundle's preprocessing (its float32 ``x * scale + offset`` constants are used).

    Returns:
        N x 3 x H x W float32, C-contiguous.

    Raises:
        InputError: not an N x H x W x 3 uint8 array.
    """
    if (
        not isinstance(images_rgb, np.ndarray)
        or images_rgb.dtype != np.uint8
        or images_rgb.ndim != 4
        or images_rgb.shape[3] != 3
        or images_rgb.shape[0] == 0
    ):
        got = f"{images_rgb.shape} {images_rgb.dtype}" if isinstance(images_rgb, np.ndarray) else type(images_rgb).__name__
        msg = f"normalize_batch expects N x H x W x 3 uint8 RGB (N >= 1), got {got}"
        raise InputError(msg)
    nchw = np.ascontiguousarray(np.transpose(images_rgb, (0, 3, 1, 2))).astype(np.float32)  # N x 3 x H x W
    return nchw * spec._scale + spec._offset


def preprocess_frame(frame: np.ndarray, spec: PreprocessSpec, color_order: ColorOrder | None = None) -> np.ndarray:
    """Frame (HxW gray or HxWx3 uint8 in ``color_order``) -> 3xHxW float32 model input."""
    return normalize(resize_to_rgb(frame, spec, color_order), spec)


def preprocess_batch(frames: list[np.ndarray], spec: PreprocessSpec, color_order: ColorOrder | None = None) -> np.ndarray:
    """List of frames -> Bx3xHxW float32."""
    if len(frames) == 0:
        raise InputError("empty batch: give at least one frame")
    return np.stack([preprocess_frame(f, spec, color_order) for f in frames])


def resize_mask(mask: np.ndarray, size: tuple[int, int], threshold: int = 127) -> np.ndarray:
    """Ground-truth mask (HxW, any integer type) -> bool mask of ``size`` (h, w); pixels > threshold are defect."""
    cv2 = _cv2()
    binary = (np.asarray(mask) > threshold).astype(np.uint8)
    h, w = size
    return cv2.resize(binary, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)


def resize_map(anomaly_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Anomaly map (hxw float) -> float32 map of ``size`` (h, w) with bilinear interpolation."""
    cv2 = _cv2()
    h, w = size
    return cv2.resize(np.asarray(anomaly_map, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
