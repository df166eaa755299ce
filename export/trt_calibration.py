"""INT8 calibration data for TensorRT 10: images -> the runtime's model input, batched, and the calibrator.

The calibration frames go through exactly the runtime's pre-processing: a file is decoded with OpenCV
(BGR, as a camera frame would arrive from OpenCV) and handed to :func:`protoinspect.sdk.preprocess.resize_to_rgb`
with ``color_order="bgr"``, which is what :class:`~protoinspect.sdk.stages.detector.DetectorStage` does with every
frame. The detector graph normalises inside itself, so a batch is ``N x H x W x 3`` uint8 RGB, the
engine's ``image`` input as it is.

:func:`make_entropy_calibrator` subclasses ``tensorrt.IInt8EntropyCalibrator2`` (TensorRT 10 only; the
class was removed in 11) and feeds those batches through one pycuda device buffer. The calibration
cache is kept in memory (never read from an earlier run, so a changed model or image set cannot pick
up a stale cache); its sha256 goes into the engine's sidecar.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from protoinspect.sdk.errors import ConfigError, InputError
from protoinspect.sdk.preprocess import PreprocessSpec, resize_to_rgb

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
#: Largest calibration batch (TensorRT's samples use 8-32; the batch only changes how often get_batch runs).
MAX_CALIB_BATCH = 8


def calibration_images(calib_dir: str | Path, limit: int) -> list[Path]:
    """Image files under ``calib_dir`` (recursive, sorted, hidden files skipped), at most ``limit`` of
    them evenly spaced over the sorted list.

    Raises:
        ConfigError: not a folder, or no image in it.
    """
    root = Path(calib_dir)
    if not root.is_dir():
        raise ConfigError(f"calibration folder {root} does not exist")
    found = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not found:
        raise ConfigError(f"calibration folder {root} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    if len(found) > limit:
        picks = np.linspace(0, len(found) - 1, limit).round().astype(int)
        found = [found[i] for i in sorted(set(picks.tolist()))]
    return found


def read_frame(path: str | Path) -> np.ndarray:
    """Decode an image file as a camera frame would arrive from OpenCV: HxW gray or HxWx3 BGR uint8.

    Raises:
        InputError: unreadable, not 8-bit, or a channel count other than 1, 3 or 4 (alpha is dropped).
    """
    from protoinspect.sdk._imports import require

    cv2 = require("cv2")
    data = np.fromfile(str(path), dtype=np.uint8)
    frame = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if frame is None:
        raise InputError(f"cannot decode calibration image {path}")
    if frame.dtype != np.uint8:
        raise InputError(f"calibration image {path} is {frame.dtype}; use 8-bit images")
    if frame.ndim == 3 and frame.shape[2] == 4:
        frame = frame[:, :, :3]
    if frame.ndim == 3 and frame.shape[2] not in (1, 3):
        raise InputError(f"calibration image {path} has {frame.shape[2]} channels")
    return frame


def model_inputs(paths: Sequence[str | Path], spec: PreprocessSpec) -> np.ndarray:
    """N x H x W x 3 uint8 RGB: each file through :func:`read_frame` and ``resize_to_rgb(frame, spec, "bgr")``."""
    if not paths:
        raise ConfigError("no calibration images given")
    return np.stack([resize_to_rgb(read_frame(p), spec, "bgr") for p in paths])


def calibration_batch_size(num_images: int, max_batch: int) -> int:
    """Batch size of the calibration profile: at most :data:`MAX_CALIB_BATCH`, the profile's max batch and the
    number of images."""
    return max(1, min(MAX_CALIB_BATCH, max_batch, num_images))


def calibration_batches(paths: Sequence[str | Path], spec: PreprocessSpec, batch_size: int) -> Iterator[np.ndarray]:
    """Yield C-contiguous ``batch_size x H x W x 3`` uint8 batches, reading images lazily; a last incomplete
    batch is dropped (the calibration profile has one fixed batch size)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(paths) - batch_size + 1, batch_size):
        yield np.ascontiguousarray(model_inputs(paths[start:start + batch_size], spec))


def make_entropy_calibrator(trt: Any, cuda: Any, batches: Iterable[np.ndarray], batch_shape: tuple[int, ...]) -> Any:
    """An ``IInt8EntropyCalibrator2`` feeding ``batches`` (each exactly ``batch_shape`` uint8) to TensorRT.

    Args:
        trt: the ``tensorrt`` module (10.x).
        cuda: ``pycuda.driver`` (a CUDA context must be current while TensorRT calibrates).
        batches: the batches, consumed once.
        batch_shape: shape of every batch; its first element is the calibration batch size.

    Returns:
        The calibrator; ``.batches_served`` counts batches handed out, ``.cache`` holds the calibration
        table TensorRT wrote (bytes or None), ``.cache_sha256`` its digest.
    """
    base = getattr(trt, "IInt8EntropyCalibrator2", None)
    if base is None:
        raise ConfigError(f"TensorRT {trt.__version__} has no IInt8EntropyCalibrator2 (removed in 11): INT8 needs "
                          "Q/DQ nodes in the ONNX file")
    shape = tuple(int(v) for v in batch_shape)
    nbytes = int(np.prod(shape))  # uint8

    class ProtoInspectCalibrator(base):  # type: ignore[misc, valid-type]
        """Serves pre-processed uint8 image batches from one device buffer."""

        def __init__(self) -> None:
            base.__init__(self)
            self._batches = iter(batches)
            self._device = cuda.mem_alloc(nbytes)
            self.batches_served = 0
            self.cache: bytes | None = None

        def get_batch_size(self) -> int:
            return shape[0]

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self._batches, None)
            if batch is None:
                return None
            if batch.shape != shape or batch.dtype != np.uint8:
                raise InputError(f"calibration batch is {batch.shape} {batch.dtype}, expected {shape} uint8")
            cuda.memcpy_htod(self._device, np.ascontiguousarray(batch))
            self.batches_served += 1
            return [int(self._device)]

        def read_calibration_cache(self) -> bytes | None:
            return None  # always calibrate from the images given now

        def write_calibration_cache(self, cache: Any) -> None:
            self.cache = bytes(cache)

        @property
        def cache_sha256(self) -> str | None:
            return None if self.cache is None else hashlib.sha256(self.cache).hexdigest()

    return ProtoInspectCalibrator()
