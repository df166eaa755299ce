"""sdk/stages/region_classifier.py: the classifier sees at runtime the object mask and the crops it was trained on."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from detector_bundles import make_exported_bundle
from protoinspect.sdk import Inspector, InspectorConfig
from protoinspect.sdk.backends.base import GraphOutputs
from protoinspect.sdk.backends.registry import create_backend
from protoinspect.sdk.bundle import load_bundle
from protoinspect.sdk.errors import BackendError, ConfigError
from protoinspect.sdk.preprocess import PreprocessSpec
from protoinspect.sdk.stages.contracts import ClassificationInput
from protoinspect.sdk.stages.crops import region_crops
from protoinspect.sdk.stages.detector import DetectorOutput
from protoinspect.sdk.stages.discovery_crops import DiscoverySettings, build_crops, crop_regions
from protoinspect.sdk.stages.masker import MaskerSettings, build_masker
from protoinspect.sdk.stages.mebin import MEBinSettings
from protoinspect.sdk.stages.region_classifier import ClassifierSettings, RegionClassifier
from protoinspect.sdk.stages.regions import MapRegionFinder, RegionSettings
from stage_fakes import FakeClassifierRuntime

SPEC = PreprocessSpec(image_size=(64, 64))
SMALL = {"num_prototypes": 16, "embed_dim": 32, "num_heads": 2, "blur_sigma": 1.0}
ROI = (10, 12, 40, 50)
HAS_SAM = importlib.util.find_spec("segment_anything") is not None and importlib.util.find_spec("torch") is not None
if HAS_SAM:
    from sam_fixtures import tiny_sam


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_exported_bundle(tmp_path_factory.mktemp("clf") / "b", np.random.default_rng(11), SPEC, **SMALL)


def _disk_bgr() -> np.ndarray:
    """A bright disk on a dark, noisy background at model size (BGR)."""
    yy, xx = np.mgrid[:64, :64]
    gray = np.where((yy - 30) ** 2 + (xx - 34) ** 2 <= 18 ** 2, 200, 40).astype(np.int64)
    gray += np.random.default_rng(1).integers(-10, 11, gray.shape)
    bgr = np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
    bgr[..., 0] //= 2  # not gray: the colour order matters
    return bgr


def _settings(model_map: np.ndarray) -> DiscoverySettings:
    return DiscoverySettings(grid=4, s_min=float(model_map.min()), s_max=float(model_map.max()),
                             mebin=MEBinSettings(erode_kernel=0, min_interval_len=1))


class Spy:
    """A classifier stage that records its input, then runs the real one."""

    def __init__(self, inner: RegionClassifier) -> None:
        self.inner, self.seen = inner, []

    def classify(self, inputs: ClassificationInput) -> Any:
        self.seen.append(inputs)
        return self.inner.classify(inputs)


def _maskers(kind: str, sa_module: Any) -> tuple[Any, Any]:
    """(runtime masker for BGR frames, training's masker for RGB model-size images)."""
    if kind == "sam":
        from protoinspect.sdk.stages.sam_masker import SamMasker

        sam = tiny_sam(sa_module)
        return (SamMasker(None, sam_model=sam, box_xyxy=(10, 8, 58, 52), color_order="bgr"),
                SamMasker(None, sam_model=sam, box_xyxy=(10, 8, 58, 52), color_order="rgb"))
    roi = ROI if kind == "roi" else None
    return (build_masker(MaskerSettings(kind=kind, color_order="bgr", roi_xyxy=roi)),
            build_masker(MaskerSettings(kind=kind, color_order="rgb", roi_xyxy=roi)))


@pytest.mark.parametrize("kind", ["none", "otsu", "roi", pytest.param("sam", marks=pytest.mark.skipif(
    not HAS_SAM, reason="segment_anything or torch not installed"))])
def test_classifier_gets_the_training_object_mask(bundle: Path, kind: str, request: pytest.FixtureRequest) -> None:
    """Training (train_discovery) masks the model-size RGB image; the Inspector masks the frame. Both must give
    the classifier the same object mask (the runtime used to threshold a bool mask at 127: always empty)."""
    sa_module = request.getfixturevalue("sa") if kind == "sam" else None
    frame = _disk_bgr()
    runtime_masker, training_masker = _maskers(kind, sa_module)
    b = load_bundle(bundle)
    cfg = InspectorConfig(threads=1, image_threshold=-math.inf)
    with Inspector(b, create_backend("onnxruntime", b, intra_op_threads=1), cfg) as probe:
        settings = _settings(probe.inspect(frame).model_map)
    fake = FakeClassifierRuntime()
    spy = Spy(RegionClassifier(fake, ClassifierSettings(settings, kappa=10.0, spec=SPEC)))
    regions = MapRegionFinder(RegionSettings(-math.inf, 1, settings))
    masker = None if kind == "none" else runtime_masker
    with Inspector(b, create_backend("onnxruntime", b, intra_op_threads=1), cfg, masker=masker, regions=regions,
                   classifier=spy) as insp:
        insp.inspect(frame)
    seen = spy.seen[0]
    # what training/train_discovery.py computes for the same image at model size
    training_obj = None if kind == "none" else np.asarray(training_masker.mask(frame[:, :, ::-1]), bool)
    if training_obj is None:
        assert seen.object_mask is None
        expected_obj = np.ones((64, 64), bool)
    else:
        assert seen.object_mask is not None and seen.object_mask.any() and not seen.object_mask.all()
        np.testing.assert_array_equal(seen.object_mask, training_obj)
        expected_obj = training_obj
    crops = region_crops(seen.regions.mask, settings.crops, seen.regions.labels)
    sent = fake.inputs[0]["regions"]  # the object channel of every crop, as training builds it
    for k, crop in enumerate(crops):
        np.testing.assert_array_equal(sent[k, 1], crop_regions(seen.regions.mask, expected_obj, crop.box, 4)[1])


def test_crops_equal_trainings_when_nothing_is_cut(bundle: Path, rng: np.random.Generator) -> None:
    """With no floor and no object mask the runtime's region mask is MEBin's, and its crops are build_crops'."""
    b = load_bundle(bundle)
    with create_backend("onnxruntime", b, intra_op_threads=1) as backend:
        out = backend.run({"image": rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)})
    model_map, features = out["anomaly_map"][0, 0], out["features"][0]
    settings = _settings(model_map)
    regions = MapRegionFinder(RegionSettings(-math.inf, 1, settings)).find(model_map, (64, 64))
    fake = FakeClassifierRuntime()
    detection = DetectorOutput(model_map, 1.0, (64, 64), outputs=GraphOutputs.ready({"features": features[None]}))
    clf = RegionClassifier(fake, ClassifierSettings(settings, kappa=10.0, spec=SPEC))
    result = clf.classify(ClassificationInput(np.zeros((64, 64, 3), np.uint8), detection, regions, None))
    training = build_crops(model_map, features, None, settings)
    kept = len(training.boxes)
    np.testing.assert_array_equal(fake.inputs[0]["tokens"][:kept], training.tokens)
    np.testing.assert_array_equal(fake.inputs[0]["regions"][:kept], training.regions)
    assert len(result.regions) == len(regions.defects) and result.image_class is not None


def test_classifier_errors(bundle: Path) -> None:
    settings = DiscoverySettings(grid=4)
    clf = RegionClassifier(FakeClassifierRuntime(), ClassifierSettings(settings, kappa=10.0, spec=SPEC))
    amap = np.zeros((64, 64), np.float32)
    amap[10:20, 10:20] = 1.0
    regions = MapRegionFinder(RegionSettings(0.5, 1)).find(amap, (64, 64))
    no_features = DetectorOutput(amap, 1.0, (64, 64), outputs=None)
    with pytest.raises(BackendError, match="re-export"):
        clf.classify(ClassificationInput(np.zeros((64, 64, 3), np.uint8), no_features, regions, None))
    with pytest.raises(ConfigError, match="ViT"):
        RegionClassifier(FakeClassifierRuntime(), ClassifierSettings(DiscoverySettings(token_source="vit"), 10.0))
    with pytest.raises(ConfigError, match="kappa"):
        ClassifierSettings(settings, kappa=0.0)

