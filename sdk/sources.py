"""Frame sources for the command line: an image file, a folder of images, a video file or a camera.

Every source yields ``(frame id, frame)`` pairs; frames are HxWx3 uint8 BGR as OpenCV reads them.
Nothing is skipped silently: an unreadable image or a source that cannot be opened raises
:class:`~protoinspect.sdk.errors.InputError` naming it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from protoinspect.sdk.errors import InputError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})


def _cv2() -> Any:
    from protoinspect.sdk._imports import require

    return require("cv2")


def is_camera(source: str | os.PathLike[str]) -> bool:
    """True when ``source`` is a camera index given as a decimal string such as ``"0"``."""
    text = os.fspath(source)
    return text.isdecimal() and not Path(text).exists()


def is_image_file(path: Path) -> bool:
    """True when ``path`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name; other files are ignored."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def read_frame(path: Path) -> np.ndarray:
    """Read one image file as a camera frame: HxWx3 uint8 BGR (gray files are expanded), what
    :class:`~protoinspect.sdk.inspector.Inspector` takes with its default ``color_order``. Training reads
    data-set images in the data set's mode instead (``protoinspect.training.image_io.read_dataset_image``).

    Raises:
        InputError: the file cannot be read or decoded (names the file).
    """
    cv2 = _cv2()
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"cannot read image {path}: {exc}") from exc
    frame = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if frame is None:
        raise InputError(f"cannot decode image {path} (corrupt or unsupported file)")
    return frame


def _open_capture(target: int | str, name: str) -> Any:
    cv2 = _cv2()
    cap = cv2.VideoCapture(target)
    if not cap.isOpened():
        cap.release()
        if isinstance(target, int):
            raise InputError(f"cannot open camera index {target} ({name})")
        raise InputError(f"cannot open video source {name!r} (not a readable video or image file)")
    return cap


def _iter_capture(target: int | str, name: str) -> Iterator[tuple[str, np.ndarray]]:
    cap = _open_capture(target, name)
    try:
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            if frame.ndim == 2:
                frame = np.repeat(frame[:, :, None], 3, axis=2)
            yield f"{name}#{index}", frame
            index += 1
    finally:
        cap.release()


def iter_frames(source: str | os.PathLike[str]) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(frame id, HxWx3 uint8 BGR frame)`` from ``source``.

    Args:
        source: an image file (id: its file name), a folder (its images sorted by name; ids are the
            file names), a video file (ids ``"<name>#<frame number>"``) or a camera index as a
            decimal string like ``"0"`` (ids ``"camera<N>#<frame number>"``).

    Yields:
        Frame id and frame, in order.

    Raises:
        InputError: the source does not exist or cannot be opened, or an image in it cannot be
            read (raised when that frame is reached; frames before it were yielded).
    """
    text = os.fspath(source)
    if is_camera(text):
        yield from _iter_capture(int(text), f"camera{int(text)}")
        return
    path = Path(text)
    if path.is_dir():
        for image in list_images(path):
            yield image.name, read_frame(image)
        return
    if not path.is_file():
        raise InputError(f"source {text!r} does not exist (give an image, a folder, a video or a camera index)")
    if is_image_file(path):
        yield path.name, read_frame(path)
        return
    yield from _iter_capture(str(path), path.name)


def count_frames(source: str | os.PathLike[str]) -> int | None:
    """Number of frames ``source`` will yield, for a progress bar.

    Returns:
        The count for image files, folders and videos (a video's count is its container's frame
        count, None when the container does not know it); None for cameras and unknown sources.
    """
    text = os.fspath(source)
    if is_camera(text):
        return None
    path = Path(text)
    if path.is_dir():
        return len(list_images(path))
    if not path.is_file():
        return None
    if is_image_file(path):
        return 1
    cv2 = _cv2()
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return None
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        return n if n > 0 else None
    finally:
        cap.release()
