"""Tests of protoinspect.sdk.preprocess: training/runtime parity, frame validation, memory layouts and the spec."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from protoinspect.sdk.errors import InputError
from protoinspect.sdk.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PreprocessSpec,
    normalize,
    normalize_batch,
    preprocess_batch,
    preprocess_frame,
    resize_map,
    resize_gt_mask,
    resize_to_rgb,
    validate_frame,
)
from protoinspect.training.batches import images_to_tensor, load_resized
from protoinspect.training.datasets import Sample

SPEC = PreprocessSpec(image_size=(64, 64))


@pytest.fixture()
def rng() -> np.random.Generator:
    """Fresh (unseeded) randomness: every run draws new inputs."""
    return np.random.default_rng()


def _textured(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random uint8 image with both fine noise and smooth structure (so resizing matters)."""
    noise = rng.integers(0, 256, shape, dtype=np.uint8)
    smooth = cv2.GaussianBlur(noise, (5, 5), 0)
    return np.where(rng.random(shape) < 0.5, noise, smooth).astype(np.uint8)


# ----------------------------------------------------------------------------- training == runtime


@pytest.mark.parametrize("src_shape", [(100, 130), (40, 50), (64, 64)], ids=["shrink", "enlarge", "same"])
@pytest.mark.parametrize("spec_order", ["rgb", "bgr"])
def test_training_and_runtime_transforms_are_identical_rgb(
    tmp_path: Path, rng: np.random.Generator, src_shape: tuple[int, int], spec_order: str
) -> None:
    spec = PreprocessSpec(image_size=(64, 64), color_order=spec_order)  # type: ignore[arg-type]
    rgb = _textured(rng, (*src_shape, 3))
    path = tmp_path / "rgb.png"
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))
    sample = Sample(image_path=path, label=0, defect_type="good", mask_path=None)

    train_images = load_resized([sample], "rgb", spec)
    assert train_images.shape == (1, 64, 64, 3) and train_images.dtype == np.uint8
    train = images_to_tensor(train_images, spec).numpy()

    bgr = cv2.imread(str(path))  # what a camera / OpenCV pipeline hands the SDK
    runtime = preprocess_frame(bgr, spec, color_order="bgr")
    assert runtime.dtype == np.float32 and runtime.shape == (3, 64, 64)
    np.testing.assert_array_equal(train[0], runtime)
    # the runtime fed RGB directly gives the same too
    np.testing.assert_array_equal(preprocess_frame(rgb, spec, color_order="rgb"), runtime)


@pytest.mark.parametrize("src_shape", [(100, 130), (40, 50)], ids=["shrink", "enlarge"])
def test_training_and_runtime_transforms_are_identical_gray(
    tmp_path: Path, rng: np.random.Generator, src_shape: tuple[int, int]
) -> None:
    gray = _textured(rng, src_shape)
    path = tmp_path / "gray.png"
    assert cv2.imwrite(str(path), gray)
    sample = Sample(image_path=path, label=0, defect_type="good", mask_path=None)

    train = images_to_tensor(load_resized([sample], "gray", SPEC), SPEC).numpy()[0]
    as_bgr = cv2.imread(str(path))  # default IMREAD_COLOR: 3 equal channels
    as_gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(train, preprocess_frame(as_bgr, SPEC, color_order="bgr"))
    np.testing.assert_array_equal(train, preprocess_frame(as_gray, SPEC))
    # all three channels hold the same pixels before normalisation
    rgb = resize_to_rgb(as_gray, SPEC)
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])


# ----------------------------------------------------------------------------- channels and normalisation


