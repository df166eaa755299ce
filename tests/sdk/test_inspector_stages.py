"""sdk/inspector.py per-frame economies and stages: one region pass on the model-size map shared by defects
and classifier crops, the frame-size map / object mask / detector features made only when needed, and
stage injection."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from detector_bundles import make_exported_bundle
from stage_fakes import FakeClassifierRuntime

from protoinspect.sdk import Inspector, InspectorConfig, Verdict
from protoinspect.sdk.backends.base import GraphOutputs
from protoinspect.sdk.backends.registry import create_backend
from protoinspect.sdk.bundle import load_bundle
from protoinspect.sdk.preprocess import PreprocessSpec, resize_map
from protoinspect.sdk.stages import discovery_crops
from protoinspect.sdk.stages.contracts import ClassificationInput, ClassificationOutput, RegionClass
from protoinspect.sdk.stages.crops import region_crops
from protoinspect.sdk.stages.discovery_crops import DiscoverySettings
from protoinspect.sdk.stages.masker import OtsuMasker
from protoinspect.sdk.stages.mebin import MEBinSettings
from protoinspect.sdk.stages.region_classifier import ClassifierSettings, RegionClassifier, VmfRejector
from protoinspect.sdk.stages.regions import MapRegionFinder, Regions, RegionSettings

SMALL = {"num_prototypes": 16, "embed_dim": 32, "num_heads": 2, "blur_sigma": 1.0}
SPEC = PreprocessSpec(image_size=(64, 64))
OK, ANOMALOUS = {"image_threshold": math.inf}, {"image_threshold": -math.inf}
CLASSES = {0: ("scratch", False), 1: ("dent", False), 2: ("novel-1", True)}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_exported_bundle(tmp_path_factory.mktemp("insp") / "b", np.random.default_rng(7), SPEC, **SMALL)


class CountingBackend:
    """Wraps a real backend; records every run's outputs (``GraphOutputs.fetched`` says what was copied)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name, self.device = inner.name, inner.device
        self.input_names, self.output_names = inner.input_names, inner.output_names
        self.runs: list[GraphOutputs] = []
        self.closed = False

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.inner.run(inputs)

    def run_lazy(self, inputs: Mapping[str, np.ndarray]) -> GraphOutputs:
        out = self.inner.run_lazy(inputs)
        self.runs.append(out)
        return out

    def close(self) -> None:
        self.closed = True
        self.inner.close()

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()


class CountingMasker(OtsuMasker):
    def __init__(self) -> None:
        super().__init__("bgr")
        self.calls = 0

    def mask(self, frame: np.ndarray) -> np.ndarray:
        self.calls += 1
        return super().mask(frame)


def _discovery(bundle: Path) -> tuple[DiscoverySettings, float]:
    """MEBin settings that find regions on this tiny detector's maps (range: the maps of random frames), and a
    floor (their 80th percentile) that splits them into several regions."""
    with _inspector(bundle, **ANOMALOUS) as probe:
        maps = [probe.inspect(_frame(np.random.default_rng(i))).model_map for i in range(3)]
    settings = DiscoverySettings(grid=4, s_min=float(min(m.min() for m in maps)), s_max=float(max(m.max() for m in maps)),
                                 mebin=MEBinSettings(erode_kernel=0, min_interval_len=1))
    return settings, float(np.quantile(np.stack(maps), 0.8))


def _inspector(bundle: Path, *, backend: Any = None, **kwargs: Any) -> Inspector:
    stages = {k: kwargs.pop(k) for k in ("masker", "regions", "classifier", "rejector") if k in kwargs}
    b = load_bundle(bundle)
    runtime = backend if backend is not None else create_backend("onnxruntime", b, intra_op_threads=1)
    return Inspector(b, runtime, InspectorConfig(threads=1, **kwargs), **stages)


