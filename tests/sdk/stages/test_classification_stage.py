"""The classifier / outlier-rejector contracts of the Inspector (sdk/stages/contracts.py; filled by discovery bundles)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from detector_bundles import make_exported_bundle
from protoinspect.sdk import Inspector, InspectorConfig, Verdict
from protoinspect.sdk.backends.registry import create_backend
from protoinspect.sdk.bundle import load_bundle
from protoinspect.sdk.errors import ConfigError
from protoinspect.sdk.preprocess import PreprocessSpec
from protoinspect.sdk.stages.contracts import ClassificationInput, ClassificationOutput, RegionClass, apply_classes

SMALL = {"num_prototypes": 16, "embed_dim": 32, "num_heads": 2, "blur_sigma": 1.0}
SPEC = PreprocessSpec(image_size=(64, 64), mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_exported_bundle(tmp_path_factory.mktemp("cls") / "b", np.random.default_rng(5), SPEC, **SMALL)


class LargestIsNovel:
    """Test classifier: the largest region is novel class 1, the others known class 0."""

    def __init__(self) -> None:
        self.seen: list[ClassificationInput] = []

    def classify(self, inputs: ClassificationInput) -> ClassificationOutput:
        self.seen.append(inputs)
        largest = max(range(len(inputs.defects)), key=lambda i: inputs.defects[i].area_px, default=None)
        regions = tuple(RegionClass(1, "new-1", True, 0.9) if i == largest else RegionClass(0, "scratch", False, 0.5)
                        for i in range(len(inputs.defects)))
        return ClassificationOutput(regions, regions[largest] if largest is not None else None)


class RejectNovel:
    def is_outlier(self, output: ClassificationOutput) -> bool:
        return output.image_class is not None and output.image_class.is_novel


def _inspector(bundle: Path, threshold: float, **kwargs: object) -> Inspector:
    b = load_bundle(bundle)
    cfg = InspectorConfig(image_threshold=threshold, pixel_threshold=-math.inf, min_defect_area_px=1, masker="none", threads=1)
    return Inspector(b, create_backend("onnxruntime", b), cfg, **kwargs)  # type: ignore[arg-type]


def test_classifier_fills_defects_and_rejector_rejects(bundle: Path, rng: np.random.Generator) -> None:
    frame = rng.integers(0, 256, (80, 120, 3), dtype=np.uint8)
    clf = LargestIsNovel()
    with _inspector(bundle, -math.inf, classifier=clf) as insp:
        result = insp.inspect(frame)
    assert result.verdict is Verdict.ANOMALOUS and result.defects
    assert result.defects[0].class_name == "new-1" and result.defects[0].is_novel
    assert result.defects[0].class_score == pytest.approx(0.9)
    assert (result.image_class_id, result.image_class_name) == (1, "new-1")
    assert result.to_dict()["image_class_name"] == "new-1"
    seen = clf.seen[0]
    assert seen.frame.shape == frame.shape and seen.object_mask is None  # masker "none"
    assert seen.detection.model_map.shape == (64, 64) and seen.detection.frame_map().shape == frame.shape[:2]
    assert seen.defects == seen.regions.defects and len(seen.regions.defect_labels) == len(seen.defects)
    assert result.timings_ms["classify"] > 0.0
    with _inspector(bundle, -math.inf, classifier=LargestIsNovel(), rejector=RejectNovel()) as insp:
        assert insp.inspect(frame).verdict is Verdict.REJECTED


def test_ok_frames_are_not_classified(bundle: Path, rng: np.random.Generator) -> None:
    clf = LargestIsNovel()
    with _inspector(bundle, math.inf, classifier=clf, rejector=RejectNovel()) as insp:
        result = insp.inspect(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert result.verdict is Verdict.OK and not clf.seen and result.timings_ms["classify"] == 0.0
    assert result.image_class_id is None


def test_without_classifier_regions_have_no_class(bundle: Path, rng: np.random.Generator) -> None:
    with _inspector(bundle, -math.inf) as insp:
        result = insp.inspect(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert result.defects and all(d.class_id is None and d.class_name is None and d.class_score is None
                                  for d in result.defects)
    assert result.image_class_name is None


def test_rejector_needs_classifier(bundle: Path) -> None:
    b = load_bundle(bundle)
    backend = create_backend("onnxruntime", b)
    try:
        with pytest.raises(ConfigError, match="needs a classifier"):
            Inspector(b, backend, rejector=RejectNovel())  # type: ignore[arg-type]
    finally:
        backend.close()


def test_apply_classes_checks_length() -> None:
    with pytest.raises(ValueError, match="1 region classes for 0 defects"):
        apply_classes((), ClassificationOutput((None,), None))
