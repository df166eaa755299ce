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
from dataclasses import dataclass
from pathlib import Path

from protoinspect.sdk.errors import ConfigError, DatasetError
from protoinspect.training.image_io import IMAGE_EXTENSIONS, is_image_name, probe_mode

FORMATS: tuple[str, ...] = ("mvtec", "mtd")
MTD_SPLIT_FILE = "train_normal_filenames.txt"
MTD_FREE = "MT_Free"

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


# ----------------------------------------------------------------------------- folder helpers


def _check_root(root: str | os.PathLike[str]) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        msg = f"dataset root {path} does not exist"
        raise DatasetError(msg)
    if not path.is_dir():
        msg = f"dataset root {path} is not a folder"
        raise DatasetError(msg)
    return path.resolve()


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    """Non-hidden entries of ``folder`` sorted by name."""
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        msg = f"folder {folder} cannot be listed: {exc.strerror or exc}"
        raise DatasetError(msg) from None


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _list_images(folder: Path, allowed_subdirs: tuple[str, ...] = ()) -> list[Path]:
    """Image files directly inside ``folder`` (sorted); a sub-folder not in ``allowed_subdirs`` is an error."""
    images = []
    for e in _entries(folder):
        if _is_dir(e):
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


def _require_nonempty(folder: Path, images: list[Path], what: str = "image files") -> None:
    if images:
        return
    others = [e.name for e in _entries(folder)]
    found = f"; it holds only {len(others)} non-image entries ({', '.join(others[:5])})" if others else ""
    exts = " ".join(sorted(IMAGE_EXTENSIONS))
    msg = f"class folder {folder} is empty: no {what} ({exts}) found{found}"
    raise DatasetError(msg)


class _MaskIndex:
    """Masks of one folder by stem: ``<stem>_mask.*`` first, then ``<stem>.*`` (BTAD)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.exists = folder.is_dir()
        self.by_stem: dict[str, list[Path]] = {}
        if self.exists:
            for e in _entries(folder):
                if is_image_name(e.name) and not _is_dir(e):
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
        stray = _list_images(class_dir, allowed_subdirs=("rgb", "xyz", "gt"))
        if stray:
            msg = f"{class_dir} has an rgb/ sub-folder (MVTec 3D-AD layout) and also images directly in it ({stray[0].name}); use one layout"
            raise DatasetError(msg)
        images = _list_images(class_dir / "rgb")
        _require_nonempty(class_dir / "rgb", images)
        return images, class_dir / "gt"
    images = _list_images(class_dir)
    _require_nonempty(class_dir, images)
    return images, None


def _list_mvtec(root: Path) -> tuple[list[Sample], list[Sample]]:
    missing = _missing_mvtec(root)
    if missing:
        raise _layout_error(root, "mvtec", missing)
    for e in _entries(root / "train"):
        if _is_dir(e) and e.name != "good":
            msg = f"unexpected folder {e.path}: train/ may only hold good/ (training uses normal images only); move defective images to test/<defect_type>/"
            raise DatasetError(msg)
        if not _is_dir(e) and is_image_name(e.name):
            msg = f"image {e.path} lies directly in train/: move it into train/good/"
            raise DatasetError(msg)
    train_images, _ = _class_images(root / "train" / "good")
    train = [Sample(p, 0, "good", None) for p in train_images]

    test: list[Sample] = []
    for e in _entries(root / "test"):
        if not _is_dir(e):
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


# ----------------------------------------------------------------------------- MTD


def _missing_mtd(root: Path) -> list[str]:
    missing = [] if (root / MTD_FREE / "Imgs").is_dir() else [f"{MTD_FREE}/Imgs/"]
    if not (root / MTD_SPLIT_FILE).is_file():
        missing.append(MTD_SPLIT_FILE)
    return missing


def _mtd_images(imgs_dir: Path) -> tuple[list[Path], dict[str, Path]]:
    """(images, masks by stem) of an MTD ``Imgs/`` folder: every ``.png`` is a mask, the rest images."""
    files = _list_images(imgs_dir)
    images = [p for p in files if p.suffix.lower() != ".png"]
    masks = {p.stem: p for p in files if p.suffix.lower() == ".png"}
    _require_nonempty(imgs_dir, images, "images (.jpg; .png files are masks)")
    return images, masks


def _read_split(path: Path) -> list[tuple[int, str]]:
    """(line number, file name) of the MTD training list; blank lines and ``#`` comments skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"training list {path} cannot be read: {exc}"
        raise DatasetError(msg) from None
    entries = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if "/" in name or "\\" in name:
            msg = f"{path} line {lineno}: {name!r} must be a bare file name of an image in {MTD_FREE}/Imgs/"
            raise DatasetError(msg)
        entries.append((lineno, name))
    if not entries:
        msg = f"training list {path} lists no files (expected one {MTD_FREE}/Imgs/ file name per line)"
        raise DatasetError(msg)
    return entries


