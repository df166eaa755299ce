"""The files of a dataset: its samples and the folder-listing rules both supported layouts share
(hidden entries skipped, sorted by name, sub-folders and empty class folders are errors)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from protoinspect.sdk.errors import DatasetError
from protoinspect.training.image_io import IMAGE_EXTENSIONS, is_image_name


@dataclass(frozen=True)
class Sample:
    """One image of a dataset split.

    Attributes:
        image_path: the image file.
        label: 0 normal, 1 anomalous.
        defect_type: ``"good"`` for normal images, else the defect folder's type name.
        mask_path: ground-truth mask of an anomalous image; None for normal images.
    """

    image_path: Path
    label: int
    defect_type: str
    mask_path: Path | None


@dataclass(frozen=True)
class Dataset:
    """A listed dataset (files only; use ``validate_dataset`` to check every file up front).

    Attributes:
        name: the root folder's name, e.g. ``"tile"`` or ``"mtd"``.
        root: the resolved root folder.
        format: ``"mvtec"`` or ``"mtd"``.
        channels: ``"gray"`` or ``"rgb"``, detected from the first training image.
        train: training samples (all normal), sorted by file name.
        test: test samples, sorted by (defect type, file name).
    """

    name: str
    root: Path
    format: str
    channels: str
    train: tuple[Sample, ...]
    test: tuple[Sample, ...]

    @property
    def defect_types(self) -> tuple[str, ...]:
        """Sorted defect types present in the test split, ``"good"`` excluded."""
        return tuple(sorted({s.defect_type for s in self.test if s.defect_type != "good"}))


def check_root(root: str | os.PathLike[str]) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        msg = f"dataset root {path} does not exist"
        raise DatasetError(msg)
    if not path.is_dir():
        msg = f"dataset root {path} is not a folder"
        raise DatasetError(msg)
    return path.resolve()


def folder_entries(folder: Path) -> list[os.DirEntry[str]]:
    """Non-hidden entries of ``folder`` sorted by name."""
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        msg = f"folder {folder} cannot be listed: {exc.strerror or exc}"
        raise DatasetError(msg) from None


def is_folder(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def list_images(folder: Path, allowed_subdirs: tuple[str, ...] = ()) -> list[Path]:
    """Image files directly inside ``folder`` (sorted); a sub-folder not in ``allowed_subdirs`` is an error."""
    images = []
    for e in folder_entries(folder):
        if is_folder(e):
            if e.name in allowed_subdirs:
                continue
            msg = f"unexpected sub-folder {e.path}: images must lie directly in {folder} (sub-folders are not read)"
            raise DatasetError(msg)
        if is_image_name(e.name):
            if not e.is_file():
                msg = f"image {e.path} is not a regular file (broken symbolic link?)"
                raise DatasetError(msg)
            images.append(Path(e.path))
    return images


def require_images(folder: Path, images: list[Path], what: str = "image files") -> None:
    if images:
        return
    others = [e.name for e in folder_entries(folder)]
    found = f"; it holds only {len(others)} non-image entries ({', '.join(others[:5])})" if others else ""
    exts = " ".join(sorted(IMAGE_EXTENSIONS))
    msg = f"class folder {folder} is empty: no {what} ({exts}) found{found}"
    raise DatasetError(msg)
