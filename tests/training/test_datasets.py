"""Reading and validating data set files (corrupt, wrong mode, masks) and the real MTD data."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from dataset_builders import H, W, write_image, write_mask

from protoinspect.sdk.errors import ConfigError, DatasetError
from protoinspect.training.datasets import (
    Dataset,
    Sample,
    load_dataset,
    read_dataset_image,
    read_mask,
    summarize,
    validate_dataset,
)
from protoinspect.training.image_io import image_mode

MTD_REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mtd"


# ----------------------------------------------------------------------------- file errors


def test_corrupt_and_empty_images(mvtec: Path) -> None:
    target = mvtec / "test" / "glue" / "000.png"
    target.write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    ds = load_dataset(mvtec)
    with pytest.raises(DatasetError, match=rf"image {target.resolve()} cannot be decoded"):
        validate_dataset(ds)
    target.write_bytes(b"")
    with pytest.raises(DatasetError, match=rf"image {target.resolve()} is empty \(0 bytes\)"):
        validate_dataset(ds)
    with pytest.raises(DatasetError, match=r"is empty \(0 bytes\)"):
        validate_dataset(ds, check_pixels=False)


def test_corrupt_first_training_image_fails_load(mvtec: Path) -> None:
    (mvtec / "train" / "good" / "000.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"train/good/000\.png is empty"):
        load_dataset(mvtec)


def test_header_only_check(mvtec: Path) -> None:
    write_image(mvtec / "test" / "good" / "001.png", shape=(H + 1, W))  # size is fine for a good image
    (mvtec / "test" / "good" / "002.jpg").write_text("<html>not an image</html>")
    ds = load_dataset(mvtec)
    with pytest.raises(DatasetError, match=r"002\.jpg is not a PNG/JPEG/BMP/TIFF file"):
        validate_dataset(ds, check_pixels=False)


def test_gray_image_in_rgb_dataset(mvtec: Path) -> None:
    bad = write_image(mvtec / "test" / "good" / "001.png", "gray")
    ds = load_dataset(mvtec)
    with pytest.raises(DatasetError, match=rf"image {bad.resolve()} is grayscale \(1 channel\) but the dataset is RGB"):
        validate_dataset(ds)


def test_rgb_image_in_gray_dataset(mtd: Path) -> None:
    bad = write_image(mtd / "MT_Crack" / "Imgs" / "exp2_num_0.jpg", "rgb")
    ds = load_dataset(mtd)
    with pytest.raises(DatasetError, match=rf"image {bad.resolve()} is RGB \(3 channels\) but the dataset is grayscale"):
        validate_dataset(ds)


def test_rgba_and_16bit_images(tmp_path: Path) -> None:
    rgba = tmp_path / "rgba.png"
    cv2.imwrite(str(rgba), np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(DatasetError, match=r"rgba\.png has 4 channels.*convert it to 8-bit RGB"):
        read_dataset_image(rgba, "rgb")
    deep = tmp_path / "deep.png"
    cv2.imwrite(str(deep), np.zeros((4, 4), np.uint16))
    with pytest.raises(DatasetError, match=r"deep\.png is a 16-bit uint16 image.*convert it to 8-bit RGB"):
        read_dataset_image(deep, "gray")
    with pytest.raises(DatasetError, match=r"x\.tif has 2 channels \(gray\+alpha\).*8-bit RGB"):
        image_mode(np.zeros((4, 4, 2), np.uint8), "x.tif")


def test_gray_alpha_png(tmp_path: Path) -> None:
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes([10, 255] * 4) for _ in range(3))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 3, 8, 4, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path = tmp_path / "ga.png"
    path.write_bytes(png)
    with pytest.raises(DatasetError, match=r"ga\.png has \d channels.*convert it to 8-bit RGB"):
        read_dataset_image(path, "gray")


def test_rgba_first_training_image_fails_load(mvtec: Path) -> None:
    cv2.imwrite(str(mvtec / "train" / "good" / "000.png"), np.zeros((H, W, 4), np.uint8))
    with pytest.raises(DatasetError, match=r"000\.png has 4 channels"):
        load_dataset(mvtec)


def test_mask_size_mismatch_names_both(mvtec: Path) -> None:
    mask = write_mask(mvtec / "ground_truth" / "crack" / "001_mask.png", shape=(H, W + 4))
    ds = load_dataset(mvtec)
    with pytest.raises(DatasetError) as exc:
        validate_dataset(ds)
    msg = str(exc.value)
    assert f"mask {mask.resolve()} is {H}x{W + 4} (HxW)" in msg
    assert f"image {(mvtec / 'test' / 'crack' / '001.png').resolve()} is {H}x{W} (HxW)" in msg


def test_mask_channels(tmp_path: Path) -> None:
    equal = tmp_path / "equal.png"
    m = np.zeros((H, W, 3), np.uint8)
    m[1:3, 1:3] = 255
    cv2.imwrite(str(equal), m)
    out = read_mask(equal, (H, W))
    assert out.shape == (H, W) and out.dtype == np.uint8 and out.max() == 255
    m[0, 0] = (0, 0, 255)
    colour = tmp_path / "colour.png"
    cv2.imwrite(str(colour), m)
    with pytest.raises(DatasetError, match=r"mask .*colour\.png is not single-channel \(differing colour channels\)"):
        read_mask(colour, (H, W))
    rgba = tmp_path / "rgba.png"
    cv2.imwrite(str(rgba), np.zeros((H, W, 4), np.uint8))
    with pytest.raises(DatasetError, match=r"rgba\.png is not single-channel \(4 channels\)"):
        read_mask(rgba, (H, W))
    with pytest.raises(DatasetError, match=r"mask .*nope\.png does not exist"):
        read_mask(tmp_path / "nope.png", (H, W))


def test_read_image_rgb_order_and_bad_channels_arg(tmp_path: Path) -> None:
    p = write_image(tmp_path / "c.png", "rgb", value=90)  # stored BGR = (90, 45, 30)
    img = read_dataset_image(p, "rgb")
    assert img.shape == (H, W, 3) and img.dtype == np.uint8 and img.flags.c_contiguous
    assert tuple(img[0, 0]) == (30, 45, 90)
    with pytest.raises(ConfigError, match="channels"):
        read_dataset_image(p, "bgr")


def test_validate_reports_first_problem_in_listing_order(mvtec: Path) -> None:
    (mvtec / "test" / "glue" / "000.png").write_bytes(b"junk")
    (mvtec / "test" / "crack" / "001.png").write_bytes(b"junk")
    ds = load_dataset(mvtec)
    for workers in (1, 4):
        with pytest.raises(DatasetError, match=r"crack/001\.png cannot be decoded"):
            validate_dataset(ds, workers=workers)


def test_validate_structure_of_hand_built_dataset(mvtec: Path) -> None:
    ds = load_dataset(mvtec)
    leaked = Dataset(ds.name, ds.root, ds.format, ds.channels, ds.train, (*ds.test, ds.train[0]))
    with pytest.raises(DatasetError, match=r"in both the train and the test split"):
        validate_dataset(leaked)
    no_mask = Sample(ds.test[-1].image_path, 1, "glue", None)
    bad = Dataset(ds.name, ds.root, ds.format, ds.channels, ds.train, (no_mask,))
    with pytest.raises(DatasetError, match=r"has no mask path"):
        validate_dataset(bad)


# ----------------------------------------------------------------------------- real MTD


@pytest.mark.skipif(not MTD_REAL.is_dir(), reason=f"MTD data not found at {MTD_REAL}")
def test_real_mtd() -> None:
    ds = load_dataset(MTD_REAL)
    assert (ds.format, ds.channels) == ("mtd", "gray")
    s = summarize(ds)
    assert s["n_train"] == 761 and s["n_test_good"] == 191 and s["n_test_defective"] == 392
    assert s["test"] == {"blowhole": 115, "break": 85, "crack": 57, "fray": 32, "good": 191, "uneven": 103}
    assert ds.defect_types == ("blowhole", "break", "crack", "fray", "uneven")
    validate_dataset(ds)
    img = read_dataset_image(ds.test[0].image_path, ds.channels)
    assert img.ndim == 2 and img.dtype == np.uint8
    assert ds.test[0].mask_path is not None
    assert read_mask(ds.test[0].mask_path, img.shape).shape == img.shape
