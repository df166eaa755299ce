"""sdk/preprocess.py: bool vs 0..255 masks (the runtime object-mask bug), views resized without a full copy,
the one colour conversion and the ViT normalisation."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from protoinspect.sdk.errors import InputError
from protoinspect.sdk.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PreprocessSpec,
    normalize_images,
    resize_bool_mask,
    resize_frame,
    resize_gt_mask,
    resize_to_rgb,
    to_gray,
    to_rgb,
)

SPEC = PreprocessSpec(image_size=(64, 96))


def test_bool_masks_keep_their_pixels() -> None:
    """The bug: a bool object mask thresholded at > 127 came out empty; resize_bool_mask keeps it."""
    mask = np.zeros((100, 150), bool)
    mask[20:60, 30:90] = True
    out = resize_bool_mask(mask, (50, 75))
    assert out.dtype == bool and out.shape == (50, 75) and out[10:30, 15:45].all() and out.sum() == 20 * 30
    np.testing.assert_array_equal(resize_bool_mask(mask[:, ::-1], (100, 150)), mask[:, ::-1])  # views, same size
    with pytest.raises(InputError, match="resize_gt_mask"):
        resize_bool_mask(mask.astype(np.uint8) * 255, (50, 75))
    with pytest.raises(InputError, match="bool.*resize_bool_mask"):
        resize_gt_mask(mask, (50, 75))  # the old silent emptying is now an error naming the fix


def test_gt_masks_threshold_their_values() -> None:
    gt = np.zeros((40, 40), np.uint8)
    gt[:20] = 255
    gt[20:24] = 100
    assert resize_gt_mask(gt, (40, 40)).sum() == 20 * 40
    assert resize_gt_mask(gt, (40, 40), threshold=0).sum() == 24 * 40
    with pytest.raises(InputError, match="integer"):
        resize_gt_mask(gt.astype(np.float32), (40, 40))


def test_discovery_training_ground_truth_is_not_empty(tmp_path: object) -> None:
    """training/discovery_data.gt_mask binarised the mask to bool and then thresholded it at 127: always empty."""
    pytest.importorskip("torch")
    import cv2

    from protoinspect.training.dataset_layout import Sample
    from protoinspect.training.discovery_data import gt_mask

    path = tmp_path / "m.png"  # type: ignore[operator]
    raw = np.zeros((128, 128), np.uint8)
    raw[32:64, 64:96] = 255
    cv2.imwrite(str(path), raw)
    sample = Sample(image_path=path, mask_path=path, label=1, defect_type="crack")  # type: ignore[call-arg]
    out = gt_mask(sample, SPEC)
    assert out.shape == (64, 96) and out.sum() > 0


@pytest.mark.parametrize("color_order", ["bgr", "rgb"])
def test_views_are_resized_in_place(rng: np.random.Generator, color_order: str) -> None:
    big = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    exact = [big[20:280, 30:390], big[::2], big[:, :, ::-1], big[5:295:3, :, ::-1], big[:, ::2]]
    for view in exact:
        assert not view.flags.c_contiguous
        np.testing.assert_array_equal(resize_to_rgb(view, SPEC, color_order),  # type: ignore[arg-type]
                                      resize_to_rgb(np.ascontiguousarray(view), SPEC, color_order))  # type: ignore[arg-type]
    for view in (big[::-1], big[:, ::-1], big[::-1, ::-1, ::-1]):
        a = resize_to_rgb(view, SPEC, color_order).astype(int)  # type: ignore[arg-type]
        b = resize_to_rgb(np.ascontiguousarray(view), SPEC, color_order).astype(int)  # type: ignore[arg-type]
        assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.01  # OpenCV rounds ties asymmetrically
    gray = big[:, :, 1]  # a channel slice: columns 3 bytes apart
    np.testing.assert_array_equal(resize_to_rgb(gray, SPEC), resize_to_rgb(np.ascontiguousarray(gray), SPEC))


def test_no_full_resolution_copy_of_a_view() -> None:
    frame = np.zeros((4000, 4000, 3), np.uint8)
    for view in (frame[100:3900, 50:3950], frame[::-1], frame[:, ::-1, ::-1]):
        resize_to_rgb(view, SPEC)
        tracemalloc.start()
        try:
            resize_to_rgb(view, SPEC)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < frame.nbytes // 100, f"{peak / 1e6:.1f} MB for a {view.nbytes / 1e6:.0f} MB view"


def test_resize_frame_reports_the_channel_order() -> None:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 200
    out, order = resize_frame(rgb[..., ::-1], (16, 16), "bgr")  # a BGR view of RGB memory
    assert order == "rgb" and (out[..., 0] == 200).all()
    np.testing.assert_array_equal(to_rgb(out, order), resize_to_rgb(rgb[..., ::-1], PreprocessSpec((16, 16)), "bgr"))


def test_colour_conversions() -> None:
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 2] = 255  # red in BGR
    assert (to_rgb(bgr, "bgr")[..., 0] == 255).all() and to_rgb(bgr, "bgr").flags.c_contiguous
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5)
    np.testing.assert_array_equal(to_rgb(gray, "bgr"), np.repeat(gray[:, :, None], 3, axis=2))
    assert to_gray(bgr, "bgr")[0, 0] == to_gray(bgr[..., ::-1], "rgb")[0, 0] == 76  # 0.299 * 255
    assert to_gray(gray, "rgb") is gray
    with pytest.raises(InputError):
        to_rgb(bgr, "BGR")  # type: ignore[arg-type]


def test_normalize_images_is_the_vit_formula(rng: np.random.Generator) -> None:
    images = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
    expected = np.stack([((im.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1) for im in images])
    got = normalize_images(images)
    assert got.shape == (2, 3, 8, 8) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(InputError):
        normalize_images(images[0])