def _frame(rng: np.random.Generator, h: int = 96, w: int = 128) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture()
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Counts of MEBin runs and frame-size map resizes while a test runs."""
    counts = {"mebin": 0, "resize_map": 0}
    real_mebin, real_resize = discovery_crops.mebin, resize_map

    def mebin(*a: Any, **k: Any) -> Any:
        counts["mebin"] += 1
        return real_mebin(*a, **k)

    def resize(*a: Any, **k: Any) -> Any:
        counts["resize_map"] += 1
        return real_resize(*a, **k)

    monkeypatch.setattr(discovery_crops, "mebin", mebin)
    monkeypatch.setattr("protoinspect.sdk.preprocess.resize_map", resize)
    monkeypatch.setattr("protoinspect.sdk.stages.detector.resize_map", resize)
    yield counts


def _classifier(settings: DiscoverySettings) -> tuple[RegionClassifier, FakeClassifierRuntime]:
    runtime = FakeClassifierRuntime()
    return RegionClassifier(runtime, ClassifierSettings(settings, kappa=10.0, classes=CLASSES, spec=SPEC)), runtime


def test_one_region_pass_feeds_defects_and_crops(bundle: Path, counted: dict[str, int], rng: np.random.Generator) -> None:
    settings, floor = _discovery(bundle)
    counted["mebin"] = 0
    regions = MapRegionFinder(RegionSettings(pixel_threshold=floor, min_area_px=1, discovery=settings))
    classifier, runtime = _classifier(settings)
    found: list[Regions] = []
    real_find = regions.find
    regions.find = lambda *a, **k: found.append(real_find(*a, **k)) or found[-1]  # type: ignore[method-assign]
    with _inspector(bundle, regions=regions, classifier=classifier, **ANOMALOUS) as insp:
        result = insp.inspect(_frame(rng))
    assert counted["mebin"] == 1 and len(found) == 1  # one region pass, MEBin once, for defects and crops
    (regs,) = found
    assert regs.mask.shape == (64, 64) and len(result.defects) == len(regs.defects) > 1
    crops = region_crops(regs.mask, settings.crops, regs.labels)
    assert runtime.inputs[0]["tokens"].shape[0] == len(crops)  # every crop of these regions is classified
    for defect, label in zip(result.defects, regs.defect_labels):  # each defect: the crop of its own region
        k = next(i for i, c in enumerate(crops) if label in c.labels)
        assert defect.class_id == k % 3 and defect.class_name == CLASSES[k % 3][0]
    np.testing.assert_array_equal(runtime.inputs[0]["regions"][:, 0] > 0,
                                  np.stack([discovery_crops.crop_regions(regs.mask, np.ones((64, 64), bool), c.box, 4)[0]
                                            for c in crops]) > 0)
    assert counted["resize_map"] == 0 and not result.has_frame_map  # nothing at frame resolution


def test_frame_map_only_when_read_or_configured(bundle: Path, counted: dict[str, int], rng: np.random.Generator) -> None:
    frame = _frame(rng)
    with _inspector(bundle, **ANOMALOUS) as lazy, _inspector(bundle, frame_map=True, **ANOMALOUS) as eager:
        a, b = lazy.inspect(frame), eager.inspect(frame)
        assert counted["resize_map"] == 1 and b.has_frame_map and not a.has_frame_map
        assert b.timings_ms["frame_map"] > 0 and a.timings_ms["frame_map"] == 0.0
    np.testing.assert_array_equal(a.anomaly_map, b.anomaly_map)  # read: made now, equal to the eager one
    assert counted["resize_map"] == 2 and a.anomaly_map is a.anomaly_map and counted["resize_map"] == 2
    np.testing.assert_array_equal(a.anomaly_map, resize_map(a.model_map, (96, 128)))


def test_mask_only_for_frames_that_need_it(bundle: Path, rng: np.random.Generator) -> None:
    frame = _frame(rng)
    masker = CountingMasker()
    with _inspector(bundle, masker=masker, **OK) as insp:
        result = insp.inspect(frame)
    assert masker.calls == 0 and result.mask is None and result.verdict is Verdict.OK
    with _inspector(bundle, masker=masker, mask_every_frame=True, **OK) as insp:
        assert insp.inspect(frame).mask.shape == (96, 128) and masker.calls == 1  # type: ignore[union-attr]
    with _inspector(bundle, masker=masker, **ANOMALOUS) as insp:
        assert insp.inspect(frame).mask is not None and masker.calls == 2


def test_mask_reuse_counts_frames(bundle: Path, rng: np.random.Generator) -> None:
    """A reused mask is never older than mask_reuse_frames frames, whether the frames between needed one or not."""
    frame = _frame(rng)
    masker = CountingMasker()
    with _inspector(bundle, masker=masker, mask_reuse_frames=2, **ANOMALOUS) as insp:
        verdicts = []
        for threshold in (-math.inf, math.inf, -math.inf, math.inf, -math.inf):  # frames 0..4
            insp.image_threshold = threshold
            r = insp.inspect(frame)
            verdicts.append((r.mask is not None, r.mask_reused))
    # frame 0 computes; frame 2 reuses (2 frames old); frame 4 recomputes (4 frames old)
    assert verdicts == [(True, False), (False, False), (True, True), (False, False), (True, False)]
    assert masker.calls == 2


def test_features_are_fetched_only_for_classified_frames(bundle: Path, rng: np.random.Generator) -> None:
    settings, _ = _discovery(bundle)
    b = load_bundle(bundle)
    frame = _frame(rng)
    for thresholds, with_classifier, fetched in ((OK, True, False), (ANOMALOUS, False, False), (ANOMALOUS, True, True)):
        backend = CountingBackend(create_backend("onnxruntime", b, intra_op_threads=1))
        stages: dict[str, Any] = {"regions": MapRegionFinder(RegionSettings(-math.inf, 1, settings))}
        if with_classifier:
            stages["classifier"] = _classifier(settings)[0]
        with _inspector(bundle, backend=backend, **stages, **thresholds) as insp:
            insp.inspect(frame)
        (run,) = backend.runs
        assert ("features" in run.fetched) is fetched
        assert run.fetched[:2] == ["anomaly_map", "score"]


class BoxRegions:
    """A region stage that reports one fixed box (model pixels) as the only region."""

    def __init__(self) -> None:
        self.closed = False

    def find(self, model_map: np.ndarray, frame_size: tuple[int, int], object_mask: np.ndarray | None = None) -> Regions:
        return MapRegionFinder(RegionSettings(0.5, 1)).find(  # the object mask is ignored
            np.pad(np.ones((8, 8), np.float32), ((4, 52), (4, 52))), frame_size)

    def close(self) -> None:
        self.closed = True


class AlwaysScratch:
    def __init__(self) -> None:
        self.seen: list[ClassificationInput] = []

    def classify(self, inputs: ClassificationInput) -> ClassificationOutput:
        self.seen.append(inputs)
        c = RegionClass(0, "scratch", False, 0.1)
        return ClassificationOutput(tuple(c for _ in inputs.defects), c)


def test_stages_are_injected_and_closed(bundle: Path, rng: np.random.Generator) -> None:
    masker, regions, classifier = CountingMasker(), BoxRegions(), AlwaysScratch()
    insp = _inspector(bundle, masker=masker, regions=regions, classifier=classifier, rejector=VmfRejector(0.5),
                      **ANOMALOUS)
    result = insp.inspect(_frame(rng, 128, 128))
    assert [d.bbox_xyxy for d in result.defects] == [(8, 8, 24, 24)]  # model box x2, in frame pixels
    assert result.defects[0].class_name == "scratch" and result.verdict is Verdict.REJECTED  # 0.1 < 0.5
    assert masker.calls == 1 and classifier.seen[0].object_mask.shape == (64, 64)  # type: ignore[union-attr]
    assert insp.describe()["stages"] == {"masker": "CountingMasker", "regions": "BoxRegions",
                                         "classifier": "AlwaysScratch", "rejector": "VmfRejector"}
    insp.close()
    assert regions.closed


def test_from_bundle_takes_stage_overrides(bundle: Path, rng: np.random.Generator) -> None:
    cfg = InspectorConfig(threads=1, **ANOMALOUS)
    with Inspector.from_bundle(bundle, config=cfg, regions=BoxRegions(), classifier=AlwaysScratch()) as insp:
        result = insp.inspect(_frame(rng, 64, 64))
    assert [d.bbox_xyxy for d in result.defects] == [(4, 4, 12, 12)] and result.image_class_name == "scratch"
    with Inspector.from_bundle(bundle, config=cfg) as plain:  # defaults: no masker, threshold regions, no classifier
        info = plain.describe()["stages"]
    assert info == {"masker": None, "regions": "MapRegionFinder", "classifier": None, "rejector": None}


def test_classifier_runtime_closes_with_the_inspector(bundle: Path) -> None:
    classifier, runtime = _classifier(DiscoverySettings())
    _inspector(bundle, classifier=classifier).close()
    assert runtime.closed