def test_gray_frames_give_three_identical_channels(rng: np.random.Generator) -> None:
    gray = _textured(rng, (80, 96))
    rgb_2d = resize_to_rgb(gray, SPEC)
    rgb_3d = resize_to_rgb(gray[:, :, None], SPEC)
    assert rgb_2d.shape == (64, 64, 3) and rgb_2d.dtype == np.uint8
    for rgb in (rgb_2d, rgb_3d):
        np.testing.assert_array_equal(rgb[..., 0], rgb[..., 1])
        np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    np.testing.assert_array_equal(rgb_2d, rgb_3d)
    np.testing.assert_array_equal(preprocess_frame(gray, SPEC), preprocess_frame(gray[:, :, None], SPEC))
    np.testing.assert_array_equal(preprocess_frame(gray, SPEC), preprocess_frame(np.dstack([gray] * 3), SPEC))
    # colour order does not matter for gray frames
    np.testing.assert_array_equal(preprocess_frame(gray, SPEC, "bgr"), preprocess_frame(gray, SPEC, "rgb"))


def test_bgr_and_rgb_order(rng: np.random.Generator) -> None:
    rgb = _textured(rng, (64, 64, 3))
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    out_rgb = resize_to_rgb(rgb, SPEC, "rgb")
    out_bgr = resize_to_rgb(bgr, SPEC, "bgr")
    np.testing.assert_array_equal(out_rgb, rgb)  # same size: no resampling
    np.testing.assert_array_equal(out_bgr, rgb)
    # the spec's own colour order is the default
    bgr_spec = PreprocessSpec(image_size=(64, 64), color_order="bgr")
    np.testing.assert_array_equal(preprocess_frame(bgr, bgr_spec), preprocess_frame(rgb, SPEC))
    # and an explicit argument overrides it
    np.testing.assert_array_equal(preprocess_frame(rgb, bgr_spec, color_order="rgb"), preprocess_frame(rgb, SPEC))
    # a pure red pixel lands in channel 0 either way
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 255
    assert (resize_to_rgb(red, SPEC)[..., 0] == 255).all()
    assert (resize_to_rgb(np.ascontiguousarray(red[:, :, ::-1]), SPEC, "bgr")[..., 0] == 255).all()
    assert (resize_to_rgb(red, SPEC, "bgr")[..., 2] == 255).all()


@pytest.mark.parametrize(
    "mean,std", [(IMAGENET_MEAN, IMAGENET_STD), ((0.5, 0.4, 0.3), (0.2, 0.25, 0.3)), ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))]
)
def test_normalisation_formula(rng: np.random.Generator, mean: tuple, std: tuple) -> None:
    spec = PreprocessSpec(image_size=(64, 64), mean=mean, std=std)
    x = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    x[0, 0] = (0, 0, 0)
    x[0, 1] = (255, 255, 255)
    out = normalize(x, spec)
    assert out.dtype == np.float32 and out.shape == (3, 64, 64)
    ref = (x.astype(np.float64) / 255.0 - np.asarray(mean)) / np.asarray(std)
    np.testing.assert_allclose(out, ref.transpose(2, 0, 1), rtol=0, atol=1e-6)
    np.testing.assert_allclose(preprocess_frame(x, spec), ref.transpose(2, 0, 1), rtol=0, atol=1e-6)


def test_normalize_rejects_non_rgb_uint8() -> None:
    with pytest.raises(InputError, match="uint8"):
        normalize(np.zeros((64, 64, 3), np.float32), SPEC)
    with pytest.raises(InputError, match="HxWx3"):
        normalize(np.zeros((64, 64), np.uint8), SPEC)


# ----------------------------------------------------------------------------- memory layouts


def _layouts(rng: np.random.Generator) -> dict[str, np.ndarray]:
    big = _textured(rng, (150, 170, 3))
    frame = _textured(rng, (90, 110, 3))
    readonly = frame.copy()
    readonly.flags.writeable = False
    gray = _textured(rng, (90, 110))
    return {
        "roi_crop": big[13:113, 27:157],
        "flip_vertical": frame[::-1],
        "flip_horizontal": frame[:, ::-1],
        "flip_both": frame[::-1, ::-1],
        "strided": big[::2, ::2],
        "channel_view_bgr_to_rgb": frame[:, :, ::-1],
        "fortran": np.asfortranarray(frame),
        "readonly": readonly,
        "gray_roi": gray[5:80, 7:100],
        "gray_flip": gray[:, ::-1],
        "gray_strided": gray[::3, ::2],
        "gray_fortran": np.asfortranarray(gray),
        "gray_hw1_view": frame[:, :, 1:2],
    }


