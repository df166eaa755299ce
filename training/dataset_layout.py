"""Discovery and listing of anomaly-detection datasets on disk; nothing here decodes pixels except
the first training image (to detect the dataset's mode).

Two layouts are supported:

* **MVTec-style** (MVTec AD, converted VisA, BTAD, MVTec 3D-AD)::

      ROOT/train/good/*                  training images (normal only)
      ROOT/test/good/*                   normal test images
      ROOT/test/<defect_type>/*          defective test images
      ROOT/ground_truth/<defect_type>/<stem>_mask.png   one mask per defective test image

  The mask of ``test/<type>/<stem>.<ext>`` is looked up in ``ground_truth/<type>/`` as
  ``<stem>_mask.<any image ext>`` first (MVTec, VisA), then ``<stem>.<any image ext>`` (BTAD).
  A class folder that holds an ``rgb/`` sub-folder is read in the native MVTec 3D-AD layout: images
  from ``<class>/rgb/``, masks from ``<class>/gt/`` (same lookup), ``xyz/`` ignored.

* **MTD** (Magnetic Tile Defect)::

      ROOT/MT_Free/Imgs/*.jpg            normal images
      ROOT/MT_<Type>/Imgs/*.jpg          defective images, mask <stem>.png beside each image
      ROOT/train_normal_filenames.txt    basenames of the MT_Free images used for training

  Training = the listed MT_Free images; test = every other image (unlisted MT_Free as ``"good"``,
  ``MT_<Type>`` as defect type ``<type>`` lower-cased). In ``Imgs/`` every ``.png`` is a mask.

Rules shared by both: image extensions are :data:`~protoinspect.training.image_io.IMAGE_EXTENSIONS`
(case-insensitive); hidden entries (names starting with ``"."``) and files with other extensions are
ignored; a sub-folder inside a class folder, an image outside any class folder, an empty class folder
or a missing mask is a :class:`~protoinspect.sdk.errors.DatasetError`. Listings are sorted by file name; the
test split is sorted by (defect type, file name).
"""

from __future__ import annotations

import os
from pathlib import Path

from protoinspect.sdk.errors import ConfigError, DatasetError
from protoinspect.training.dataset_files import (
    Dataset,
    Sample,
    check_root,
    folder_entries,
    is_folder,
    list_images,
    require_images,
)
from protoinspect.training.image_io import is_image_name, probe_mode
from protoinspect.training.layout_mtd import MTD_SPLIT_FILE, list_mtd, missing_mtd

FORMATS: tuple[str, ...] = ("mvtec", "mtd")

_LAYOUTS = {
    "mvtec": (
        "MVTec-style layout: ROOT/train/good/*, ROOT/test/good/*, ROOT/test/<defect_type>/*, "
        "ROOT/ground_truth/<defect_type>/<stem>_mask.png"
    ),
    "mtd": (
        "MTD layout: ROOT/MT_Free/Imgs/*.jpg, ROOT/MT_<Type>/Imgs/*.jpg with a <stem>.png mask beside "
        f"each image, ROOT/{MTD_SPLIT_FILE}"
    ),
}
_LAYOUT_NAMES = {"mvtec": "an MVTec-style", "mtd": "an MTD"}


