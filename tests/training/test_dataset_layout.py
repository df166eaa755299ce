"""Listing MVTec-style and MTD data sets and their layout errors."""

from __future__ import annotations

from collections import Counter
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
from dataset_builders import H, W, make_mtd, make_mvtec, write_image, write_mask

from protoinspect.sdk.errors import ConfigError, DatasetError
from protoinspect.training.datasets import (
    Dataset,
    Sample,
    detect_format,
    load_dataset,
    read_dataset_image,
    summarize,
    validate_dataset,
)


# ----------------------------------------------------------------------------- loading


def test_mvtec_loads_counts_labels_masks(mvtec: Path) -> None:
    (mvtec / "train" / "good" / "notes.txt").write_text("ignored")
    (mvtec / "test" / "crack" / ".DS_Store").write_bytes(b"\x00\x01")
    (mvtec / "test" / "crack" / "._000.png").write_bytes(b"apple double")  # hidden: ignored
    (mvtec / "test" / "readme.md").write_text("ignored")
    ds = load_dataset(mvtec)
    assert (ds.name, ds.format, ds.channels, ds.root) == ("tile", "mvtec", "rgb", mvtec.resolve())
    assert len(ds.train) == 3 and all(s == Sample(s.image_path, 0, "good", None) for s in ds.train)
    assert [s.image_path.name for s in ds.train] == ["000.png", "001.png", "002.png"]
    assert Counter(s.defect_type for s in ds.test) == {"good": 2, "crack": 2, "glue": 1}
    assert ds.defect_types == ("crack", "glue")
    for s in ds.test:
        if s.defect_type == "good":
            assert s.label == 0 and s.mask_path is None
        else:
            assert s.label == 1
            assert s.mask_path == mvtec.resolve() / "ground_truth" / s.defect_type / f"{s.image_path.stem}_mask.png"
    keys = [(s.defect_type, s.image_path.name) for s in ds.test]
    assert keys == sorted(keys)
    assert load_dataset(mvtec) == ds  # deterministic
    validate_dataset(ds)


def test_gray_mvtec_and_mixed_extensions(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path / "gray", "gray", n_train=0, defects={"hole": 0})
    write_image(root / "train" / "good" / "a.PNG", "gray")
    write_image(root / "train" / "good" / "b.JPG", "gray")
    write_image(root / "train" / "good" / "c.bmp", "gray")
    write_image(root / "train" / "good" / "d.tiff", "gray")
    write_image(root / "train" / "good" / "e.jpeg", "gray")
    write_image(root / "test" / "hole" / "x.tif", "gray")
    write_mask(root / "ground_truth" / "hole" / "x_mask.PNG")
    ds = load_dataset(root)
    assert ds.channels == "gray"
    assert [s.image_path.name for s in ds.train] == ["a.PNG", "b.JPG", "c.bmp", "d.tiff", "e.jpeg"]
    assert ds.test[-1].mask_path is not None and ds.test[-1].mask_path.name == "x_mask.PNG"
    validate_dataset(ds)
    assert read_dataset_image(ds.train[0].image_path, "gray").shape == (H, W)


def test_btad_mask_fallback_and_mask_preference(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path / "btad01", mask_suffix="", defects={"ko": 2})
    ds = load_dataset(root)
    assert [s.mask_path.name for s in ds.test if s.mask_path] == ["000.png", "001.png"]
    write_mask(root / "ground_truth" / "ko" / "000_mask.png")  # <stem>_mask wins over <stem>
    ds = load_dataset(root)
    assert [s.mask_path.name for s in ds.test if s.mask_path] == ["000_mask.png", "001.png"]


def test_mvtec3d_native_layout(tmp_path: Path) -> None:
    root = tmp_path / "bagel"
    write_image(root / "train" / "good" / "rgb" / "000.png")
    (root / "train" / "good" / "xyz").mkdir()
    write_image(root / "test" / "good" / "rgb" / "000.png")
    write_image(root / "test" / "hole" / "rgb" / "000.png")
    write_mask(root / "test" / "hole" / "gt" / "000.png")
    ds = load_dataset(root)
    assert (len(ds.train), len(ds.test)) == (1, 2)
    assert ds.test[1].mask_path == root.resolve() / "test" / "hole" / "gt" / "000.png"
    validate_dataset(ds)


