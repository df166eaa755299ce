"""Reading and checking dataset image and mask files (no resizing: that lives in ``protoinspect.sdk.preprocess``).

Every failure is a :class:`~protoinspect.sdk.errors.DatasetError` that names the file and the problem. Files are
decoded with ``cv2.IMREAD_UNCHANGED``, so an image's *mode* is the number of channels as stored:
1 channel is ``"gray"``, 3 channels is ``"rgb"`` (even when the three channels are identical).
Files are read as bytes and decoded with ``cv2.imdecode``, which also handles non-ASCII paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from protoinspect.sdk.errors import ConfigError, DatasetError
from protoinspect.sdk.preprocess import to_rgb

#: File extensions (lower case) treated as images; any other file in a dataset folder is ignored.
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})

#: Image modes a dataset can have.
CHANNEL_MODES: tuple[str, ...] = ("gray", "rgb")

# Leading bytes of the formats above (used by the cheap header check).
_SIGNATURES: tuple[bytes, ...] = (
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"\xff\xd8\xff",  # JPEG
    b"BM",  # BMP
    b"II*\x00",  # TIFF little-endian
    b"MM\x00*",  # TIFF big-endian
    b"II+\x00",  # BigTIFF little-endian
    b"MM\x00+",  # BigTIFF big-endian
)

_CONVERT_HINT = "convert it to 8-bit RGB (e.g. cv2.cvtColor + .astype(np.uint8)) or 8-bit grayscale"


def _cv2() -> Any:
    from protoinspect.sdk._imports import require

    return require("cv2")


def is_image_name(name: str) -> bool:
    """True when ``name`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive) and is not hidden.

    Hidden names (starting with ``"."``, e.g. ``.DS_Store`` or macOS ``._000.png`` resource forks)
    are never images.
    """
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        msg = f"{what} {path} does not exist"
        raise DatasetError(msg) from None
    except IsADirectoryError:
        msg = f"{what} {path} is a folder, not an image file"
        raise DatasetError(msg) from None
    except OSError as exc:
        msg = f"{what} {path} cannot be read: {exc.strerror or exc}"
        raise DatasetError(msg) from None
    if not data:
        msg = f"{what} {path} is empty (0 bytes); re-copy or delete it"
        raise DatasetError(msg)
    return data


def decode_file(path: str | Path, what: str = "image") -> np.ndarray:
    """Decode an image file exactly as stored (``cv2.IMREAD_UNCHANGED``, BGR channel order).

    Args:
        path: the file.
        what: word used in error messages ("image" or "mask").

    Returns:
        HxW or HxWxC array of the stored dtype.

    Raises:
        DatasetError: missing, unreadable, empty (0 bytes) or undecodable file.
    """
    cv2 = _cv2()
    path = Path(path)
    data = _read_bytes(path, what)
    try:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        arr = None
    if arr is None or arr.size == 0:
        msg = (
            f"{what} {path} cannot be decoded: the file is corrupt or not a PNG/JPEG/BMP/TIFF image "
            f"({len(data)} bytes); re-export it or delete it"
        )
        raise DatasetError(msg)
    return arr


def image_mode(arr: np.ndarray, path: str | Path, what: str = "image") -> str:
    """Mode of a decoded image: ``"gray"`` (1 channel) or ``"rgb"`` (3 channels), 8-bit only.

    Raises:
        DatasetError: 16-bit/float images, 2-channel (gray+alpha) or 4-channel (RGBA) images.
    """
    if arr.dtype != np.uint8:
        bits = arr.dtype.itemsize * 8
        msg = f"{what} {path} is a {bits}-bit {arr.dtype} image; only 8-bit images are supported: {_CONVERT_HINT}"
        raise DatasetError(msg)
    channels = 1 if arr.ndim == 2 else int(arr.shape[2])
    if channels == 1:
        return "gray"
    if channels == 3:
        return "rgb"
    kind = {2: "gray+alpha", 4: "RGBA / gray+alpha"}.get(channels, "multi-channel")
    msg = f"{what} {path} has {channels} channels ({kind}); only 1 or 3 channels are supported: {_CONVERT_HINT}"
    raise DatasetError(msg)


def probe_mode(path: str | Path) -> str:
    """Decode ``path`` and return its mode (``"gray"`` or ``"rgb"``); used to detect a dataset's mode."""
    return image_mode(decode_file(path), path)


def _check_channels(channels: str) -> None:
    if channels not in CHANNEL_MODES:
        msg = f"channels must be one of {CHANNEL_MODES}, got {channels!r}"
        raise ConfigError(msg)


def read_dataset_image(path: str | Path, channels: str) -> np.ndarray:
    """Read a dataset image in the dataset's mode.

    Args:
        path: image file (PNG, JPEG, BMP or TIFF).
        channels: the dataset's mode, ``"gray"`` or ``"rgb"``.

    Returns:
        HxW uint8 for ``"gray"``; HxWx3 uint8 in RGB order for ``"rgb"``.

    Raises:
        ConfigError: ``channels`` is not ``"gray"`` or ``"rgb"``.
        DatasetError: missing/empty/corrupt file, unsupported depth or channel count, or a mode that
            differs from ``channels`` (a dataset must not mix gray and rgb images).
    """
    _check_channels(channels)
    arr = decode_file(path)
    mode = image_mode(arr, path)
    if mode != channels:
        found = "grayscale (1 channel)" if mode == "gray" else "RGB (3 channels)"
        expected = "grayscale (1 channel)" if channels == "gray" else "RGB (3 channels)"
        msg = (
            f"image {path} is {found} but the dataset is {expected} (its mode is detected from the first "
            f"training image); all images of a dataset must have one mode: convert this file to {channels}"
        )
        raise DatasetError(msg)
    if mode == "gray":
        return arr if arr.ndim == 2 else np.ascontiguousarray(arr[:, :, 0])
    return to_rgb(arr, "bgr")


def read_mask(path: str | Path, shape: tuple[int, int], image_path: str | Path | None = None) -> np.ndarray:
    """Read a ground-truth mask with its raw values (binarise later, e.g. ``> 127``).

    A 3-channel mask whose three channels are identical (a mask saved as colour) is accepted and
    channel 0 is returned; any other multi-channel mask is an error.

    Args:
        path: mask file.
        shape: (height, width) of the image the mask belongs to.
        image_path: that image, named in the size-mismatch message.

    Returns:
        HxW uint8 mask.

    Raises:
        DatasetError: missing/empty/corrupt file, not 8-bit, not single-channel, or a size that differs
            from ``shape``.
    """
    arr = decode_file(path, "mask")
    if arr.dtype != np.uint8:
        msg = f"mask {path} is a {arr.dtype.itemsize * 8}-bit {arr.dtype} image; save masks as 8-bit single-channel PNG"
        raise DatasetError(msg)
    if arr.ndim == 3:
        c = arr.shape[2]
        if c == 1:
            arr = arr[:, :, 0]
        elif c == 3 and np.array_equal(arr[:, :, 0], arr[:, :, 1]) and np.array_equal(arr[:, :, 0], arr[:, :, 2]):
            arr = arr[:, :, 0]
        else:
            why = "differing colour channels" if c == 3 else f"{c} channels"
            msg = f"mask {path} is not single-channel ({why}); save masks as 8-bit single-channel PNG (0 = normal, 255 = defect)"
            raise DatasetError(msg)
    h, w = (int(v) for v in shape)
    if arr.shape != (h, w):
        img = f"image {image_path}" if image_path is not None else "its image"
        msg = (
            f"mask {path} is {arr.shape[0]}x{arr.shape[1]} (HxW) but {img} is {h}x{w} (HxW); "
            "a mask must have exactly its image's size"
        )
        raise DatasetError(msg)
    return np.ascontiguousarray(arr)


def check_file_header(path: str | Path, what: str = "image") -> None:
    """Cheap check without decoding: the file exists, is not empty and starts like PNG/JPEG/BMP/TIFF.

    Raises:
        DatasetError: missing, unreadable, empty, or not an image by its leading bytes.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
    except FileNotFoundError:
        msg = f"{what} {path} does not exist"
        raise DatasetError(msg) from None
    except OSError as exc:
        msg = f"{what} {path} cannot be read: {exc.strerror or exc}"
        raise DatasetError(msg) from None
    if not head:
        msg = f"{what} {path} is empty (0 bytes); re-copy or delete it"
        raise DatasetError(msg)
    if not any(head.startswith(sig) for sig in _SIGNATURES):
        msg = f"{what} {path} is not a PNG/JPEG/BMP/TIFF file (unknown leading bytes {head[:8]!r})"
        raise DatasetError(msg)