class _MaskIndex:
    """Masks of one folder by stem: ``<stem>_mask.*`` first, then ``<stem>.*`` (BTAD)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.exists = folder.is_dir()
        self.by_stem: dict[str, list[Path]] = {}
        if self.exists:
            for e in folder_entries(folder):
                if is_image_name(e.name) and not is_folder(e):
                    self.by_stem.setdefault(Path(e.name).stem, []).append(Path(e.path))

    def find(self, image: Path) -> Path:
        stem = image.stem
        for key in (f"{stem}_mask", stem):
            found = self.by_stem.get(key, [])
            if len(found) > 1:
                names = ", ".join(p.name for p in found)
                msg = f"image {image} has several candidate masks in {self.folder}: {names}; keep only one"
                raise DatasetError(msg)
            if found:
                return found[0]
        note = "" if self.exists else f"; the folder {self.folder} does not exist"
        msg = (
            f"defective test image {image} has no mask: expected {self.folder / (stem + '_mask.png')} "
            f"(or {stem}.png, the BTAD naming){note}"
        )
        raise DatasetError(msg)


# ----------------------------------------------------------------------------- MVTec-style


def _missing_mvtec(root: Path) -> list[str]:
    missing = []
    for top in ("train", "test"):
        if not (root / top).is_dir():
            missing.append(f"{top}/")
        elif not (root / top / "good").is_dir():
            missing.append(f"{top}/good/")
    return missing


def _class_images(class_dir: Path) -> tuple[list[Path], Path | None]:
    """Images of one class folder and, for the native MVTec 3D-AD layout, its ``gt/`` folder."""
    if (class_dir / "rgb").is_dir():
        stray = list_images(class_dir, allowed_subdirs=("rgb", "xyz", "gt"))
        if stray:
            msg = f"{class_dir} has an rgb/ sub-folder (MVTec 3D-AD layout) and also images directly in it ({stray[0].name}); use one layout"
            raise DatasetError(msg)
        images = list_images(class_dir / "rgb")
        require_images(class_dir / "rgb", images)
        return images, class_dir / "gt"
    images = list_images(class_dir)
    require_images(class_dir, images)
    return images, None


def _list_mvtec(root: Path) -> tuple[list[Sample], list[Sample]]:
    for e in folder_entries(root / "train"):
        if is_folder(e) and e.name != "good":
            msg = f"unexpected folder {e.path}: train/ may only hold good/ (training uses normal images only); move defective images to test/<defect_type>/"
            raise DatasetError(msg)
        if not is_folder(e) and is_image_name(e.name):
            msg = f"image {e.path} lies directly in train/: move it into train/good/"
            raise DatasetError(msg)
    train_images, _ = _class_images(root / "train" / "good")
    train = [Sample(p, 0, "good", None) for p in train_images]

    test: list[Sample] = []
    for e in folder_entries(root / "test"):
        if not is_folder(e):
            if is_image_name(e.name):
                msg = f"image {e.path} lies directly in test/: move it into test/good/ or test/<defect_type>/"
                raise DatasetError(msg)
            continue
        defect_type = e.name
        images, gt_3d = _class_images(Path(e.path))
        if defect_type == "good":
            test.extend(Sample(p, 0, "good", None) for p in images)
            continue
        index = _MaskIndex(gt_3d if gt_3d is not None else root / "ground_truth" / defect_type)
        test.extend(Sample(p, 1, defect_type, index.find(p)) for p in images)
    if not any(s.label == 1 for s in test):
        msg = f"{root / 'test'} has no defect folders: expected test/<defect_type>/ folders beside test/good/"
        raise DatasetError(msg)
    return train, test


# ----------------------------------------------------------------------------- public API


def _collection_hint(root: Path) -> str:
    cats = [e.name for e in folder_entries(root) if is_folder(e) and not _missing_mvtec(Path(e.path))]
    if not cats:
        return ""
    shown = ", ".join(cats[:5]) + (", ..." if len(cats) > 5 else "")
    return f" {root} looks like a collection of {len(cats)} MVTec-style categories ({shown}): point at one category folder, e.g. {root / cats[0]}."


def _layout_error(root: Path, fmt: str, missing: list[str]) -> DatasetError:
    other = "mtd" if fmt == "mvtec" else "mvtec"
    hint = ""
    if not (missing_mtd(root) if other == "mtd" else _missing_mvtec(root)):
        hint = f" It looks like {_LAYOUT_NAMES[other]} folder: use format='{other}' or format='auto'."
    msg = (
        f"{root} is not {_LAYOUT_NAMES[fmt]} folder: missing {', '.join(missing)}. "
        f"Expected the {_LAYOUTS[fmt]}.{hint}{_collection_hint(root)}"
    )
    return DatasetError(msg)


def detect_format(root: str | os.PathLike[str]) -> str:
    """Tell which supported layout ``root`` has.

    Args:
        root: dataset folder.

    Returns:
        ``"mvtec"`` or ``"mtd"``.

    Raises:
        DatasetError: ``root`` is missing or not a folder, or matches neither layout (the message lists
            both expected layouts and what each is missing) or both.
    """
    path = check_root(root)
    missing = {fmt: (_missing_mvtec(path) if fmt == "mvtec" else missing_mtd(path)) for fmt in FORMATS}
    matches = [fmt for fmt in FORMATS if not missing[fmt]]
    if len(matches) == 1:
        return matches[0]
    if matches:
        msg = f"{path} matches both the MVTec-style and the MTD layout: pass format='mvtec' or format='mtd'"
        raise DatasetError(msg)
    lines = [f"  - {_LAYOUTS[fmt]} (missing: {', '.join(missing[fmt])})" for fmt in FORMATS]
    msg = f"{path} matches no supported dataset layout; expected one of:\n" + "\n".join(lines) + _collection_hint(path)
    raise DatasetError(msg)


def load_dataset(root: str | os.PathLike[str], format: str = "auto") -> Dataset:  # noqa: A002
    """List a dataset's files (fast: only the first training image is decoded, to detect its mode).

    Args:
        root: dataset folder (one MVTec category such as ``.../mvtec/tile``, or the MTD folder).
        format: ``"auto"`` (detect), ``"mvtec"`` or ``"mtd"``.

    Returns:
        The listed :class:`Dataset`. Call ``validate_dataset`` before a long training run.

    Raises:
        ConfigError: ``format`` is not one of ``"auto"``, ``"mvtec"``, ``"mtd"``.
        DatasetError: missing root, wrong layout, empty class folder, missing mask, bad training list,
            or an unreadable/unsupported first training image.
    """
    allowed = ("auto", *FORMATS)
    fmt = format.strip().lower() if isinstance(format, str) else format
    if fmt not in allowed:
        msg = f"dataset format must be one of {allowed}, got {format!r}"
        raise ConfigError(msg)
    path = check_root(root)
    if fmt == "auto":
        fmt = detect_format(path)
    missing = _missing_mvtec(path) if fmt == "mvtec" else missing_mtd(path)
    if missing:
        raise _layout_error(path, fmt, missing)
    train, test = _list_mvtec(path) if fmt == "mvtec" else list_mtd(path)
    channels = probe_mode(train[0].image_path)
    return Dataset(name=path.name, root=path, format=fmt, channels=channels, train=tuple(train), test=tuple(test))