def test_mtd_loads_counts_labels_masks(mtd: Path) -> None:
    ds = load_dataset(mtd)
    assert (ds.name, ds.format, ds.channels) == ("mtd", "mtd", "gray")
    assert [s.image_path.name for s in ds.train] == ["exp1_num_0.jpg", "exp1_num_1.jpg", "exp1_num_2.jpg"]
    assert all(s.label == 0 and s.mask_path is None for s in ds.train)
    good = [s for s in ds.test if s.label == 0]
    assert [s.image_path.name for s in good] == ["exp1_num_3.jpg", "exp1_num_4.jpg"]
    assert all(s.defect_type == "good" and s.mask_path is None for s in good)
    assert Counter(s.defect_type for s in ds.test if s.label == 1) == {"blowhole": 2, "crack": 1}
    for s in ds.test:
        if s.label == 1:
            assert s.mask_path == s.image_path.with_suffix(".png")
    assert ds.defect_types == ("blowhole", "crack")
    validate_dataset(ds)
    assert summarize(ds) == {
        "name": "mtd",
        "root": str(mtd.resolve()),
        "format": "mtd",
        "channels": "gray",
        "train": {"good": 3},
        "test": {"blowhole": 2, "crack": 1, "good": 2},
        "n_train": 3,
        "n_test": 5,
        "n_test_good": 2,
        "n_test_defective": 3,
        "defect_types": ["blowhole", "crack"],
    }


def test_detect_format_and_override(mvtec: Path, mtd: Path) -> None:
    assert detect_format(mvtec) == "mvtec"
    assert detect_format(str(mtd)) == "mtd"
    assert load_dataset(mvtec, "mvtec").format == "mvtec"
    assert load_dataset(mtd, format="MTD").format == "mtd"
    with pytest.raises(DatasetError, match=r"not an MTD folder: missing MT_Free/Imgs/.*format='mvtec'"):
        load_dataset(mvtec, "mtd")
    with pytest.raises(DatasetError, match=r"not an MVTec-style folder: missing train/, test/.*format='mtd'"):
        load_dataset(mtd, "mvtec")
    with pytest.raises(ConfigError, match="'yolo'"):
        load_dataset(mvtec, "yolo")


def test_dataset_is_frozen_and_sample_fields(mvtec: Path) -> None:
    ds = load_dataset(mvtec)
    assert isinstance(ds, Dataset)
    with pytest.raises(FrozenInstanceError):
        ds.name = "x"  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        ds.train[0].label = 1  # type: ignore[misc]


def test_load_only_lists_files(mvtec: Path) -> None:
    bad = mvtec / "test" / "crack" / "001.png"
    bad.write_bytes(b"not an image at all")
    ds = load_dataset(mvtec)  # only the first training image is decoded
    with pytest.raises(DatasetError, match=r"001\.png cannot be decoded"):
        validate_dataset(ds)


# ----------------------------------------------------------------------------- layout errors


def test_root_missing_or_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nope does not exist"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"f\.txt is not a folder"):
        detect_format(tmp_path / "f.txt")


def test_wrong_layout_names_both_layouts(tmp_path: Path) -> None:
    (tmp_path / "train" / "good").mkdir(parents=True)
    with pytest.raises(DatasetError) as exc:
        load_dataset(tmp_path)
    msg = str(exc.value)
    assert "MVTec-style layout" in msg and "MTD layout" in msg
    assert "(missing: test/)" in msg and "(missing: MT_Free/Imgs/, train_normal_filenames.txt)" in msg


def test_collection_of_categories_hint(tmp_path: Path) -> None:
    make_mvtec(tmp_path / "bottle")
    make_mvtec(tmp_path / "cable")
    with pytest.raises(DatasetError, match=r"collection of 2 MVTec-style categories \(bottle, cable\)"):
        load_dataset(tmp_path)