@pytest.mark.parametrize(
    "name",
    ["roi_crop", "flip_vertical", "flip_horizontal", "flip_both", "strided", "channel_view_bgr_to_rgb", "fortran",
     "readonly", "gray_roi", "gray_flip", "gray_strided", "gray_fortran", "gray_hw1_view"],
)
@pytest.mark.parametrize("order", ["rgb", "bgr"])
def test_unusual_memory_layouts_match_a_contiguous_copy(rng: np.random.Generator, name: str, order: str) -> None:
    view = _layouts(rng)[name]
    if name not in ("fortran", "gray_fortran", "readonly"):
        assert not view.flags.c_contiguous  # the case really is an unusual layout
    before = view.copy()
    copy = np.ascontiguousarray(view)
    out = preprocess_frame(view, SPEC, color_order=order)  # type: ignore[arg-type]
    np.testing.assert_array_equal(out, preprocess_frame(copy, SPEC, color_order=order))  # type: ignore[arg-type]
    np.testing.assert_array_equal(view, before)  # the caller's frame is never modified
    batch = preprocess_batch([view, copy], SPEC, color_order=order)  # type: ignore[arg-type]
    assert batch.shape == (2, 3, 64, 64)
    np.testing.assert_array_equal(batch[0], batch[1])


def test_validate_frame_keeps_views_without_copying(rng: np.random.Generator) -> None:
    frame = _textured(rng, (40, 50, 3))
    view = frame[::-1]
    assert validate_frame(view) is view
    gray = _textured(rng, (40, 50))
    assert validate_frame(gray) is gray
    squeezed = validate_frame(gray[:, :, None])
    assert squeezed.shape == (40, 50) and np.shares_memory(squeezed, gray)


# ----------------------------------------------------------------------------- bad input


def _bad_inputs() -> list[tuple[str, object, str]]:
    return [
        ("none", None, "none"),
        ("list", [[1, 2], [3, 4]], "ndarray"),
        ("float64", np.zeros((16, 16, 3), np.float64), "dtype"),
        ("float32", np.zeros((16, 16), np.float32), "dtype"),
        ("uint16", np.zeros((16, 16, 3), np.uint16), "dtype"),
        ("bool", np.zeros((16, 16), bool), "dtype"),
        ("int8", np.zeros((16, 16), np.int8), "dtype"),
        ("4_channels", np.zeros((16, 16, 4), np.uint8), "channels"),
        ("2_channels", np.zeros((16, 16, 2), np.uint8), "channels"),
        ("1d", np.zeros((16,), np.uint8), "shape"),
        ("4d", np.zeros((1, 16, 16, 3), np.uint8), "shape"),
        ("0d", np.array(7, np.uint8), "shape"),
        ("zero_rows", np.zeros((0, 10), np.uint8), "empty"),
        ("zero_cols_rgb", np.zeros((10, 0, 3), np.uint8), "empty"),
        ("zero_hw1", np.zeros((0, 10, 1), np.uint8), "empty"),
    ]


@pytest.mark.parametrize("case", _bad_inputs(), ids=[c[0] for c in _bad_inputs()])
def test_bad_frames_raise_input_error(case: tuple[str, object, str]) -> None:
    _, frame, word = case
    for call in (
        lambda: validate_frame(frame),
        lambda: preprocess_frame(frame, SPEC),  # type: ignore[arg-type]
        lambda: resize_to_rgb(frame, SPEC),  # type: ignore[arg-type]
        lambda: preprocess_batch([np.zeros((16, 16, 3), np.uint8), frame], SPEC),  # type: ignore[list-item]
    ):
        with pytest.raises(InputError) as info:
            call()
        assert isinstance(info.value, ValueError)
        assert word in str(info.value).lower(), str(info.value)


