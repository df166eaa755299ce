"""Listing of the MTD (Magnetic Tile Defect) layout; see :mod:`protoinspect.training.dataset_layout`."""

from __future__ import annotations

from pathlib import Path

from protoinspect.sdk.errors import DatasetError
from protoinspect.training.dataset_files import Sample, folder_entries, is_folder, list_images, require_images

MTD_SPLIT_FILE = "train_normal_filenames.txt"
MTD_FREE = "MT_Free"


def missing_mtd(root: Path) -> list[str]:
    missing = [] if (root / MTD_FREE / "Imgs").is_dir() else [f"{MTD_FREE}/Imgs/"]
    if not (root / MTD_SPLIT_FILE).is_file():
        missing.append(MTD_SPLIT_FILE)
    return missing


def mtd_images(imgs_dir: Path) -> tuple[list[Path], dict[str, Path]]:
    """(images, masks by stem) of an MTD ``Imgs/`` folder: every ``.png`` is a mask, the rest images."""
    files = list_images(imgs_dir)
    images = [p for p in files if p.suffix.lower() != ".png"]
    masks = {p.stem: p for p in files if p.suffix.lower() == ".png"}
    require_images(imgs_dir, images, "images (.jpg; .png files are masks)")
    return images, masks


def read_split(path: Path) -> list[tuple[int, str]]:
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


def list_mtd(root: Path) -> tuple[list[Sample], list[Sample]]:
    free_dir = root / MTD_FREE / "Imgs"
    free_images, _ = mtd_images(free_dir)
    by_name = {p.name: p for p in free_images}
    split_file = root / MTD_SPLIT_FILE
    listed: dict[str, int] = {}
    for lineno, name in read_split(split_file):
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
    for e in folder_entries(root):
        if not is_folder(e) or not e.name.startswith("MT_") or e.name == MTD_FREE:
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
        images, masks = mtd_images(folder / "Imgs")
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