def test_empty_train_good(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path / "t", n_train=0)
    (root / "train" / "good").mkdir(parents=True)
    (root / "train" / "good" / "list.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"class folder .*train/good is empty.*list\.txt"):
        load_dataset(root)


def test_empty_defect_folder(mvtec: Path) -> None:
    (mvtec / "test" / "scratch").mkdir()
    with pytest.raises(DatasetError, match=r"class folder .*test/scratch is empty"):
        load_dataset(mvtec)


def test_no_defect_folders(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path / "t", defects={})
    with pytest.raises(DatasetError, match=r"test has no defect folders"):
        load_dataset(root)


def test_missing_mask_names_image_and_expected_path(mvtec: Path) -> None:
    (mvtec / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(DatasetError) as exc:
        load_dataset(mvtec)
    msg = str(exc.value)
    assert str(mvtec.resolve() / "test" / "crack" / "001.png") in msg
    assert str(mvtec.resolve() / "ground_truth" / "crack" / "001_mask.png") in msg


def test_missing_ground_truth_folder(mvtec: Path) -> None:
    write_image(mvtec / "test" / "stain" / "000.png")
    with pytest.raises(DatasetError, match=r"stain/000\.png has no mask.*ground_truth/stain does not exist"):
        load_dataset(mvtec)


def test_ambiguous_masks(mvtec: Path) -> None:
    write_mask(mvtec / "ground_truth" / "glue" / "000_mask.bmp")
    with pytest.raises(DatasetError, match=r"several candidate masks.*000_mask\.bmp, 000_mask\.png"):
        load_dataset(mvtec)


def test_stray_images_and_subfolders(tmp_path: Path) -> None:
    root = make_mvtec(tmp_path / "a")
    write_image(root / "test" / "loose.png")
    with pytest.raises(DatasetError, match=r"loose\.png lies directly in test/"):
        load_dataset(root)
    root = make_mvtec(tmp_path / "b")
    write_image(root / "train" / "crack" / "000.png")
    with pytest.raises(DatasetError, match=r"train/crack: train/ may only hold good/"):
        load_dataset(root)
    root = make_mvtec(tmp_path / "c")
    write_image(root / "test" / "good" / "more" / "000.png")
    with pytest.raises(DatasetError, match=r"unexpected sub-folder .*test/good/more"):
        load_dataset(root)


def test_broken_symlink_is_an_error(mvtec: Path) -> None:
    (mvtec / "test" / "good" / "zzz.png").symlink_to(mvtec / "missing.png")
    with pytest.raises(DatasetError, match=r"zzz\.png is not a regular file"):
        load_dataset(mvtec)


# ----------------------------------------------------------------------------- MTD errors


def test_mtd_listed_file_missing(mtd: Path) -> None:
    (mtd / "train_normal_filenames.txt").write_text("exp1_num_0.jpg\n\nghost.jpg\n")
    with pytest.raises(DatasetError, match=r"line 3 lists 'ghost\.jpg' but .*MT_Free/Imgs/ghost\.jpg does not exist"):
        load_dataset(mtd)


def test_mtd_listed_duplicate_and_mask(mtd: Path) -> None:
    (mtd / "train_normal_filenames.txt").write_text("exp1_num_0.jpg\r\nexp1_num_0.jpg\r\n")
    with pytest.raises(DatasetError, match=r"line 2 repeats 'exp1_num_0\.jpg' \(already on line 1\)"):
        load_dataset(mtd)
    (mtd / "train_normal_filenames.txt").write_text("exp1_num_0.png\n")
    with pytest.raises(DatasetError, match=r"exp1_num_0\.png is not a \.jpg image"):
        load_dataset(mtd)


def test_mtd_split_file_missing_or_empty(mtd: Path) -> None:
    (mtd / "train_normal_filenames.txt").write_text("\n\n")
    with pytest.raises(DatasetError, match=r"train_normal_filenames\.txt lists no files"):
        load_dataset(mtd)
    (mtd / "train_normal_filenames.txt").unlink()
    with pytest.raises(DatasetError, match=r"missing: train_normal_filenames\.txt"):
        detect_format(mtd)
    with pytest.raises(DatasetError, match=r"not an MTD folder: missing train_normal_filenames\.txt"):
        load_dataset(mtd, "mtd")


def test_mtd_defect_without_mask(mtd: Path) -> None:
    (mtd / "MT_Crack" / "Imgs" / "exp2_num_0.png").unlink()
    with pytest.raises(DatasetError) as exc:
        load_dataset(mtd)
    assert "MT_Crack/Imgs/exp2_num_0.jpg has no mask" in str(exc.value)
    assert str(mtd.resolve() / "MT_Crack" / "Imgs" / "exp2_num_0.png") in str(exc.value)


def test_mtd_empty_defect_folder_and_missing_imgs(tmp_path: Path) -> None:
    root = make_mtd(tmp_path / "a")
    (root / "MT_Fray" / "Imgs").mkdir(parents=True)
    write_mask(root / "MT_Fray" / "Imgs" / "orphan.png")
    with pytest.raises(DatasetError, match=r"class folder .*MT_Fray/Imgs is empty"):
        load_dataset(root)
    root = make_mtd(tmp_path / "b")
    (root / "MT_Break").mkdir()
    with pytest.raises(DatasetError, match=r"MT_Break has no Imgs/ sub-folder"):
        load_dataset(root)