def test_dtype_message_names_the_dtype_and_the_fix() -> None:
    with pytest.raises(InputError, match="uint16") as info:
        preprocess_frame(np.zeros((16, 16, 3), np.uint16), SPEC)
    assert "astype(np.uint8)" in str(info.value)


def test_channel_message_names_the_count() -> None:
    with pytest.raises(InputError, match="got 4") as info:
        preprocess_frame(np.zeros((16, 16, 4), np.uint8), SPEC)
    assert "alpha" in str(info.value)


def test_empty_batch_raises() -> None:
    with pytest.raises(InputError, match="empty") as info:
        preprocess_batch([], SPEC)
    assert isinstance(info.value, ValueError)


def test_batch_stacks_frames_in_order(rng: np.random.Generator) -> None:
    frames = [_textured(rng, (70, 90, 3)), _textured(rng, (30, 20)), _textured(rng, (64, 64, 3))]
    batch = preprocess_batch(frames, SPEC)
    assert batch.shape == (3, 3, 64, 64) and batch.dtype == np.float32
    for i, f in enumerate(frames):
        np.testing.assert_array_equal(batch[i], preprocess_frame(f, SPEC))


# ----------------------------------------------------------------------------- huge frames


def test_huge_frame_resizes_to_model_size() -> None:
    frame = np.full((8000, 8000, 3), 77, np.uint8)
    frame[:4000, :, 1] = 200  # top half differs in green
    out = preprocess_frame(frame, SPEC)
    assert out.shape == (3, 64, 64) and out.dtype == np.float32
    assert np.isfinite(out).all()
    expected_top = (200 / 255 - SPEC.mean[1]) / SPEC.std[1]
    expected_bottom = (77 / 255 - SPEC.mean[1]) / SPEC.std[1]
    np.testing.assert_allclose(out[1, :32], expected_top, atol=1e-5)
    np.testing.assert_allclose(out[1, 32:], expected_bottom, atol=1e-5)
    del frame


# ----------------------------------------------------------------------------- spec


@pytest.mark.parametrize("size", [(100, 64), (64, 100), (8, 8), (0, 64), (-16, 64), (64, 17)])
def test_spec_rejects_sizes_not_multiple_of_16(size: tuple[int, int]) -> None:
    with pytest.raises(InputError, match="multiples of 16"):
        PreprocessSpec(image_size=size)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"std": (0.2, 0.0, 0.2)},
        {"std": (0.2, -0.1, 0.2)},
        {"std": (0.2, 0.2)},
        {"mean": (0.5, 0.5)},
        {"mean": (0.5, 0.5, 0.5, 0.5)},
    ],
)
def test_spec_rejects_bad_mean_std(kwargs: dict) -> None:
    with pytest.raises(InputError, match="std"):
        PreprocessSpec(image_size=(64, 64), **kwargs)


@pytest.mark.parametrize("order", ["RGB", "bgra", "", None])
def test_spec_rejects_bad_color_order(order: object) -> None:
    with pytest.raises(InputError, match="color_order"):
        PreprocessSpec(image_size=(64, 64), color_order=order)  # type: ignore[arg-type]


def test_spec_round_trip(rng: np.random.Generator) -> None:
    import json

    spec = PreprocessSpec(
        image_size=(int(rng.integers(1, 20)) * 16, int(rng.integers(1, 20)) * 16),
        mean=tuple(float(v) for v in rng.random(3)),  # type: ignore[arg-type]
        std=tuple(float(v) + 0.05 for v in rng.random(3)),  # type: ignore[arg-type]
        color_order="bgr",
    )
    d = spec.to_dict()
    assert set(d) == {"image_size", "mean", "std", "color_order"}
    back = PreprocessSpec.from_dict(json.loads(json.dumps(d)))
    assert back == spec
    assert back.to_dict() == d
    x = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    np.testing.assert_array_equal(preprocess_frame(x, back), preprocess_frame(x, spec))
    # color_order defaults to rgb for old manifests without it
    d.pop("color_order")
    assert PreprocessSpec.from_dict(d).color_order == "rgb"


