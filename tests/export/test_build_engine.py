"""export/build_engine.py and its pure parts: options, TensorRT 10/11 branching, calibration data, fp16
conversion, parity, and the whole build on fake tensorrt / pycuda modules (tests/fake_tensorrt.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import fake_tensorrt as fake
import numpy as np
import pytest
from detector_bundles import make_exported_bundle

from protoinspect.export.build_engine import build_engine, main
from protoinspect.export.trt_calibration import (
    calibration_batches,
    calibration_images,
    make_entropy_calibrator,
    model_inputs,
    read_frame,
)
from protoinspect.export.trt_config import BuildOptions, EngineBuildError, fast_precisions, onnx_facts, plan_build, profile_shapes
from protoinspect.export.trt_parity import PARITY_TOLERANCES, batch_slices, compare_outputs
from protoinspect.sdk.bundle import load_bundle
from protoinspect.sdk.errors import ConfigError, InputError, MissingDependencyError
from protoinspect.sdk.preprocess import PreprocessSpec, resize_to_rgb

ROOT = Path(__file__).resolve().parents[2]
NEEDS_GPU = "needs TensorRT and a CUDA GPU"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_exported_bundle(tmp_path_factory.mktemp("trt") / "bundle", np.random.default_rng())


@pytest.fixture()
def bundle(exported: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported, tmp_path / "bundle"))


@pytest.fixture()
def calib_dir(tmp_path: Path, rng: np.random.Generator) -> Path:
    import cv2

    root = tmp_path / "calib"
    (root / "sub").mkdir(parents=True)
    for i in range(5):
        cv2.imwrite(str(root / f"{i}.png"), rng.integers(0, 256, (48 + i, 80, 3), dtype=np.uint8))
    cv2.imwrite(str(root / "sub" / "gray.png"), rng.integers(0, 256, (100, 90), dtype=np.uint8))
    cv2.imwrite(str(root / ".hidden.png"), rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    (root / "notes.txt").write_text("not an image")
    return root


def install(monkeypatch: pytest.MonkeyPatch, version: str = "10.3.0", cc: tuple[int, int] = (8, 7), **kw: object):
    trt, cuda = fake.make_trt(version, **kw), fake.make_cuda(cc)  # type: ignore[arg-type]
    fake.install(monkeypatch, trt, cuda)
    return trt, cuda


def builds(trt: object) -> list[dict]:
    return [c[1] for c in trt.calls if isinstance(c, tuple) and c[0] == "build"]  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------- options
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"precision": "fp8"}, "precision must be one of"), ({"max_batch": 0}, "max_batch"),
    ({"max_batch": 4, "opt_batch": 5}, "opt_batch"), ({"workspace_gib": -1.0}, "workspace_gib"),
    ({"workspace_gib": float("nan")}, "workspace_gib"), ({"builder_optimization_level": 6}, "0..5"),
    ({"precision": "fp32", "dla_core": 0}, "DLA runs fp16 or int8"), ({"dla_core": -1}, "dla_core"),
    ({"calib_dir": Path("/no/such/dir")}, "not a folder"), ({"calib_images": 0}, "calib_images"),
])
def test_options_reject_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BuildOptions(**kwargs)


def test_options_timing_cache_must_be_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        BuildOptions(timing_cache=tmp_path)
    assert BuildOptions(workspace_gib=0.5).workspace_bytes == 1 << 29


# ------------------------------------------------------------------------------------------- branching
def plan(version: str, precision: str = "fp16", *, qdq: bool = False, fp16: bool = True, int8: bool = True,
         dla: int = 0, **opts: object):
    return plan_build(version, BuildOptions(precision=precision, **opts), onnx_name="detector.onnx",
                      onnx_has_qdq=qdq, onnx_has_fp16=False, fast_fp16=fp16, fast_int8=int8, num_dla_cores=dla)


def test_trt10_uses_builder_flags(calib_dir: Path) -> None:
    assert plan("10.3.0", "fp32").builder_flags == () and not plan("10.3.0", "fp32").strongly_typed
    p16 = plan("10.3.0", "fp16")
    assert (p16.builder_flags, p16.strongly_typed, p16.convert_fp16, p16.calibrate) == (("FP16",), False, False, False)
    p8 = plan("10.3.0", "int8", calib_dir=calib_dir)
    assert p8.builder_flags == ("INT8", "FP16") and p8.calibrate
    explicit = plan("10.8.1", "int8", qdq=True)
    assert explicit.builder_flags == ("INT8", "FP16") and not explicit.calibrate


def test_trt10_int8_without_qdq_needs_calibration_images() -> None:
    with pytest.raises(EngineBuildError, match="--calib-dir"):
        plan("10.3.0", "int8")


def test_trt11_is_strongly_typed_without_precision_flags() -> None:
    p = plan("11.0.0", "fp16")
    assert p.strongly_typed and p.builder_flags == () and p.convert_fp16 and not p.calibrate
    assert plan("11.4.1", "int8", qdq=True).strongly_typed
    with pytest.raises(EngineBuildError, match="QuantizeLinear/DequantizeLinear.*ModelOpt"):
        plan("11.0.0", "int8")


def test_platform_precision_and_fallback() -> None:
    with pytest.raises(EngineBuildError, match="--allow-precision-fallback"):
        plan("10.3.0", "fp16", fp16=False)
    p = plan("10.3.0", "fp16", fp16=False, allow_precision_fallback=True)
    assert p.precision == "fp32" and p.builder_flags == () and "fallback" in p.notes[0]
    assert plan("10.3.0", "int8", int8=False, allow_precision_fallback=True).precision == "fp16"
    with pytest.raises(EngineBuildError, match="too old"):
        plan("8.6.1")


def test_dla_decisions() -> None:
    with pytest.raises(EngineBuildError, match="no DLA"):
        plan("10.3.0", dla_core=0, dla=0)
    with pytest.raises(EngineBuildError, match="cores 0..1"):
        plan("10.3.0", dla_core=2, dla=2)
    p = plan("10.3.0", dla_core=1, dla=2)
    assert p.builder_flags == ("FP16", "GPU_FALLBACK") and p.dla_core == 1
    with pytest.raises(EngineBuildError, match="falls back to fp32"):
        plan("10.3.0", dla_core=0, dla=2, fp16=False, allow_precision_fallback=True)


def test_fast_precisions_from_builder_or_compute_capability() -> None:
    class Old:
        platform_has_fast_fp16, platform_has_fast_int8 = False, True

    assert fast_precisions(Old(), "8.7") == (False, True)
    assert fast_precisions(object(), "8.7") == (True, True)
    assert fast_precisions(object(), "6.1") == (False, True)
    assert fast_precisions(object(), "5.0") == (False, False)


def test_profile_and_onnx_facts(exported: Path) -> None:
    import onnx

    facts = onnx_facts(onnx.load(str(exported / "detector.onnx")))
    assert facts["inputs"] == [("image", [None, 64, 64, 3])] and not facts["has_qdq"] and not facts["has_fp16"]
    shapes = profile_shapes(facts["inputs"], BuildOptions(max_batch=16, opt_batch=4))
    assert shapes == {"image": {"min": [1, 64, 64, 3], "opt": [4, 64, 64, 3], "max": [16, 64, 64, 3]}}
    with pytest.raises(EngineBuildError, match="only the batch axis"):
        profile_shapes([("image", [None, None, 64, 3])], BuildOptions())


# ------------------------------------------------------------------------------------------- calibration
def test_calibration_images_are_found_sorted_and_limited(calib_dir: Path) -> None:
    found = calibration_images(calib_dir, 100)
    assert [p.name for p in found] == ["0.png", "1.png", "2.png", "3.png", "4.png", "gray.png"]
    few = calibration_images(calib_dir, 3)
    assert len(few) == 3 and few[0].name == "0.png" and few[-1].name == "gray.png"
    (calib_dir / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no images"):
        calibration_images(calib_dir / "empty", 1)


def test_calibration_batches_are_the_runtime_preprocessing(calib_dir: Path) -> None:
    import cv2

    spec = PreprocessSpec(image_size=(32, 48))
    paths = calibration_images(calib_dir, 100)
    batches = list(calibration_batches(paths, spec, 4))
    assert len(batches) == 1  # 6 images, batch 4: the incomplete tail is dropped
    b = batches[0]
    assert b.shape == (4, 32, 48, 3) and b.dtype == np.uint8 and b.flags.c_contiguous
    for i, p in enumerate(paths[:4]):
        expected = resize_to_rgb(cv2.imread(str(p), cv2.IMREAD_UNCHANGED), spec, "bgr")
        np.testing.assert_array_equal(b[i], expected)
    gray = read_frame(paths[-1])
    assert gray.ndim == 2
    np.testing.assert_array_equal(model_inputs([paths[-1]], spec)[0], resize_to_rgb(gray, spec, "bgr"))
    bad = calib_dir / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="cannot decode"):
        read_frame(bad)


def test_entropy_calibrator_serves_batches_through_device_memory(monkeypatch: pytest.MonkeyPatch,
                                                                 rng: np.random.Generator) -> None:
    trt, cuda = install(monkeypatch)
    batches = [rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8) for _ in range(3)]
    cal = make_entropy_calibrator(trt, cuda, iter(batches), (2, 8, 8, 3))
    assert isinstance(cal, trt.IInt8EntropyCalibrator2) and cal.get_batch_size() == 2
    for expected in batches:
        (ptr,) = cal.get_batch(["image"])
        np.testing.assert_array_equal(fake.MEMORY[ptr][: expected.size].reshape(expected.shape), expected)
    assert cal.get_batch(["image"]) is None and cal.batches_served == 3
    assert cal.read_calibration_cache() is None
    cal.write_calibration_cache(b"table")
    assert cal.cache == b"table" and len(cal.cache_sha256) == 64
    bad = make_entropy_calibrator(trt, cuda, iter([np.zeros((1, 8, 8, 3), np.uint8)]), (2, 8, 8, 3))
    with pytest.raises(InputError, match="expected"):
        bad.get_batch(["image"])
    with pytest.raises(ConfigError, match="removed in 11"):
        make_entropy_calibrator(fake.make_trt("11.0.0"), cuda, iter([]), (1, 8, 8, 3))


# ------------------------------------------------------------------------------------------- fp16 and parity
def test_fp16_conversion_keeps_io_types_and_matches_fp32(exported: Path, rng: np.random.Generator) -> None:
    import onnx
    import onnxruntime as ort

    from protoinspect.export.onnx_fp16 import convert_to_fp16

    model = onnx.load(str(exported / "detector.onnx"))
    half = convert_to_fp16(model)
    assert {i.data_type for i in half.graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert [(v.name, v.type.tensor_type.elem_type) for v in half.graph.input] == [("image", onnx.TensorProto.UINT8)]
    assert {v.type.tensor_type.elem_type for v in half.graph.output} == {onnx.TensorProto.FLOAT}
    assert onnx_facts(half)["has_fp16"]
    kept = [n for n in half.graph.node if n.op_type == "ReduceSum"]
    assert kept and all(i.endswith("__to_fp32") for n in kept for i in n.input[:1])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    frames = {"image": rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)}
    s32 = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    s16 = ort.InferenceSession(half.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in s32.get_outputs()]
    report = compare_outputs(dict(zip(names, s32.run(names, frames))), dict(zip(names, s16.run(names, frames))), "fp16")
    assert report["passed"], report["failed"]
    assert max(report["max_abs_diff"].values()) > 0  # really computed in float16


def test_fp16_conversion_refuses_values_beyond_fp16(exported: Path) -> None:
    import onnx
    from onnx import numpy_helper

    from protoinspect.export.onnx_fp16 import convert_to_fp16

    model = onnx.load(str(exported / "detector.onnx"))
    init = next(i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and i.dims)
    init.CopyFrom(numpy_helper.from_array(np.full(tuple(init.dims), 1e6, np.float32), init.name))
    with pytest.raises(EngineBuildError, match="beyond float16's range.*modelopt"):
        convert_to_fp16(model)


def test_compare_outputs_and_tolerances() -> None:
    ref = {"anomaly_map": np.full((2, 1, 4, 4), 5.0, np.float32), "score": np.array([1.0, 2.0], np.float32)}
    assert PARITY_TOLERANCES["fp32"] < PARITY_TOLERANCES["fp16"] < PARITY_TOLERANCES["int8"]
    assert compare_outputs(ref, ref, "fp32")["passed"]
    near = {"anomaly_map": ref["anomaly_map"] + 0.1, "score": ref["score"]}  # 0.1 = 2e-2 x scale 5
    assert compare_outputs(near, ref, "fp16")["passed"] and not compare_outputs(ref, near, "fp32")["passed"]
    r = compare_outputs(ref, {"anomaly_map": ref["anomaly_map"][:1], "score": np.array([np.nan, 2.0])}, "int8")
    assert not r["passed"] and any("shape" in f for f in r["failed"]) and any("non-finite" in f for f in r["failed"])
    assert "missing" in compare_outputs(ref, {"score": ref["score"]}, "fp32")["failed"][0]
    assert batch_slices(7, 8) == [slice(0, 1), slice(1, 4), slice(4, 5), slice(5, 7)]
    assert batch_slices(3, 1) == [slice(0, 1), slice(1, 2), slice(2, 3)]


# ------------------------------------------------------------------------------------------- whole build (fakes)
def test_build_trt10_fp16_adds_engine_sidecar_and_timing_cache(bundle: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    trt, cuda = install(monkeypatch, "10.3.0")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    (result,) = build_engine(bundle, precision="fp16", timing_cache=cache, max_batch=4, opt_batch=2,
                             builder_optimization_level=5, workspace_gib=1.0)
    (call,) = builds(trt)
    assert call["flags"] == ["FP16"] and ("create_network", 0) in trt.calls
    assert call["profiles"] == [{"image": [[1, 64, 64, 3], [2, 64, 64, 3], [4, 64, 64, 3]]}]
    assert call["opt_level"] == 5 and call["pool"] == [1 << 30] and call["device"] == "GPU"
    assert cache.read_bytes() == b"old+"  # loaded, then saved after the build
    loaded = load_bundle(bundle)  # every sha256 verified
    name = "detector.fp16.sm87.engine"
    assert result["engine_file"] == name and name in loaded.manifest.files
    sidecar = json.loads(loaded.read_bytes(name + ".json"))
    assert sidecar["tensorrt_version"] == "10.3.0" and sidecar["compute_capability"] == "8.7"
    assert sidecar["gpu_name"] == "Orin" and sidecar["precision"] == "fp16" and sidecar["dla_core"] is None
    assert sidecar["onnx_sha256"] == loaded.manifest.files["detector.onnx"]["sha256"]
    assert sidecar["profile"]["image"]["max"] == [4, 64, 64, 3] and sidecar["builder"]["flags"] == ["FP16"]
    assert sidecar["parity"]["passed"] and sidecar["parity"]["tolerance"] == PARITY_TOLERANCES["fp16"]
    assert loaded.manifest.extra["tensorrt"]["engines"][name]["sidecar"] == name + ".json"


def test_build_trt11_fp16_is_strongly_typed_and_converted(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trt, _ = install(monkeypatch, "11.0.0")
    (result,) = build_engine(bundle, precision="fp16")
    strong = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert ("create_network", strong) in trt.calls and builds(trt)[0]["flags"] == []
    assert result["builder"]["onnx_converted_fp16"] and result["builder"]["strongly_typed"]
    assert result["parity"]["passed"] and max(result["parity"]["max_abs_diff"].values()) > 0  # fp16 engine vs fp32
    del trt.NetworkDefinitionCreationFlag  # a TensorRT without the (always-on) flag
    build_engine(bundle, precision="fp16", verify=False)
    assert trt.calls[-2] == ("create_network", 0)


def test_build_trt11_int8_without_qdq_is_refused(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, "11.0.0")
    before = (bundle / "manifest.json").read_text()
    with pytest.raises(EngineBuildError, match="Q/DQ|QuantizeLinear"):
        build_engine(bundle, precision="int8")
    assert (bundle / "manifest.json").read_text() == before


def test_build_trt10_int8_calibrates_with_preprocessed_images(bundle: Path, calib_dir: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    trt, _ = install(monkeypatch, "10.3.0")
    (result,) = build_engine(bundle, precision="int8", calib_dir=calib_dir, max_batch=4)
    (call,) = builds(trt)
    assert call["flags"] == ["INT8", "FP16"]
    spec = load_bundle(bundle).manifest.preprocess_spec
    paths = calibration_images(calib_dir, 64)
    served = np.concatenate(call["calibration_batches"])
    np.testing.assert_array_equal(served, model_inputs(paths[:4], spec))
    assert result["builder"]["calibration"]["batches"] == 1 and result["builder"]["calibration"]["cache_sha256"]


def test_failed_parity_leaves_bundle_unchanged(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, "10.3.0", noise=1.0)
    before = (bundle / "manifest.json").read_text()
    with pytest.raises(EngineBuildError, match="disagrees with ONNX Runtime.*not changed"):
        build_engine(bundle, precision="fp32")
    assert (bundle / "manifest.json").read_text() == before and not list(bundle.glob("*.engine"))


def test_build_on_dla_and_precision_fallback(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trt, _ = install(monkeypatch, "10.3.0", dla_cores=2)
    (result,) = build_engine(bundle, precision="fp16", dla_core=1, verify=False)
    call = builds(trt)[0]
    assert call["device"] == "DLA" and call["dla_core"] == 1 and call["flags"] == ["FP16", "GPU_FALLBACK"]
    assert result["dla_core"] == 1 and "parity" not in result
    install(monkeypatch, "10.3.0", fast_fp16=False)
    with pytest.raises(EngineBuildError, match="allow-precision-fallback"):
        build_engine(bundle, precision="fp16")
    (fallback,) = build_engine(bundle, precision="fp16", allow_precision_fallback=True)
    assert fallback["engine_file"] == "detector.fp32.sm87.engine" and fallback["builder"]["requested_precision"] == "fp16"


def test_missing_tensorrt_names_the_install(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match=r"protoinspect\[tensorrt\]"):
        build_engine(bundle, precision="fp16")
    assert main([str(bundle), "--precision", "fp16"]) == 2


def test_cli_exit_codes(bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(bundle), "--precision", "fp16", "--max-batch", "0"]) == 2
    assert "max_batch" in capsys.readouterr().err
    install(monkeypatch, "10.3.0", noise=1.0)
    assert main([str(bundle), "--precision", "fp16"]) == 1
    install(monkeypatch, "10.3.0")
    assert main([str(bundle), "--precision", "fp16"]) == 0
    assert "detector.fp16.sm87.engine: TensorRT 10.3.0" in capsys.readouterr().out


@pytest.mark.parametrize("form", [["export/build_engine.py"], ["-m", "protoinspect.export.build_engine"]])
def test_cli_runs_as_script_and_module(form: list[str]) -> None:
    proc = subprocess.run([sys.executable, *form, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--precision {fp32,fp16,int8}" in proc.stdout and "--allow-precision-fallback" in proc.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not fake.real_tensorrt_gpu(), reason=NEEDS_GPU)
def test_real_tensorrt_build_and_parity(bundle: Path) -> None:
    results = build_engine(bundle, precision="fp16")
    assert results[0]["parity"]["passed"] and load_bundle(bundle).manifest.extra["tensorrt"]["engines"]
