"""Tests of protoinspect.sdk.Inspector: decisions, model-size and (lazy) frame-size maps, input checks, threads,
maskers, lifecycle. The per-frame economies (one region pass, lazy map / mask / features) and stage injection
are tested in tests/sdk/test_inspector_stages.py."""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from detector_bundles import make_exported_bundle
from import_probe import RUNTIME_FORBIDDEN, loaded_after

from protoinspect.sdk import Defect, InspectionResult, Inspector, InspectorConfig, Verdict
from protoinspect.sdk.errors import BackendError, ConfigError, InputError
from protoinspect.sdk.preprocess import PreprocessSpec
from protoinspect.sdk.stages.masker import NoMasker, OtsuMasker, RoiMasker

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"num_prototypes": 16, "embed_dim": 32, "num_heads": 2, "blur_sigma": 1.0}
SPEC = PreprocessSpec(image_size=(64, 64), mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
FORCE_ANOMALOUS = {"image_threshold": -math.inf}
FORCE_OK = {"image_threshold": math.inf}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny exported detector bundle (64x64 input, thresholds 0.5 / 0.5); tests must not modify it."""
    return make_exported_bundle(tmp_path_factory.mktemp("inspector") / "bundle", np.random.default_rng(3), SPEC, **SMALL)


def _make(bundle: Path, backend: str = "onnxruntime", **config: object) -> Inspector:
    return Inspector.from_bundle(bundle, backend=backend, config=InspectorConfig(threads=1, **config))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def inspector(bundle: Path) -> Iterator[Inspector]:
    """Default-config onnxruntime Inspector shared by read-only tests."""
    insp = _make(bundle)
    yield insp
    insp.close()


def _frame(rng: np.random.Generator, h: int = 100, w: int = 150, channels: int | None = 3) -> np.ndarray:
    shape = (h, w) if channels is None else (h, w, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _same(a: InspectionResult, b: InspectionResult) -> None:
    assert a.verdict == b.verdict
    assert a.anomaly_score == b.anomaly_score
    np.testing.assert_array_equal(a.model_map, b.model_map)
    np.testing.assert_array_equal(a.anomaly_map, b.anomaly_map)
    assert (a.mask is None) == (b.mask is None)
    if a.mask is not None:
        np.testing.assert_array_equal(a.mask, b.mask)
    assert a.defects == b.defects


# ----------------------------------------------------------------------------- construction


@pytest.mark.parametrize(("requested", "chosen"), [("auto", "onnxruntime"), ("onnxruntime", "onnxruntime"), ("torch", "torch")])
def test_from_bundle_backends(bundle: Path, requested: str, chosen: str, caplog: pytest.LogCaptureFixture,
                              rng: np.random.Generator) -> None:
    with caplog.at_level(logging.INFO, logger="protoinspect.sdk.inspector"), _make(bundle, requested) as insp:
        info = insp.describe()
        assert info["backend"]["name"] == chosen and info["backend"]["requested"] == requested
        assert info["bundle_id"] == insp.bundle.manifest.bundle_id
        assert info["thresholds"]["image"] == 0.5 and info["thresholds"]["pixel"] == 0.5
        json.dumps(info)
        result = insp.inspect(_frame(rng, 64, 64))
        assert result.bundle_id == info["bundle_id"]
    assert any(f"backend {chosen}" in r.getMessage() for r in caplog.records)


def test_backends_agree(bundle: Path, rng: np.random.Generator) -> None:
    frame = _frame(rng)
    with _make(bundle, "onnxruntime") as a, _make(bundle, "torch") as b:
        ra, rb = a.inspect(frame), b.inspect(frame)
    np.testing.assert_allclose(ra.anomaly_map, rb.anomaly_map, atol=1e-4 * max(1.0, float(np.abs(rb.anomaly_map).max())))
    assert abs(ra.anomaly_score - rb.anomaly_score) < 1e-3


@pytest.mark.parametrize("kwargs", [
    {"color_order": "RGB"}, {"masker": "roi"}, {"masker": "sam"}, {"roi_xyxy": (5, 5, 2, 9)},
    {"mask_reuse_frames": -1}, {"image_threshold": math.nan}, {"min_defect_area_px": 0},
    {"backend": "tensorflow"}, {"threads": 0}, {"latency_budget_ms": -1.0}, {"device": ""},
])
def test_config_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        InspectorConfig(**kwargs)  # type: ignore[arg-type]


def test_importing_sdk_loads_no_runtime() -> None:
    assert loaded_after("import protoinspect.sdk", RUNTIME_FORBIDDEN) == []


# ----------------------------------------------------------------------------- decisions


def test_ok_fast_path_has_no_defects(bundle: Path, rng: np.random.Generator) -> None:
    with _make(bundle, **FORCE_OK, pixel_threshold=-math.inf) as insp:
        result = insp.inspect(_frame(rng))
    assert result.verdict is Verdict.OK and result.defects == ()
    assert result.timings_ms["regions"] == 0.0


def test_anomalous_finds_regions(bundle: Path, rng: np.random.Generator) -> None:
    frame = _frame(rng)
    with _make(bundle, **FORCE_ANOMALOUS, pixel_threshold=-math.inf, min_defect_area_px=1) as insp:
        everything = insp.inspect(frame)
    assert everything.verdict is Verdict.ANOMALOUS
    assert len(everything.defects) == 1
    d = everything.defects[0]
    assert d.bbox_xyxy == (0, 0, 150, 100) and d.area_px == 100 * 150
    assert d.class_id is None and d.class_name is None and d.is_novel is False
    assert d.score == float(everything.model_map.max())  # regions are found on the model-size map

    threshold = float(np.quantile(everything.model_map, 0.9))
    with _make(bundle, **FORCE_ANOMALOUS, pixel_threshold=threshold, min_defect_area_px=4) as insp:
        result = insp.inspect(frame)
    assert result.defects, "a low pixel threshold finds regions"
    for defect in result.defects:
        assert isinstance(defect, Defect) and defect.area_px >= 4 and defect.score > threshold
        x1, y1, x2, y2 = defect.bbox_xyxy
        assert 0 <= x1 < x2 <= 150 and 0 <= y1 < y2 <= 100
    with _make(bundle, **FORCE_ANOMALOUS, pixel_threshold=math.inf) as insp:
        assert insp.inspect(frame).defects == ()


def test_bundle_threshold_decides(inspector: Inspector, rng: np.random.Generator) -> None:
    result = inspector.inspect(_frame(rng))
    expected = Verdict.OK if result.anomaly_score < 0.5 else Verdict.ANOMALOUS
    assert result.verdict is expected


# ----------------------------------------------------------------------------- frames


@pytest.mark.parametrize("channels", [3, None, 1])
def test_maps_at_model_and_frame_resolution(inspector: Inspector, rng: np.random.Generator,
                                            channels: int | None) -> None:
    result = inspector.inspect(_frame(rng, 100, 150, channels))
    assert result.model_map.shape == (64, 64) and result.model_map.dtype == np.float32
    assert result.frame_size == (100, 150) and not result.has_frame_map  # made only when read
    assert result.anomaly_map.shape == (100, 150) and result.anomaly_map.dtype == np.float32
    assert result.has_frame_map and result.anomaly_map is result.anomaly_map  # made once
    assert result.mask is None  # masker "none": no mask is ever computed
    assert set(result.timings_ms) == {"mask", "detect", "regions", "classify", "frame_map", "total"}


def test_bgr_and_rgb_agree(bundle: Path, rng: np.random.Generator) -> None:
    bgr = _frame(rng)
    with _make(bundle, color_order="bgr") as a, _make(bundle, color_order="rgb") as b:
        _same(a.inspect(bgr), b.inspect(np.ascontiguousarray(bgr[:, :, ::-1])))


@pytest.mark.parametrize("bad", [
    None, np.zeros((0, 0, 3), np.uint8), np.zeros((10, 0), np.uint8), np.zeros((8, 8, 3), np.float64),
    np.zeros((8, 8, 3), np.uint16), np.zeros((8, 8), bool), np.zeros((8, 8, 2), np.uint8),
    np.zeros((8, 8, 4), np.uint8), np.zeros(8, np.uint8), [[1, 2], [3, 4]],
], ids=["none", "empty", "zero-width", "float64", "uint16", "bool", "2ch", "4ch", "1d", "list"])
def test_bad_input_raises_and_inspector_keeps_working(inspector: Inspector, bad: object,
                                                     rng: np.random.Generator) -> None:
    with pytest.raises(InputError) as info:
        inspector.inspect(bad)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert inspector.inspect(_frame(rng, 64, 64)).anomaly_map.shape == (64, 64)


def test_non_contiguous_views_match_copies(inspector: Inspector, rng: np.random.Generator) -> None:
    big = _frame(rng, 200, 300)
    # read in place (ROI crops, row steps, reversed channels) or copied at the view's size (column steps)
    for view in (big[20:120, 40:190], big[::3], big[:, :, ::-1], big[::2, ::2], big[10:150:3, 5:290:2]):
        assert not view.flags.c_contiguous
        _same(inspector.inspect(view), inspector.inspect(np.ascontiguousarray(view)))
    for view in (big[::-1], big[:, ::-1], big[::-1, ::-1, ::-1]):  # mirrored: resized unmirrored, then mirrored
        a, b = inspector.inspect(view), inspector.inspect(np.ascontiguousarray(view))
        scale = max(1.0, float(np.abs(b.model_map).max()))
        np.testing.assert_allclose(a.model_map, b.model_map, atol=0.05 * scale)  # inputs differ by <= 1 grey level
        assert abs(a.anomaly_score - b.anomaly_score) <= 0.05 * scale


@pytest.mark.parametrize("view", [False, True])
def test_huge_frame(bundle: Path, view: bool) -> None:
    import tracemalloc

    frame = np.full((8000, 8000, 3), 90, np.uint8)
    frame[3000:5000, 3000:5000] = 200
    image = frame[:, :, ::-1] if view else frame  # a BGR -> RGB view is not copied either
    with _make(bundle, **FORCE_ANOMALOUS, masker="otsu", color_order="rgb" if view else "bgr") as insp:
        insp.inspect(frame[:64, :64])
        tracemalloc.start()
        try:
            result = insp.inspect(image)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert result.mask is not None and result.mask.shape == (8000, 8000)  # anomalous: the regions needed it
    assert not result.has_frame_map  # no 256 MB map unless asked for
    # the frame-size object mask (64 MB) is all the result holds; no full-resolution copy of the frame
    assert peak < result.mask.nbytes + frame.nbytes // 16, f"peak {peak / 1e6:.0f} MB"
    assert result.anomaly_map.shape == (8000, 8000) and result.has_frame_map  # the caller asked now


def test_inspect_batch_equals_inspect(inspector: Inspector, rng: np.random.Generator) -> None:
    frames = [_frame(rng), _frame(rng, 64, 64, None), _frame(rng, 80, 40)]
    batch = inspector.inspect_batch(frames)
    assert [r.frame_index for r in batch] == list(range(batch[0].frame_index, batch[0].frame_index + 3))
    for frame, result in zip(frames, batch):
        _same(inspector.inspect(frame), result)
    with pytest.raises(InputError):
        inspector.inspect_batch([frames[0], None])  # type: ignore[list-item]


def test_threads_give_serial_results(bundle: Path, rng: np.random.Generator) -> None:
    frames = [_frame(rng, 64 + i, 64) for i in range(32)]
    with _make(bundle, **FORCE_ANOMALOUS, pixel_threshold=0.3, min_defect_area_px=1) as insp:
        serial = [insp.inspect(f) for f in frames]
        parallel: dict[int, InspectionResult] = {}
        errors: list[BaseException] = []

        def work(worker: int) -> None:
            try:
                for i in range(worker * 8, worker * 8 + 8):
                    parallel[i] = insp.inspect(frames[i])
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    for i, expected in enumerate(serial):
        _same(parallel[i], expected)
    assert sorted(r.frame_index for r in parallel.values()) == list(range(32, 64))


# ----------------------------------------------------------------------------- budget and serialisation


def test_latency_budget(bundle: Path, rng: np.random.Generator) -> None:
    frame = _frame(rng)
    with _make(bundle, latency_budget_ms=1e-6) as tight, _make(bundle, latency_budget_ms=1e9) as loose:
        assert tight.inspect(frame).over_budget is True
        assert loose.inspect(frame).over_budget is False
    with _make(bundle) as none:
        assert none.inspect(frame).over_budget is False


def test_to_dict_is_json(bundle: Path, rng: np.random.Generator) -> None:
    with _make(bundle, **FORCE_ANOMALOUS, pixel_threshold=-math.inf, min_defect_area_px=1) as insp:
        result = insp.inspect(_frame(rng, 20, 30))
    d = json.loads(json.dumps(result.to_dict()))
    assert d["verdict"] == "ANOMALOUS" and "anomaly_map" not in d and d["map_shape"] == [20, 30]
    assert d["model_map_shape"] == [64, 64] and not result.has_frame_map
    assert d["defects"][0]["bbox_xyxy"] == [0, 0, 30, 20]
    full = json.loads(json.dumps(result.to_dict(include_maps=True)))
    assert np.allclose(np.array(full["anomaly_map"], np.float32), result.anomaly_map)
    assert full["mask"] is None  # masker "none"
    json.dumps(insp.describe())


# ----------------------------------------------------------------------------- maskers


def _disk(h: int = 120, w: int = 160, bright: bool = True) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:h, :w]
    disk = (yy - 60) ** 2 + (xx - 85) ** 2 <= 35**2
    frame = np.where(disk, 200, 40).astype(np.uint8) if bright else np.where(disk, 40, 200).astype(np.uint8)
    noise = np.random.default_rng(1).integers(-10, 11, frame.shape)
    return np.clip(frame + noise, 0, 255).astype(np.uint8), disk


@pytest.mark.parametrize("bright", [True, False])
@pytest.mark.parametrize("color", [False, True])
def test_otsu_masker_finds_disk(bright: bool, color: bool) -> None:
    frame, disk = _disk(bright=bright)
    if color:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    mask = OtsuMasker("bgr").mask(frame)
    assert mask.shape == disk.shape and mask.dtype == bool
    iou = (mask & disk).sum() / (mask | disk).sum()
    assert iou > 0.9


def test_otsu_masker_large_frame_and_empty() -> None:
    frame, disk = _disk()
    big = np.repeat(np.repeat(frame, 8, axis=0), 8, axis=1)  # 960 x 1280: thresholded at work size
    big_disk = np.repeat(np.repeat(disk, 8, axis=0), 8, axis=1)
    mask = OtsuMasker().mask(big)
    assert (mask & big_disk).sum() / (mask | big_disk).sum() > 0.9
    assert not OtsuMasker().mask(np.zeros((64, 64), np.uint8)).any()


def test_roi_and_no_masker() -> None:
    frame = np.zeros((50, 80, 3), np.uint8)
    mask = RoiMasker((10, 5, 30, 25)).mask(frame)
    assert mask.sum() == 20 * 20 and mask[5:25, 10:30].all()
    clipped = RoiMasker((70, 40, 200, 200)).mask(frame)
    assert clipped.sum() == 10 * 10
    assert not RoiMasker((100, 100, 120, 120)).mask(frame).any()
    assert NoMasker().mask(frame).all()
    with pytest.raises(ConfigError):
        RoiMasker((3, 3, 3, 9))


def test_roi_in_inspector_restricts_regions(bundle: Path, rng: np.random.Generator) -> None:
    frame = _frame(rng, 128, 128)  # twice the model size: the ROI maps exactly onto model pixels
    with _make(bundle, **FORCE_ANOMALOUS, pixel_threshold=-math.inf, masker="roi", roi_xyxy=(10, 20, 60, 70),
               min_defect_area_px=1) as insp:
        result = insp.inspect(frame)
        assert not result.mask_empty and result.mask.sum() == 50 * 50
        assert [d.bbox_xyxy for d in result.defects] == [(10, 20, 60, 70)]
        small = insp.inspect(_frame(rng, 10, 10))  # the ROI misses this frame: no object found
        assert small.mask_empty and not small.mask.any()
        assert [d.bbox_xyxy for d in small.defects] == [(0, 0, 10, 10)]  # whole map searched


def test_mask_reuse_policy(bundle: Path, rng: np.random.Generator) -> None:
    with _make(bundle, masker="otsu", mask_reuse_frames=2, **FORCE_ANOMALOUS) as insp:
        calls = []
        real = insp.masker.mask

        def spy(frame: np.ndarray) -> np.ndarray:
            calls.append(frame.shape)
            return real(frame)

        insp.masker.mask = spy  # type: ignore[method-assign]
        results = [insp.inspect(_disk()[0]) for _ in range(7)]
        assert len(calls) == 3
        assert [r.mask_reused for r in results] == [False, True, True, False, True, True, False]
        for r in results[1:]:
            np.testing.assert_array_equal(r.mask, results[0].mask)
        insp.inspect(_frame(rng, 64, 64))  # a new frame size always recomputes
        assert len(calls) == 4
    with _make(bundle, masker="otsu", mask_every_frame=True) as every:
        real_every = every.masker.mask
        count = []
        every.masker.mask = lambda f: count.append(1) or real_every(f)  # type: ignore[method-assign]
        for _ in range(3):
            assert not every.inspect(_disk()[0]).mask_reused
        assert len(count) == 3


# ----------------------------------------------------------------------------- lifecycle


def test_warmup_and_context_manager_close(bundle: Path, rng: np.random.Generator) -> None:
    with _make(bundle) as insp:
        insp.warmup(2)
        assert insp.inspect(_frame(rng)).frame_index == 0
        backend = insp.backend
    assert backend.closed  # type: ignore[attr-defined]
    with pytest.raises(BackendError):
        backend.run({"image": np.zeros((1, 64, 64, 3), np.uint8)})
    with pytest.raises(BackendError):
        insp.inspect(_frame(rng))
    with pytest.raises(BackendError):
        insp.warmup()
    insp.close()  # idempotent
    assert insp.describe()["closed"] is True


def test_tensorrt_backend_is_explicit_and_says_what_to_install(bundle: Path) -> None:
    from protoinspect.sdk.errors import MissingDependencyError

    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match=r"protoinspect\[tensorrt\]"):
            Inspector.from_bundle(bundle, backend="tensorrt", device="cuda:0")
    else:
        pytest.skip("TensorRT is installed here: the GPU tests cover it")
