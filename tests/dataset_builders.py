"""Tiny on-disk data sets for the data set loader tests: image and mask writers, MVTec-style and MTD
layouts, and the ``mvtec`` / ``mtd`` fixtures (registered in tests/conftest.py's ``pytest_plugins``)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

#: the height and width of every image and mask the builders write
H, W = 12, 16


def write_image(path: Path, channels: str = "rgb", shape: tuple[int, int] = (H, W), value: int = 100) -> Path:
    """Write a flat image at ``path`` (parents created): ``"rgb"`` with distinct B, G, R values
    (``value``, ``value // 2``, ``value // 3``), anything else one grey channel of ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if channels == "rgb":
        arr = np.zeros((*shape, 3), np.uint8)
        arr[..., 0], arr[..., 1], arr[..., 2] = value, value // 2, value // 3  # B, G, R distinct
    else:
        arr = np.full(shape, value, np.uint8)
    assert cv2.imwrite(str(path), arr)
    return path


def write_mask(path: Path, shape: tuple[int, int] = (H, W)) -> Path:
    """Write a binary mask at ``path`` (parents created) with one 3x4 defect rectangle at (2, 3)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros(shape, np.uint8)
    m[2:5, 3:7] = 255
    assert cv2.imwrite(str(path), m)
    return path


def make_mvtec(
    root: Path,
    channels: str = "rgb",
    n_train: int = 3,
    n_good: int = 2,
    defects: dict[str, int] | None = None,
    mask_suffix: str = "_mask",
) -> Path:
    """ROOT/train/good, ROOT/test/{good,<type>}, ROOT/ground_truth/<type>/<stem><mask_suffix>.png"""
    defects = {"crack": 2, "glue": 1} if defects is None else defects
    for i in range(n_train):
        write_image(root / "train" / "good" / f"{i:03d}.png", channels)
    for i in range(n_good):
        write_image(root / "test" / "good" / f"{i:03d}.png", channels)
    for dtype, n in defects.items():
        for i in range(n):
            write_image(root / "test" / dtype / f"{i:03d}.png", channels)
            write_mask(root / "ground_truth" / dtype / f"{i:03d}{mask_suffix}.png")
    return root


def make_mtd(root: Path, n_free: int = 5, n_train: int = 3, defects: dict[str, int] | None = None) -> Path:
    """ROOT/MT_Free/Imgs/*.jpg(+png), ROOT/MT_<Type>/Imgs/*.jpg + .png, ROOT/train_normal_filenames.txt"""
    defects = {"Blowhole": 2, "Crack": 1} if defects is None else defects
    names = [f"exp1_num_{i}.jpg" for i in range(n_free)]
    for name in names:
        write_image(root / "MT_Free" / "Imgs" / name, "gray")
        write_mask(root / "MT_Free" / "Imgs" / name.replace(".jpg", ".png"))
    for dtype, n in defects.items():
        for i in range(n):
            write_image(root / f"MT_{dtype}" / "Imgs" / f"exp2_num_{i}.jpg", "gray")
            write_mask(root / f"MT_{dtype}" / "Imgs" / f"exp2_num_{i}.png")
    # listed in reverse order: the loader sorts
    (root / "train_normal_filenames.txt").write_text("\n".join(reversed(names[:n_train])) + "\n")
    (root / "SOURCE.md").write_text("not part of the dataset\n")
    return root


@pytest.fixture
def mvtec(tmp_path: Path) -> Path:
    """A fresh MVTec-style product ``tile`` (3 train, 2 good, crack x2 and glue x1 with masks)."""
    return make_mvtec(tmp_path / "tile")


@pytest.fixture
def mtd(tmp_path: Path) -> Path:
    """A fresh MTD-layout data set (5 free, 3 listed for training, Blowhole x2 and Crack x1)."""
    return make_mtd(tmp_path / "mtd")
