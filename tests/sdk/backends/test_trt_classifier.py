"""sdk/backends/trt_classifier.py: the classifier engine export/build_engine.py builds is what the TensorRT
backend's Inspector classifies with (on fake tensorrt / pycuda modules whose engines run on ONNX Runtime)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from fake_engine_bundles import FakeModules, FakeTensorRT, install_fakes, with_fake_engines

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from protoinspect.sdk import Inspector, InspectorConfig
from protoinspect.sdk.backends.registry import create_classifier_backend
from protoinspect.sdk.backends.trt_classifier import TensorRTClassifier
from protoinspect.sdk.bundle import load_bundle
from protoinspect.sdk.errors import BundleError, ConfigError, InputError


@pytest.fixture(scope="module")
def engine_bundle(discovery_bundle: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The discovery bundle with fake TensorRT 10.3 fp16 engines (detector and classifier) for sm 8.7, max batch 4."""
    return with_fake_engines(Path(shutil.copytree(discovery_bundle[1], tmp_path_factory.mktemp("trt-clf") / "bundle")))


@pytest.fixture()
def trt(monkeypatch: pytest.MonkeyPatch) -> FakeModules:
    """Fake tensorrt 10.3 and pycuda (sm 8.7): ``(trt, cuda)``."""
    return install_fakes(monkeypatch)


def _crops(rng: np.random.Generator, bundle: Path, n: int) -> dict[str, np.ndarray]:
    config = load_bundle(bundle).manifest.discovery.classifier.config  # type: ignore[union-attr]
    g, c = config.grid, config.in_channels
    crops = {"tokens": rng.standard_normal((n, c, g, g)).astype(np.float32),
             "regions": rng.uniform(0, 1, (n, 2, g, g)).astype(np.float32)}
    if config.descriptor_dim:
        crops["descriptors"] = rng.standard_normal((n, config.descriptor_dim)).astype(np.float32)
    return crops


def test_classifier_engine_runs_like_onnxruntime(engine_bundle: Path, trt: FakeModules,
                                                 rng: np.random.Generator) -> None:
    crops = _crops(rng, engine_bundle, 9)  # 9 > max batch 4: chunks
    with create_classifier_backend("onnxruntime", engine_bundle) as ort_clf, \
            create_classifier_backend("tensorrt", engine_bundle, device="cuda:0") as trt_clf:
        assert isinstance(trt_clf, TensorRTClassifier) and trt_clf.engine_file == "classifier.fp16.sm87.engine"
        np.testing.assert_allclose(trt_clf.run(crops)["logits"], ort_clf.run(crops)["logits"], rtol=1e-5, atol=1e-5)
        assert trt_clf.describe()["batch_range"] == [1, 4]
        with pytest.raises(InputError, match="tokens"):
            trt_clf.run({**crops, "tokens": crops["tokens"][:2], "regions": crops["regions"][:3]})


def test_tensorrt_inspector_classifies_with_the_engine(engine_bundle: Path, trt: FakeModules,
                                                       discovery_tile: Path) -> None:
    frames = [cv2.imread(str(p)) for p in sorted((discovery_tile / "test").glob("*/*.png"))[:3]]
    cfg = InspectorConfig(image_threshold=-math.inf, pixel_threshold=-math.inf)
    with Inspector.from_bundle(engine_bundle, backend="tensorrt", device="cuda:0", config=cfg) as insp:
        info = insp.describe()
        assert info["stages"]["classifier_runtime"]["engine_file"] == "classifier.fp16.sm87.engine"
        on_trt = [insp.inspect(f) for f in frames]
    with Inspector.from_bundle(engine_bundle, backend="onnxruntime", config=cfg) as reference:
        on_ort = [reference.inspect(f) for f in frames]
    for a, b in zip(on_trt, on_ort):
        assert a.image_class_name is not None and a.image_class_name == b.image_class_name
        assert [d.class_name for d in a.defects] == [d.class_name for d in b.defects]


def test_detector_features_leave_the_gpu_only_for_classified_frames(engine_bundle: Path, trt: FakeModules,
                                                                    discovery_tile: Path) -> None:
    fake_trt, cuda = trt
    frame = cv2.imread(str(min((discovery_tile / "test").glob("*/*.png"))))
    for image_threshold, classified in ((math.inf, False), (-math.inf, True)):
        cfg = InspectorConfig(image_threshold=image_threshold, pixel_threshold=-math.inf)
        with Inspector.from_bundle(engine_bundle, backend="tensorrt", device="cuda:0", config=cfg) as insp:
            cuda.log.clear()
            result = insp.inspect(frame)
        detector = [c for c in fake_trt.contexts if "features" in c.addresses][-1]
        assert (("dtoh", detector.addresses["features"]) in cuda.log) is classified
        assert (result.image_class_name is not None) is classified


def test_missing_or_foreign_classifier_engine_names_the_build(engine_bundle: Path, monkeypatch: pytest.MonkeyPatch,
                                                              discovery_bundle: tuple[Path, Path]) -> None:
    install_fakes(monkeypatch, FakeTensorRT(compute_capability=(9, 0)))
    with pytest.raises(BundleError, match="no TensorRT engine of classifier.onnx.*build_engine.py"):
        TensorRTClassifier(engine_bundle)
    install_fakes(monkeypatch)
    with pytest.raises(BundleError, match="no defect classifier"):
        TensorRTClassifier(discovery_bundle[0])
    with pytest.raises(ConfigError, match="unknown classifier backend"):
        create_classifier_backend("auto", engine_bundle)
