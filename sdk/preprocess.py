"""The only resize / colour / normalisation code in ProtoInspect (training, export and SDK share it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from protoinspect.sdk import config_codec
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
        """JSON-safe form for the bundle manifest (:func:`protoinspect.sdk.config_codec.to_dict`)."""
        return config_codec.to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessSpec:
        """Inverse of :meth:`to_dict`; ``color_order`` defaults to ``"rgb"`` (manifests older than the key).

        Raises:
            ConfigError: an unknown key or a value of the wrong type (:mod:`protoinspect.sdk.config_codec`).
            InputError: a value out of its domain (e.g. an image size that is not a multiple of 16).
        """
        return config_codec.from_dict(cls, d)


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


def _swap(order: ColorOrder) -> ColorOrder:
    return "rgb" if order == "bgr" else "bgr"


def _opencv_view(frame: np.ndarray, order: ColorOrder) -> tuple[np.ndarray, ColorOrder, bool, bool]:
    """A view of ``frame`` that OpenCV reads without copying: (view, its colour order, rows flipped, columns flipped).

    A reversed channel axis (``bgr[..., ::-1]``) is undone by swapping the colour order, negative row or
    column steps (mirrored views) by flipping the view back; the caller flips the small output instead.
    Pixels that are not adjacent in memory (a column step other than one pixel, e.g. ``frame[:, ::2]``)
    cannot be read by OpenCV at all: such a view is copied once, at the view's own (already reduced) size.
    """
    if frame.ndim == 3 and frame.strides[2] < 0:
        frame, order = frame[:, :, ::-1], _swap(order)
    flip_rows, flip_cols = frame.strides[0] < 0, frame.strides[1] < 0
    if flip_rows:
        frame = frame[::-1]
    if flip_cols:
        frame = frame[:, ::-1]
    pixel = frame.itemsize * (3 if frame.ndim == 3 else 1)
    channels_ok = frame.ndim == 2 or frame.strides[2] == frame.itemsize or frame.shape[2] == 1
    if (frame.shape[1] > 1 and frame.strides[1] != pixel) or not channels_ok:
        frame = np.ascontiguousarray(frame)
    return frame, order, flip_rows, flip_cols


def resize_frame(frame: np.ndarray, size: tuple[int, int], color_order: ColorOrder) -> tuple[np.ndarray, ColorOrder]:
    """Resize a validated frame to ``size`` (h, w) without copying it first; returns (resized, its colour order).

    Area interpolation when shrinking both sides, bilinear otherwise. Views are read in place: ROI
    crops and row-strided views exactly as their copies; a reversed channel axis by swapping the colour
    order (exact: the returned order says which); mirrored views (negative steps) by resizing the
    unmirrored memory and mirroring the small result, which equals resizing a mirrored copy up to one
    grey level at rare pixels (OpenCV's interpolation rounds ties asymmetrically). Only views whose
    pixels are not adjacent in memory (column steps, e.g. ``frame[:, ::2]``) are copied, at the view's
    size. So an 8000x8000 frame or view is never copied at full resolution.
    """
    cv2 = _cv2()
    frame = validate_frame(frame)
    h, w = (int(v) for v in size)
    src, order, flip_rows, flip_cols = _opencv_view(frame, color_order)
    shrinking = src.shape[0] >= h and src.shape[1] >= w
    out = cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    if flip_rows:
        out = out[::-1]
    if flip_cols:
        out = out[:, ::-1]
    return out, order


def resize_to_rgb(frame: np.ndarray, spec: PreprocessSpec, color_order: ColorOrder | None = None) -> np.ndarray:
    """Resize a validated frame to ``spec.image_size`` and return it as HxWx3 uint8 RGB (C-contiguous).

    Resizing happens first (:func:`resize_frame`: no full-resolution copy, whatever the view); gray
    frames are then replicated to three channels and BGR frames reordered, at model size only.
    """
    out, order = resize_frame(frame, spec.image_size, spec.color_order if color_order is None else color_order)
    return to_rgb(out, order)


def to_rgb(image: np.ndarray, color_order: ColorOrder) -> np.ndarray:
    """HxW gray or HxWx3 uint8 in ``color_order`` -> HxWx3 uint8 RGB, C-contiguous (the one colour conversion).

    Raises:
        InputError: not an HxW or HxWx3 uint8 array, or an unknown colour order.
    """
    img = _colour_image(image, color_order)
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, ::-1] if color_order == "bgr" else img)


def to_gray(image: np.ndarray, color_order: ColorOrder) -> np.ndarray:
    """HxW gray or HxWx3 uint8 in ``color_order`` -> HxW uint8 gray (OpenCV's luma weights); gray is returned as is.

    Raises:
        InputError: as :func:`to_rgb`.
    """
    img = _colour_image(image, color_order)
    if img.ndim == 2:
        return img
    cv2 = _cv2()
    code = cv2.COLOR_BGR2GRAY if color_order == "bgr" else cv2.COLOR_RGB2GRAY
    return cv2.cvtColor(img if img.flags.c_contiguous else np.ascontiguousarray(img), code)


def _colour_image(image: np.ndarray, color_order: ColorOrder) -> np.ndarray:
    """The colour conversions' checks: ``image`` validated as a frame, ``color_order`` one of 'rgb' and 'bgr'."""
    img = validate_frame(image)
    if color_order not in ("rgb", "bgr"):
        raise InputError(f"color_order must be 'rgb' or 'bgr', got {color_order!r}")
    return img


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


def normalize_images(images_rgb: np.ndarray, mean: tuple[float, float, float] = IMAGENET_MEAN,
                     std: tuple[float, float, float] = IMAGENET_STD) -> np.ndarray:
    """N x H x W x 3 uint8 RGB -> N x 3 x H x W float32 ``(x / 255 - mean) / std`` (e.g. a ViT's ImageNet input).

    Unlike :func:`normalize_batch` (a bundle's spec, ``x * scale + offset``), any size and any mean/std.

    Raises:
        InputError: not an N x H x W x 3 uint8 array, or mean/std not 3 values with std > 0.
    """
    if not isinstance(images_rgb, np.ndarray) or images_rgb.dtype != np.uint8 or images_rgb.ndim != 4 \
            or images_rgb.shape[3] != 3:
        got = f"{images_rgb.shape} {images_rgb.dtype}" if isinstance(images_rgb, np.ndarray) else type(images_rgb).__name__
        raise InputError(f"normalize_images expects N x H x W x 3 uint8 RGB, got {got}")
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise InputError(f"mean/std must be 3 values with std > 0, got {mean}, {std}")
    m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return np.ascontiguousarray(((images_rgb.astype(np.float32) / 255.0 - m) / s).transpose(0, 3, 1, 2))


def resize_gt_mask(mask: np.ndarray, size: tuple[int, int], threshold: int = 127) -> np.ndarray:
    """Ground-truth mask (HxW integers, defect pixels 255 as datasets store them) -> bool mask of ``size`` (h, w).

    Pixels ``> threshold`` are defect; nearest-neighbour resizing.

    Raises:
        InputError: a bool mask (binarised already: use :func:`resize_bool_mask`) or not a 2-D integer array.
    """
    arr = np.asarray(mask)
    if arr.dtype == np.bool_:
        raise InputError("resize_gt_mask takes 0..255 integer masks; this one is bool (thresholding it at "
                         f"{threshold} would empty it): use resize_bool_mask")
    if arr.ndim != 2 or arr.dtype.kind not in "iu":
        raise InputError(f"resize_gt_mask takes an HxW integer mask, got shape {arr.shape} dtype {arr.dtype}")
    return resize_bool_mask(arr > threshold, size)


def resize_bool_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bool mask (HxW: object masks, binarised ground truth) -> bool mask of ``size`` (h, w), nearest neighbour.

    Raises:
        InputError: not a 2-D bool array (a 0..255 mask: use :func:`resize_gt_mask`).
    """
    arr = np.asarray(mask)
    if arr.dtype != np.bool_ or arr.ndim != 2:
        raise InputError(f"resize_bool_mask takes an HxW bool mask, got shape {arr.shape} dtype {arr.dtype} "
                         "(a 0..255 ground-truth mask: use resize_gt_mask)")
    h, w = size
    if arr.shape == (h, w):
        return arr.copy()
    cv2 = _cv2()
    return cv2.resize(arr.view(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).view(np.bool_)


def resize_map(anomaly_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Anomaly map (hxw float) -> float32 map of ``size`` (h, w) with bilinear interpolation."""
    cv2 = _cv2()
    h, w = size
    return cv2.resize(np.asarray(anomaly_map, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