def test_spec_normalises_types() -> None:
    spec = PreprocessSpec(image_size=[32, 48], mean=[0, 0, 0], std=[1, 1, 1])  # type: ignore[arg-type]
    assert spec.image_size == (32, 48) and isinstance(spec.image_size, tuple)
    assert all(isinstance(v, float) for v in (*spec.mean, *spec.std))
    assert spec == PreprocessSpec(image_size=(32, 48), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    out = preprocess_frame(np.full((10, 10), 255, np.uint8), spec)
    assert out.shape == (3, 32, 48)
    np.testing.assert_allclose(out, 1.0, atol=1e-6)


# ----------------------------------------------------------------------------- masks and maps


def test_resize_gt_mask_binarises_above_127(rng: np.random.Generator) -> None:
    mask = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    mask[0] = np.arange(64)  # a row of small values
    out = resize_gt_mask(mask, (64, 64))
    assert out.dtype == bool and out.shape == (64, 64)
    np.testing.assert_array_equal(out, mask > 127)
    # values 1..127 are never defect, 128..255 always are
    low = np.arange(1, 128, dtype=np.uint8).reshape(1, -1).repeat(16, axis=0)
    assert not resize_gt_mask(low, (16, 127)).any()
    high = np.arange(128, 256, dtype=np.uint8).reshape(1, -1).repeat(16, axis=0)
    assert resize_gt_mask(high, (16, 128)).all()


def test_resize_gt_mask_changes_size_with_nearest() -> None:
    mask = np.zeros((100, 60), np.uint8)
    mask[20:60, 10:40] = 255
    mask[70:80, 45:55] = 100  # below threshold: ignored
    out = resize_gt_mask(mask, (50, 30))
    assert out.shape == (50, 30) and out.dtype == bool
    assert out[10:30, 5:20].all()
    assert out.sum() == 20 * 15
    assert resize_gt_mask(mask, (50, 30), threshold=50).sum() > out.sum()


def test_resize_map_keeps_float32_and_shape(rng: np.random.Generator) -> None:
    amap = rng.random((16, 24))
    out = resize_map(amap, (64, 96))
    assert out.dtype == np.float32 and out.shape == (64, 96)
    assert out.min() >= amap.min() - 1e-6 and out.max() <= amap.max() + 1e-6
    same = resize_map(amap.astype(np.float32), (16, 24))
    np.testing.assert_array_equal(same, amap.astype(np.float32))
    const = resize_map(np.full((7, 9), 0.25, np.float16), (33, 41))
    assert const.dtype == np.float32 and const.shape == (33, 41)
    np.testing.assert_allclose(const, 0.25)


BATCH_SPEC = PreprocessSpec(image_size=(32, 48))


def test_normalize_batch_is_stacked_normalize(rng: np.random.Generator) -> None:
    frames = rng.integers(0, 256, (3, 32, 48, 3), dtype=np.uint8)[:, ::-1, :, :]  # a non-contiguous view
    frames[0].reshape(-1, 3)[:256] = np.arange(256, dtype=np.uint8)[:, None]  # every value in every channel
    got = normalize_batch(frames, BATCH_SPEC)
    assert got.dtype == np.float32 and got.shape == (3, 3, 32, 48) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, np.stack([normalize(f, BATCH_SPEC) for f in frames]))
    with pytest.raises(InputError, match="N x H x W x 3 uint8"):
        normalize_batch(frames[0], BATCH_SPEC)