def _list_mtd(root: Path) -> tuple[list[Sample], list[Sample]]:
    missing = _missing_mtd(root)
    if missing:
        raise _layout_error(root, "mtd", missing)
    free_dir = root / MTD_FREE / "Imgs"
    free_images, _ = _mtd_images(free_dir)
    by_name = {p.name: p for p in free_images}
    split_file = root / MTD_SPLIT_FILE
    listed: dict[str, int] = {}
    for lineno, name in _read_split(split_file):
        if name in listed:
            msg = f"{split_file} line {lineno} repeats {name!r} (already on line {listed[name]})"
            raise DatasetError(msg)
        if name not in by_name:
            why = "is not a .jpg image of the folder" if (free_dir / name).exists() else "does not exist"
            msg = f"{split_file} line {lineno} lists {name!r} but {free_dir / name} {why}"
            raise DatasetError(msg)
        listed[name] = lineno
    train = [Sample(p, 0, "good", None) for p in free_images if p.name in listed]
    test = [Sample(p, 0, "good", None) for p in free_images if p.name not in listed]
    if not test:
        msg = f"every image of {free_dir} is listed in {split_file}: no normal test images are left"
        raise DatasetError(msg)

    seen: dict[str, Path] = {}
    for e in _entries(root):
        if not _is_dir(e) or not e.name.startswith("MT_") or e.name == MTD_FREE:
            continue
        folder = Path(e.path)
        defect_type = e.name[3:].lower()
        if not defect_type or defect_type == "good" or defect_type in seen:
            clash = f" (clashes with {seen[defect_type]})" if defect_type in seen else ""
            msg = f"defect folder {folder} gives an invalid defect type {defect_type!r}{clash}; rename it MT_<Type>"
            raise DatasetError(msg)
        seen[defect_type] = folder
        if not (folder / "Imgs").is_dir():
            msg = f"defect folder {folder} has no Imgs/ sub-folder (expected {folder}/Imgs/<stem>.jpg with <stem>.png masks)"
            raise DatasetError(msg)
        images, masks = _mtd_images(folder / "Imgs")
        for p in images:
            if p.stem not in masks:
                msg = f"defective image {p} has no mask: expected {p.with_suffix('.png')}"
                raise DatasetError(msg)
            test.append(Sample(p, 1, defect_type, masks[p.stem]))
    if not seen:
        msg = f"{root} has no defect folders: expected MT_<Type>/Imgs/ folders beside {MTD_FREE}/"
        raise DatasetError(msg)
    test.sort(key=lambda s: (s.defect_type, s.image_path.name))
    return train, test


# ----------------------------------------------------------------------------- public API


def _collection_hint(root: Path) -> str:
    cats = [e.name for e in _entries(root) if _is_dir(e) and not _missing_mvtec(Path(e.path))]
    if not cats:
        return ""
    shown = ", ".join(cats[:5]) + (", ..." if len(cats) > 5 else "")
    return f" {root} looks like a collection of {len(cats)} MVTec-style categories ({shown}): point at one category folder, e.g. {root / cats[0]}."


def _layout_error(root: Path, fmt: str, missing: list[str]) -> DatasetError:
    other = "mtd" if fmt == "mvtec" else "mvtec"
    hint = ""
    if not (_missing_mtd(root) if other == "mtd" else _missing_mvtec(root)):
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
    path = _check_root(root)
    missing = {fmt: (_missing_mvtec(path) if fmt == "mvtec" else _missing_mtd(path)) for fmt in FORMATS}
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
    path = _check_root(root)
    if fmt == "auto":
        fmt = detect_format(path)
    train, test = _list_mvtec(path) if fmt == "mvtec" else _list_mtd(path)
    channels = probe_mode(train[0].image_path)
    return Dataset(name=path.name, root=path, format=fmt, channels=channels, train=tuple(train), test=tuple(test))
