"""Region descriptors: known shapes, translation invariance, contrast sign, standardisation, errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from protoinspect.sdk.errors import InputError
from protoinspect.sdk.stages.region_descriptors import (
    DESCRIPTOR_NAMES,
    DescriptorStats,
    describe_region,
    describe_regions,
    standardise,
)

N = 128
IDX = {name: i for i, name in enumerate(DESCRIPTOR_NAMES)}


def _disk(cx: int = 64, cy: int = 64, r: int = 12) -> np.ndarray:
    m = np.zeros((N, N), np.uint8)
    cv2.circle(m, (cx, cy), r, 1, -1)
    return m.astype(bool)


def _line() -> np.ndarray:
    m = np.zeros((N, N), np.uint8)
    cv2.line(m, (20, 30), (100, 90), 1, 1)
    return m.astype(bool)


def _texture(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(90, 160, (N, N), dtype=np.uint8)


def test_disk_is_compact_and_line_elongated(rng: np.random.Generator) -> None:
    img = _texture(rng)
    disk, line = describe_region(_disk(), img), describe_region(_line(), img)
    assert disk.shape == (len(DESCRIPTOR_NAMES),) and disk.dtype == np.float32
    assert disk[IDX["elongation"]] < 0.1 and line[IDX["elongation"]] > 0.9
    assert disk[IDX["compactness"]] > 0.8 and line[IDX["compactness"]] < 0.2
    assert line[IDX["extent"]] < 0.2 < line[IDX["rect_fill"]]  # oblique line: poor box fill, good rotated fill
    assert disk[IDX["log_components"]] == 0.0 and disk[IDX["largest_share"]] == 1.0
    assert disk[IDX["border_contact"]] == 0.0
    np.testing.assert_allclose(disk[IDX["log_area_fraction"]], np.log(_disk().sum() / N ** 2), rtol=1e-5)


def test_components_share_and_border_contact() -> None:
    img = np.full((N, N), 100, np.uint8)
    two = _disk(30, 30, 10) | _disk(90, 90, 5)
    v = describe_region(two, img)
    np.testing.assert_allclose(v[IDX["log_components"]], np.log(2), rtol=1e-6)
    assert 0.7 < v[IDX["largest_share"]] < 0.9
    corner = np.zeros((N, N), bool)
    corner[:10, :10] = True  # two of its four sides on the image border
    c = describe_region(corner, img)
    assert 0.4 < c[IDX["border_contact"]] < 0.6 and c[IDX["border_distance"]] < 0.1
    obj = np.zeros((N, N), bool)
    obj[20:108, 20:108] = True
    inner = np.zeros((N, N), bool)
    inner[20:30, 50:60] = True  # touches the object's top edge only
    o = describe_region(inner, img, obj)
    assert 0.1 < o[IDX["border_contact"]] < 0.5
    assert describe_region(inner, img)[IDX["border_contact"]] == 0.0  # no object: interior of the image
    np.testing.assert_allclose(o[IDX["log_area_fraction"]], np.log(100 / obj.sum()), rtol=1e-5)


def test_translation_invariance(rng: np.random.Generator) -> None:
    img = _texture(rng)
    mask = _disk(40, 40, 9) | _disk(60, 45, 4)
    img[mask] = 30
    shift = (int(rng.integers(5, 25)), int(rng.integers(5, 25)))
    a = describe_region(mask, img)
    b = describe_region(np.roll(mask, shift, (0, 1)), np.roll(img, shift, (0, 1)))
    keep = [i for n, i in IDX.items() if n != "border_distance"]
    np.testing.assert_allclose(a[keep], b[keep], atol=1e-5)
    assert a[IDX["border_distance"]] != b[IDX["border_distance"]]


def test_contrast_sign_dark_vs_bright(rng: np.random.Generator) -> None:
    base = rng.integers(110, 130, (N, N, 3), dtype=np.uint8)
    mask = _disk()
    dark, bright = base.copy(), base.copy()
    dark[mask], bright[mask] = 20, 240
    d, b = describe_region(mask, dark), describe_region(mask, bright)
    assert d[IDX["intensity_contrast"]] < -0.5 and b[IDX["intensity_contrast"]] > 0.2
    flat = np.full((N, N), 120, np.uint8)
    scratchy = flat.copy()
    scratchy[mask] = rng.integers(0, 255, int(mask.sum()), dtype=np.uint8)
    assert describe_region(mask, scratchy)[IDX["texture_contrast"]] > 1.0
    assert describe_region(mask, flat)[IDX["texture_contrast"]] == pytest.approx(0.0, abs=0.5)


def test_whole_image_region_has_zero_ring_values() -> None:
    v = describe_region(np.ones((16, 16), bool), np.full((16, 16), 50, np.uint8))
    assert v[IDX["intensity_contrast"]] == v[IDX["texture_contrast"]] == v[IDX["intensity_spread"]] == 0.0
    assert v[IDX["border_contact"]] == 1.0 and v[IDX["log_area_fraction"]] == 0.0


def test_errors() -> None:
    img = np.zeros((N, N), np.uint8)
    with pytest.raises(InputError, match="empty"):
        describe_region(np.zeros((N, N), bool), img)
    with pytest.raises(InputError, match="bool"):
        describe_region(np.ones((N, N), np.uint8), img)
    with pytest.raises(InputError, match="does not match"):
        describe_region(_disk(), np.zeros((N, N + 1), np.uint8))
    with pytest.raises(InputError, match="uint8"):
        describe_region(_disk(), np.zeros((N, N), np.float32))
    with pytest.raises(InputError, match="object_mask"):
        describe_region(_disk(), img, np.ones((N, 4), bool))
    with pytest.raises(InputError, match="region 1"):
        describe_regions([_disk(), np.zeros((N, N), bool)], [img, img])
    with pytest.raises(InputError, match="lengths differ"):
        describe_regions([_disk()], [img, img])


def test_batch_and_standardise(rng: np.random.Generator) -> None:
    img = _texture(rng)
    masks = [_disk(r=int(r)) for r in rng.integers(3, 30, 6)] + [_line()]
    feats = describe_regions(masks, [img] * len(masks))
    np.testing.assert_allclose(feats[0], describe_region(masks[0], img), rtol=1e-5, atol=1e-7)
    z, stats = standardise(feats)
    varying = feats.std(0) > 1e-6
    np.testing.assert_allclose(z[:, varying].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, varying].std(0), 1, atol=1e-4)
    np.testing.assert_array_equal(stats.scale[~varying], 1.0)
    again, _ = standardise(feats[:2], DescriptorStats.from_dict(stats.to_dict()))
    np.testing.assert_allclose(again, z[:2], atol=1e-6)
    with pytest.raises(InputError):
        standardise(np.zeros((0, len(DESCRIPTOR_NAMES))))
    with pytest.raises(InputError):
        DescriptorStats.from_dict({"mean": [0.0], "scale": [1.0]})


def test_box_descriptors_describe_the_region_inside_each_box(rng: np.random.Generator) -> None:
    from protoinspect.sdk.stages.region_descriptors import box_descriptors, standardise_rows

    image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[10:14, 10:30] = True  # a bar
    mask[40:50, 40:50] = True  # a square
    boxes = [(0, 0, 32, 32), (32, 32, 64, 64), (0, 40, 20, 64)]  # the bar, the square, nothing
    raw = box_descriptors(mask, image, boxes)
    bar = np.zeros_like(mask)
    bar[10:14, 10:30] = True
    np.testing.assert_allclose(raw[0], describe_region(bar, image), rtol=1e-6)
    assert raw[0, DESCRIPTOR_NAMES.index("elongation")] > raw[1, DESCRIPTOR_NAMES.index("elongation")]
    assert np.isnan(raw[2]).all()
    z = standardise_rows(raw, raw[:2].mean(0), np.full(12, 2.0, np.float32))
    assert (z[2] == 0).all() and np.isfinite(z).all()
    np.testing.assert_allclose(z[0], (raw[0] - raw[:2].mean(0)) / 2.0, rtol=1e-6)
    with pytest.raises(InputError, match="box 0"):
        box_descriptors(mask, image, [(0, 0, 65, 10)])
    with pytest.raises(InputError, match="stats"):
        standardise_rows(raw, np.zeros(11), np.ones(11))
