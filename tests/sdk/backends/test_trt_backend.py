"""sdk/backends/trt_backend.py, trt_runtime.py and trt_sidecar.py: the registry name, sidecar checks with the
rebuild command, and the backend on fake tensorrt / pycuda modules (engines that run on ONNX Runtime)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import fake_tensorrt as fake
import numpy as np
import pytest
from detector_bundles import make_detector_bundle, make_exported_bundle
from fake_engine_bundles import FakeTensorRT, install_fakes

from protoinspect.export.build_engine import build_engine
from protoinspect.sdk.backends.registry import BACKENDS, create_backend, resolve_backend_name
from protoinspect.sdk.backends.trt_sidecar import (
    check_sidecar,
    engine_file_name,
    make_sidecar,
    read_sidecar,
    rebuild_command,
    select_engine,
    version_key,
)
from protoinspect.sdk.bundle import load_bundle
from protoinspect.sdk.errors import BackendError, BundleError, ConfigError, InputError, MissingDependencyError

NEEDS_GPU = "needs TensorRT and a CUDA GPU"
SHA = "a" * 64


def sidecar(**overrides: object) -> dict:
    fields = dict(engine_file="detector.fp16.sm87.engine", onnx_file="detector.onnx", onnx_sha256=SHA,
                  tensorrt_version="10.3.0.30", gpu_name="Orin", compute_capability="8.7", precision="fp16",
                  profile={"image": {"min": [1, 64, 64, 3], "opt": [1, 64, 64, 3], "max": [16, 64, 64, 3]}},
                  dla_core=0, built_utc="2026-01-01T00:00:00Z", builder={"max_batch": 16})
    fields.update(overrides)
    return make_sidecar(**fields)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- registry
def test_registry_knows_tensorrt_but_auto_never_picks_it(trt_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert BACKENDS["tensorrt"] == "protoinspect.sdk.backends.trt_backend:TensorRTBackend"
    assert resolve_backend_name("tensorrt", trt_bundle) == "tensorrt"
    install_fakes(monkeypatch)  # tensorrt "installed" and an engine in the bundle: auto still picks onnxruntime
    assert resolve_backend_name("auto", trt_bundle) == "onnxruntime"
    with pytest.raises(ConfigError, match="auto, onnxruntime, torch, tensorrt"):
        resolve_backend_name("trt", trt_bundle)


def test_missing_tensorrt_or_pycuda_names_the_install(trt_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match=r"tensorrt.*protoinspect\[tensorrt\]"):
        create_backend("tensorrt", trt_bundle)
    install_fakes(monkeypatch)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(MissingDependencyError, match=r"pycuda.*protoinspect\[tensorrt\]"):
        create_backend("tensorrt", trt_bundle)


# ------------------------------------------------------------------------------------------- sidecar
def test_names_versions_and_rebuild_command() -> None:
    assert engine_file_name("detector.onnx", "int8", "8.7") == "detector.int8.sm87.engine"
    assert version_key("10.3.0.30") == (10, 3, 0) and version_key("11.0") == (11, 0, 0)
    assert version_key("10.13.0rc1") == (10, 13, 0)
    with pytest.raises(ConfigError):
        version_key("unknown")
    assert rebuild_command("/b/my line", "int8", dla_core=0, max_batch=16, calib_dir="/imgs") == (
        "python export/build_engine.py '/b/my line' --precision int8 --calib-dir /imgs --dla 0 --max-batch 16")
    assert rebuild_command("b", "fp16") == "python export/build_engine.py b --precision fp16"


def test_sidecar_round_trip_and_corruption() -> None:
    data = json.dumps(sidecar()).encode()
    assert read_sidecar(data, "x.json")["compute_capability"] == "8.7"
    with pytest.raises(BundleError, match="not valid JSON"):
        read_sidecar(b"{oops", "x.json")
    broken = sidecar()
    del broken["onnx_sha256"]
    with pytest.raises(BundleError, match=r"lacks \['onnx_sha256'\]"):
        read_sidecar(json.dumps(broken).encode(), "x.json")
    with pytest.raises(BundleError, match="invalid.*precision"):
        read_sidecar(json.dumps({**sidecar(), "precision": "fp8"}).encode(), "x.json")
    with pytest.raises(BundleError, match="format_version"):
        read_sidecar(json.dumps({**sidecar(), "format_version": 99}).encode(), "x.json")


@pytest.mark.parametrize(("running", "message"), [
    ({"tensorrt_version": "10.4.0"}, "built with TensorRT 10.3.0.30, this is TensorRT 10.4.0"),
    ({"tensorrt_version": "10.3.1"}, "this is TensorRT 10.3.1"),
    ({"compute_capability": "9.0"}, "built for compute capability 8.7 \\(Orin\\), this GPU is 9.0"),
    ({"onnx_sha256": "b" * 64}, "built from a different detector.onnx"),
])
def test_check_sidecar_refuses_mismatch_with_the_rebuild_command(running: dict, message: str) -> None:
    args = {"tensorrt_version": "10.3.0.26", "compute_capability": "8.7", "onnx_sha256": SHA, **running}
    with pytest.raises(BundleError, match=message) as info:
        check_sidecar(sidecar(), bundle_dir="/data/bundle", **args)
    assert str(info.value).endswith(
        "Rebuild it on this machine with `python export/build_engine.py /data/bundle --precision fp16 --dla 0 "
        "--max-batch 16`")


def test_check_sidecar_accepts_a_match() -> None:
    check_sidecar(sidecar(), bundle_dir="b", tensorrt_version="10.3.0.26", compute_capability="8.7", onnx_sha256=SHA)


def test_select_engine() -> None:
    from protoinspect.sdk.config_codec import from_dict
    from protoinspect.sdk.manifest_sections import TensorRTSection

    entry = {"onnx_file": "detector.onnx", "precision": "fp16", "compute_capability": "8.7"}
    extra = from_dict(TensorRTSection, {"engines": {"a.engine": entry, "b.engine": {**entry, "precision": "int8"},
                                                    "c.engine": {**entry, "compute_capability": "9.0"}}})
    with pytest.raises(BundleError, match="engines present: none"):
        select_engine(None, "detector.onnx", "9.0", bundle_dir="b")
    assert select_engine(extra, "detector.onnx", "9.0", bundle_dir="b") == "c.engine"
    assert select_engine(extra, "detector.onnx", "8.7", bundle_dir="b", precision="int8") == "b.engine"
    with pytest.raises(ConfigError, match="several engines"):
        select_engine(extra, "detector.onnx", "8.7", bundle_dir="b")
    with pytest.raises(ConfigError, match="no engine 'z.engine'"):
        select_engine(extra, "detector.onnx", "8.7", bundle_dir="b", engine="z.engine")
    with pytest.raises(BundleError, match="compute capability 8.6.*python export/build_engine.py b --precision fp16"):
        select_engine(extra, "detector.onnx", "8.6", bundle_dir="b")


# ------------------------------------------------------------------------------------------- backend (fakes)
def reference(bundle: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    with create_backend("onnxruntime", bundle, intra_op_threads=1) as ort_backend:
        return ort_backend.run({"image": images})


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_backend_runs_any_batch_like_onnxruntime(trt_bundle: Path, monkeypatch: pytest.MonkeyPatch,
                                                 rng: np.random.Generator, cuda_graph: bool) -> None:
    _, cuda = install_fakes(monkeypatch)
    images = rng.integers(0, 256, (9, 64, 64, 3), dtype=np.uint8)
    expected = reference(trt_bundle, images)
    with create_backend("tensorrt", trt_bundle, device="cuda:0", cuda_graph=cuda_graph) as backend:
        assert backend.output_names == ("anomaly_map", "score", "features")
        for n in (1, 3, 9):  # 9 > max batch 4: run in chunks
            out = backend.run({"image": images[:n]})
            for name in backend.output_names:
                np.testing.assert_allclose(out[name], expected[name][:n], rtol=1e-6, atol=1e-6)
        backend.run({"image": images[:1]})
        info = backend.describe()
        assert info["engine_file"] == "detector.fp16.sm87.engine" and info["batch_range"] == [1, 4]
        assert info["precision"] == "fp16" and info["compute_capability"] == "8.7" and info["cuda_graph"] is cuda_graph
        with pytest.raises(InputError, match="64x64"):
            backend.run({"image": images[:1, :32]})
    captures = cuda.log.count("begin_capture")
    assert captures == (3 if cuda_graph else 0)  # one graph per batch size seen: 1, 3 and 4 (9 = 4 + 4 + 1)
    assert (cuda.log.count("graph_launch") > captures) is cuda_graph  # later runs replay
    with pytest.raises(BackendError, match="closed"):
        backend.run({"image": images[:1]})


def test_backend_refuses_other_tensorrt_version(trt_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fakes(monkeypatch, FakeTensorRT("10.4.0"))
    with pytest.raises(BundleError, match="TensorRT 10.3.0, this is TensorRT 10.4.0") as info:
        create_backend("tensorrt", trt_bundle)
    assert f"`python export/build_engine.py {trt_bundle} --precision fp16 --max-batch 4`" in str(info.value)


def test_backend_refuses_other_gpu_and_stale_onnx(trt_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fakes(monkeypatch, FakeTensorRT(compute_capability=(9, 0)))
    with pytest.raises(BundleError, match="no TensorRT engine of detector.onnx for this GPU.*build_engine.py"):
        create_backend("tensorrt", trt_bundle)
    with pytest.raises(BundleError, match="built for compute capability 8.7"):
        create_backend("tensorrt", trt_bundle, engine="detector.fp16.sm87.engine")
    install_fakes(monkeypatch)
    from protoinspect.export.onnx_export import export_detector_onnx

    export_detector_onnx(trt_bundle, opset=18, verify=False)  # re-exported graph: another sha256 than the engine's
    manifest = load_bundle(trt_bundle).manifest
    sidecar_sha = json.loads((trt_bundle / "detector.fp16.sm87.engine.json").read_text())["onnx_sha256"]
    assert manifest.files["detector.onnx"]["sha256"] != sidecar_sha
    with pytest.raises(BundleError, match="different detector.onnx.*build_engine.py"):
        create_backend("tensorrt", trt_bundle)


def test_backend_devices_and_missing_engines(trt_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             rng: np.random.Generator) -> None:
    install_fakes(monkeypatch)
    with pytest.raises(ConfigError, match="unknown device 'cpu'"):
        create_backend("tensorrt", trt_bundle, device="cpu")
    with pytest.raises(ConfigError, match="no CUDA device 3"):
        create_backend("tensorrt", trt_bundle, device="cuda:3")
    plain = make_detector_bundle(tmp_path / "plain", rng)
    with pytest.raises(BundleError, match="no exported graph.*protoinspect export"):
        create_backend("tensorrt", plain)
    (trt_bundle / "detector.fp16.sm87.engine").write_bytes(b"tampered")
    with pytest.raises(BundleError, match="detector.fp16.sm87.engine"):
        create_backend("tensorrt", trt_bundle)


def test_runner_rejects_shapes_outside_the_profile(trt_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from protoinspect.sdk.backends.trt_runtime import CudaDevice, EngineRunner

    trt, cuda = install_fakes(monkeypatch)
    runner = EngineRunner(trt, cuda, CudaDevice(cuda, 0), (trt_bundle / "detector.fp16.sm87.engine").read_bytes())
    with pytest.raises(InputError, match="outside the engine's optimisation profile.*--max-batch"):
        runner.run({"image": np.zeros((5, 64, 64, 3), np.uint8)})
    with pytest.raises(InputError, match="must be uint8"):
        runner.run({"image": np.zeros((1, 64, 64, 3), np.float32)})
    runner.close()
    with pytest.raises(BackendError, match="could not deserialize"):
        EngineRunner(trt, cuda, CudaDevice(cuda, 0), b"not an engine")


def copied(trt: types.ModuleType, cuda: types.ModuleType) -> list[str]:
    """The engine outputs copied device -> host so far (names of the latest execution context's buffers)."""
    names = {address: name for name, address in trt.contexts[-1].addresses.items()}
    return [names[entry[1]] for entry in cuda.log if isinstance(entry, tuple) and entry[0] == "dtoh"]


def test_lazy_run_copies_features_only_when_read(trt_bundle: Path, monkeypatch: pytest.MonkeyPatch,
                                                 rng: np.random.Generator) -> None:
    trt, cuda = install_fakes(monkeypatch)
    images = rng.integers(0, 256, (9, 64, 64, 3), dtype=np.uint8)
    expected = reference(trt_bundle, images)
    with create_backend("tensorrt", trt_bundle) as backend:
        lazy = backend.run_lazy({"image": images[:2]})
        assert copied(trt, cuda) == ["anomaly_map", "score"] and lazy.fetched == []  # features stay on the GPU
        np.testing.assert_allclose(lazy["score"], expected["score"][:2], rtol=1e-6, atol=1e-6)
        assert copied(trt, cuda) == ["anomaly_map", "score"]
        np.testing.assert_allclose(lazy["features"], expected["features"][:2], rtol=1e-6, atol=1e-6)
        assert copied(trt, cuda) == ["anomaly_map", "score", "features"] and lazy.fetched == ["score", "features"]
        assert lazy["features"] is lazy["features"] and copied(trt, cuda).count("features") == 1
        unread = backend.run_lazy({"image": images[:1]})
        backend.run({"image": images[:1]})  # the engine's buffers now hold a later run
        with pytest.raises(BackendError, match="gone: the runner has run 1 more time"):
            unread["features"]
        np.testing.assert_allclose(unread["anomaly_map"], expected["anomaly_map"][:1], rtol=1e-6, atol=1e-6)
        chunked = backend.run_lazy({"image": images})  # 9 > max batch 4: chunks share the buffers, all copied
        for name in backend.output_names:
            np.testing.assert_allclose(chunked[name], expected[name], rtol=1e-6, atol=1e-6)
        last = backend.run_lazy({"image": images[:1]})
    with pytest.raises(BackendError, match="closed"):
        last["features"]


def test_runner_copies_the_requested_outputs(trt_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from protoinspect.sdk.backends.trt_runtime import CudaDevice, EngineRunner

    trt, cuda = install_fakes(monkeypatch)
    runner = EngineRunner(trt, cuda, CudaDevice(cuda, 0), (trt_bundle / "detector.fp16.sm87.engine").read_bytes())
    image = {"image": np.full((2, 64, 64, 3), 7, np.uint8)}
    everything = runner.run(image)
    assert list(everything) == ["anomaly_map", "score", "features"] and runner.runs == 1
    only = runner.run(image, outputs=["score"])
    assert list(only) == ["score"] and copied(trt, cuda)[-1] == "score"
    np.testing.assert_array_equal(only["score"], everything["score"])
    np.testing.assert_array_equal(runner.fetch("features", 2), everything["features"])
    with pytest.raises(InputError, match=r"has no outputs \['logits'\]"):
        runner.run(image, outputs=["logits"])
    with pytest.raises(InputError, match="has no output 'logits'"):
        runner.fetch("logits", 2)
    with pytest.raises(BackendError, match="of run 1 .* is gone"):
        runner.fetch("features", 1)
    runner.close()
    with pytest.raises(BackendError, match="closed"):
        runner.fetch("features", 2)


@pytest.mark.gpu
@pytest.mark.skipif(not fake.real_tensorrt_gpu(), reason=NEEDS_GPU)
def test_real_engine_matches_onnxruntime(tmp_path: Path, rng: np.random.Generator) -> None:
    b = make_exported_bundle(tmp_path / "real", rng)
    build_engine(b, precision="fp32")
    images = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    with create_backend("tensorrt", b, cuda_graph=True) as backend:
        out = backend.run({"image": images})
    expected = reference(b, images)
    np.testing.assert_allclose(out["anomaly_map"], expected["anomaly_map"], atol=1e-3 * max(1, np.abs(expected["anomaly_map"]).max()))
