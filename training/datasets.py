"""Datasets for training and evaluation: listing, reading and up-front validation.

This is the public entry point; the work is split between :mod:`protoinspect.training.dataset_layout`
(discovering and listing the MVTec-style and MTD layouts) and :mod:`protoinspect.training.image_io` (reading and
checking image and mask files). Datasets never resize: ``protoinspect.sdk.preprocess`` does.

Typical use::

    ds = load_dataset("/data/mvtec/tile")       # lists files only (fast)
    validate_dataset(ds)                         # opens every image and mask once; raises on the first problem
    print(summarize(ds))
    img = read_dataset_image(ds.test[0].image_path, ds.channels)
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from protoinspect.sdk.errors import DatasetError
from protoinspect.training.dataset_layout import FORMATS, Dataset, Sample, detect_format, load_dataset
from protoinspect.training.image_io import (
    CHANNEL_MODES,
    IMAGE_EXTENSIONS,
    check_file_header,
    read_dataset_image,
    read_mask,
)

__all__ = [
    "CHANNEL_MODES",
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "Dataset",
    "Sample",
    "detect_format",
    "load_dataset",
    "read_dataset_image",
    "read_mask",
    "summarize",
    "validate_dataset",
]


def _check_structure(ds: Dataset) -> None:
    """Consistency of the listing itself (matters for hand-built datasets)."""
    if ds.channels not in CHANNEL_MODES:
        msg = f"dataset {ds.name}: channels must be one of {CHANNEL_MODES}, got {ds.channels!r}"
        raise DatasetError(msg)
    if not ds.train:
        msg = f"dataset {ds.name} ({ds.root}) has no training images"
        raise DatasetError(msg)
    for split, samples in (("train", ds.train), ("test", ds.test)):
        seen: set[Any] = set()
        for s in samples:
            if s.image_path in seen:
                msg = f"image {s.image_path} appears twice in the {split} split"
                raise DatasetError(msg)
            seen.add(s.image_path)
            if s.label not in (0, 1) or (s.label == 0) != (s.defect_type == "good"):
                msg = f"image {s.image_path}: label {s.label!r} does not match defect type {s.defect_type!r} (0 <-> 'good')"
                raise DatasetError(msg)
            if s.label == 1 and s.mask_path is None:
                msg = f"defective image {s.image_path} has no mask path"
                raise DatasetError(msg)
            if split == "train" and s.label != 0:
                msg = f"training image {s.image_path} is labelled anomalous; training uses normal images only"
                raise DatasetError(msg)
    leaked = {s.image_path for s in ds.train} & {s.image_path for s in ds.test}
    if leaked:
        msg = f"image {sorted(leaked)[0]} is in both the train and the test split ({len(leaked)} such images)"
        raise DatasetError(msg)


def _pixel_checker(channels: str) -> Callable[[Sample], None]:
    def check(s: Sample) -> None:
        image = read_dataset_image(s.image_path, channels)
        if s.mask_path is not None:
            read_mask(s.mask_path, image.shape[:2], image_path=s.image_path)

    return check


def _header_check(s: Sample) -> None:
    check_file_header(s.image_path)
    if s.mask_path is not None:
        check_file_header(s.mask_path, "mask")


def validate_dataset(ds: Dataset, check_pixels: bool = True, *, workers: int | None = None) -> None:
    """Open every image and mask once and raise on the first problem, so training fails up front.

    With ``check_pixels`` every file is decoded: corrupt/0-byte files, 16-bit, RGBA or 2-channel
    images, an image whose mode differs from ``ds.channels``, multi-channel masks and masks whose size
    differs from their image are errors. Without it only a cheap check runs (the file exists, is not
    empty and starts with a PNG/JPEG/BMP/TIFF signature). Files are checked in a thread pool; the error
    raised is always the first problem in listing order (train, then test).

    Args:
        ds: a dataset from :func:`load_dataset`.
        check_pixels: decode every file (default) or only check file headers.
        workers: number of threads (default ``min(8, cpu count)``; 1 checks serially).

    Raises:
        DatasetError: the first problem found, naming the file.
    """
    _check_structure(ds)
    samples = [*ds.train, *ds.test]
    check = _pixel_checker(ds.channels) if check_pixels else _header_check
    n = workers if workers is not None else min(8, os.cpu_count() or 1)
    if n <= 1:
        for s in samples:
            check(s)
        return
    pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="validate_dataset")
    try:
        for _ in pool.map(check, samples):
            pass
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def summarize(ds: Dataset) -> dict[str, Any]:
    """Counts per split and type (JSON-safe).

    Returns:
        ``{"name", "root", "format", "channels", "train": {type: n}, "test": {type: n}, "n_train",
        "n_test", "n_test_good", "n_test_defective", "defect_types"}`` with types sorted by name.
    """
    train = Counter(s.defect_type for s in ds.train)
    test = Counter(s.defect_type for s in ds.test)
    n_good = sum(1 for s in ds.test if s.label == 0)
    return {
        "name": ds.name,
        "root": str(ds.root),
        "format": ds.format,
        "channels": ds.channels,
        "train": {t: train[t] for t in sorted(train)},
        "test": {t: test[t] for t in sorted(test)},
        "n_train": len(ds.train),
        "n_test": len(ds.test),
        "n_test_good": n_good,
        "n_test_defective": len(ds.test) - n_good,
        "defect_types": list(ds.defect_types),
    }
