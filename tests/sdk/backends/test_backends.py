"""Tests of protoinspect.sdk.backends: onnxruntime/torch parity on uint8 frames, input checks, resolution, errors."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from detector_bundles import make_detector_bundle  # noqa: E402
from import_probe import RUNTIME_FORBIDDEN, loaded_after  # noqa: E402

from protoinspect.sdk.backends import (  # noqa: E402
    BACKENDS,
    DETECTOR_OUTPUTS,
    Backend,
    OnnxRuntimeBackend,
    TorchBackend,
    create_backend,
    registry,  # noqa: E402
    resolve_backend_name,
)
from protoinspect.sdk.bundle import add_files, load_bundle  # noqa: E402
from protoinspect.sdk.errors import BackendError, BundleError, ConfigError, InputError, MissingDependencyError  # noqa: E402
from protoinspect.sdk.preprocess import PreprocessSpec, normalize  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
SMALL = {"num_prototypes": 16, "embed_dim": 32, "num_heads": 2, "blur_sigma": 1.0}
SIZE = (64, 64)
# Same bound as protoinspect.export.onnx_export.MAP_ATOL / SCORE_ATOL: |ort - torch| <= 1e-4 x max(1, max |map|).
REL_ATOL = 1e-4
SPEC = PreprocessSpec(image_size=SIZE, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))


def _make_bundle(out: Path, seed: int) -> Path:
    return make_detector_bundle(out, np.random.default_rng(seed), SPEC, **SMALL)


@pytest.fixture(scope="module")
def plain_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle without detector.onnx (tests must not modify it)."""
    seed = int(np.random.default_rng().integers(2**31))
    return _make_bundle(tmp_path_factory.mktemp("plain") / "bundle", seed)


@pytest.fixture(scope="module")
def exported_bundle(plain_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same bundle with detector.onnx (tests must not modify it)."""
    from protoinspect.export.onnx_export import export_detector_onnx

    out = tmp_path_factory.mktemp("exported") / "bundle"
    shutil.copytree(plain_bundle, out)
    torch.set_num_threads(1)
    export_detector_onnx(out, verify=False)
    return out


@pytest.fixture(scope="module")
def ort_backend(exported_bundle: Path) -> Iterator[OnnxRuntimeBackend]:
    backend = OnnxRuntimeBackend(exported_bundle, intra_op_threads=1)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def torch_backend(exported_bundle: Path) -> Iterator[TorchBackend]:
    backend = TorchBackend(exported_bundle, threads=1)
    yield backend
    backend.close()


def _frames(rng: np.random.Generator, n: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    return rng.integers(0, 256, (n, *size, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- parity and outputs


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_and_torch_agree(ort_backend: OnnxRuntimeBackend, torch_backend: TorchBackend,
                                     rng: np.random.Generator, batch: int) -> None:
    frames = _frames(rng, batch)
    o = ort_backend.run({"image": frames})
    t = torch_backend.run({"image": frames})
    for out in (o, t):
        assert list(out) == [*DETECTOR_OUTPUTS, "features"]
        assert out["features"].shape[:1] == (batch,) and out["features"].dtype == np.float32
        assert out["anomaly_map"].shape == (batch, 1, *SIZE) and out["anomaly_map"].dtype == np.float32
        assert out["score"].shape == (batch,) and out["score"].dtype == np.float32
        assert np.isfinite(out["anomaly_map"]).all() and np.isfinite(out["score"]).all()
    scale = max(1.0, float(np.abs(t["anomaly_map"]).max()))
    np.testing.assert_allclose(o["anomaly_map"], t["anomaly_map"], rtol=0, atol=REL_ATOL * scale)
    np.testing.assert_allclose(o["score"], t["score"], rtol=0, atol=REL_ATOL * scale)
    assert np.ptp(t["anomaly_map"]) > 1e-3  # a non-trivial map, so the comparison means something


def test_torch_backend_equals_net_on_sdk_normalize(torch_backend: TorchBackend, exported_bundle: Path,
                                                   rng: np.random.Generator) -> None:
    """The backend's uint8 path is exactly net(normalize(frame)) per frame, the training-time input.

    (np.stack of normalize() outputs keeps their HWC memory order; torch's convolutions then round
    differently at the 1e-7 level, so the stacked input is made C-contiguous like the backend's.)
    """
    from protoinspect.sdk.models.loading import load_detector_net

    net = load_detector_net(exported_bundle)
    frames = _frames(rng, 2)
    x = np.ascontiguousarray(np.stack([normalize(f, SPEC) for f in frames]))
    with torch.no_grad():
        t_map, t_score = net(torch.from_numpy(x))
    out = torch_backend.run({"image": frames})
    np.testing.assert_array_equal(out["anomaly_map"], t_map.numpy())
    np.testing.assert_array_equal(out["score"], t_score.numpy())


@pytest.mark.parametrize("which", ["onnxruntime", "torch"])
def test_strided_views_are_accepted(which: str, ort_backend: OnnxRuntimeBackend, torch_backend: TorchBackend,
                                    rng: np.random.Generator) -> None:
    backend = ort_backend if which == "onnxruntime" else torch_backend
    big = _frames(rng, 2, (80, 70))
    view = big[:, 5:69, 3:67, ::-1]  # ROI crop + BGR->RGB flip, not contiguous
    a = backend.run({"image": view})
    b = backend.run({"image": np.ascontiguousarray(view)})
    np.testing.assert_array_equal(a["anomaly_map"], b["anomaly_map"])


def test_backends_satisfy_the_protocol(ort_backend: OnnxRuntimeBackend, torch_backend: TorchBackend) -> None:
    for backend, name in ((ort_backend, "onnxruntime"), (torch_backend, "torch")):
        assert isinstance(backend, Backend)
        assert backend.name == name and backend.device == "cpu"
        assert backend.input_names == ("image",) and backend.output_names == ("anomaly_map", "score", "features")


# ----------------------------------------------------------------------------- input validation


def _bad_inputs(rng: np.random.Generator) -> list[tuple[object, str]]:
    good = _frames(rng, 1)
    return [
        ({"image": good.astype(np.float32)}, "must be uint8"),
        ({"image": _frames(rng, 1, (32, 64))}, "32x64 but the model takes 64x64"),
        ({"frame": good}, r"missing \['image'\] and unexpected \['frame'\]"),
        ({}, r"missing \['image'\]"),
        ({"image": good, "mask": good}, r"unexpected \['mask'\]"),
        ({"image": good[0]}, "must be 4-D"),
        ({"image": np.zeros((1, *SIZE, 4), np.uint8)}, "3 channels"),
        ({"image": good[:0]}, "empty batch"),
        ({"image": good.tolist()}, "numpy.ndarray"),
        (good, "mapping"),
    ]


@pytest.mark.parametrize("which", ["onnxruntime", "torch"])
def test_bad_inputs_raise_input_error(which: str, ort_backend: OnnxRuntimeBackend, torch_backend: TorchBackend,
                                      rng: np.random.Generator) -> None:
    backend = ort_backend if which == "onnxruntime" else torch_backend
    for inputs, message in _bad_inputs(rng):
        with pytest.raises(InputError, match=message):
            backend.run(inputs)  # type: ignore[arg-type]
    assert "image[None]" in _input_error(backend, {"image": _frames(rng, 1)[0]})


def _input_error(backend: Backend, inputs: dict) -> str:
    with pytest.raises(InputError) as info:
        backend.run(inputs)
    return str(info.value)


# ----------------------------------------------------------------------------- resolution and registry


def test_auto_resolves_by_bundle_contents(exported_bundle: Path, plain_bundle: Path) -> None:
    assert resolve_backend_name("auto", exported_bundle) == "onnxruntime"
    assert resolve_backend_name("auto", load_bundle(exported_bundle)) == "onnxruntime"
    assert resolve_backend_name("auto", plain_bundle) == "torch"
    assert resolve_backend_name("torch", exported_bundle) == "torch"  # explicit names are kept
    assert resolve_backend_name("onnxruntime", plain_bundle) == "onnxruntime"  # ... and fail at creation


def test_auto_without_runtimes(exported_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_importable", lambda module: module != "onnxruntime")
    assert resolve_backend_name("auto", exported_bundle) == "torch"
    monkeypatch.setattr(registry, "_importable", lambda module: False)
    with pytest.raises(MissingDependencyError, match="no backend can run") as info:
        resolve_backend_name("auto", exported_bundle)
    assert "protoinspect[onnx]" in str(info.value) and "protoinspect[torch]" in str(info.value)


def test_create_backend(exported_bundle: Path, plain_bundle: Path) -> None:
    with create_backend("auto", exported_bundle, intra_op_threads=1) as backend:
        assert isinstance(backend, OnnxRuntimeBackend)
    with create_backend("auto", plain_bundle, threads=1) as backend:
        assert isinstance(backend, TorchBackend)
    assert set(BACKENDS) == {"onnxruntime", "torch", "tensorrt"}


@pytest.mark.parametrize("name", ["trt", "ort", "", "TORCH"])
def test_unknown_backend_lists_choices(exported_bundle: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="unknown backend") as info:
        create_backend(name, exported_bundle)
    assert "auto, onnxruntime, torch, tensorrt" in str(info.value)


def test_option_of_another_backend_is_a_config_error(exported_bundle: Path) -> None:
    with pytest.raises(ConfigError, match=r"'torch' does not take option\(s\) \['intra_op_threads'\]"):
        create_backend("torch", exported_bundle, intra_op_threads=1)


# ----------------------------------------------------------------------------- devices and bundles


def test_ort_cuda_and_tensorrt_unavailable(exported_bundle: Path) -> None:
    available = ort.get_available_providers()
    for device, provider in (("cuda", "CUDAExecutionProvider"), ("cuda:1", "CUDAExecutionProvider"),
                             ("tensorrt", "TensorrtExecutionProvider")):
        if provider in available:
            continue
        with pytest.raises(MissingDependencyError, match="onnxruntime-gpu") as info:
            OnnxRuntimeBackend(exported_bundle, device=device)
        assert provider in str(info.value) and device in str(info.value)
    assert not (exported_bundle / "trt_engine_cache").exists() or "TensorrtExecutionProvider" in available


@pytest.mark.filterwarnings("ignore:Specified provider:UserWarning")
def test_ort_silent_fallback_to_cpu_is_an_error(exported_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime swaps an unusable provider for CPU with only a warning; the backend refuses that."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA provider really available")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(BackendError, match="did not enable CUDAExecutionProvider") as info:
        OnnxRuntimeBackend(exported_bundle, device="cuda:0")
    assert "CPUExecutionProvider" in str(info.value)


@pytest.mark.filterwarnings("ignore:Specified provider:UserWarning")
def test_ort_tensorrt_options(exported_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider list for device='tensorrt:N' (engine cache per ONNX sha256 and precision, fp16, CUDA next)."""
    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("TensorRT provider really available")
    bundle = tmp_path / "bundle"
    shutil.copytree(exported_bundle, bundle)
    seen: list[object] = []
    real_session = ort.InferenceSession

    def spy(model: object, options: object = None, providers: object = None) -> object:
        seen.append(providers)
        return real_session(model, options, providers=providers)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(BackendError, match="did not enable TensorrtExecutionProvider"):
        OnnxRuntimeBackend(bundle, device="tensorrt:1", fp16=True)
    sha = load_bundle(bundle).manifest.files["detector.onnx"]["sha256"]
    cache = bundle / "trt_engine_cache" / f"{sha[:16]}-fp16"
    assert cache.is_dir()
    assert seen == [[
        ("TensorrtExecutionProvider", {"device_id": 1, "trt_fp16_enable": True, "trt_engine_cache_enable": True,
                                       "trt_engine_cache_path": str(cache)}),
        ("CUDAExecutionProvider", {"device_id": 1}),
    ]]
    load_bundle(bundle)  # the cache folder does not disturb the bundle


def test_torch_cuda_unavailable(exported_bundle: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA available")
    with pytest.raises(MissingDependencyError, match="sees no CUDA GPU") as info:
        TorchBackend(exported_bundle, device="cuda")
    assert "device='cpu'" in str(info.value)


def test_bad_options(exported_bundle: Path) -> None:
    for kwargs, message in (({"device": "gpu"}, "unknown device 'gpu'"), ({"device": "cpu:0"}, "unknown device"),
                            ({"fp16": True}, "fp16=True needs device='tensorrt'"),
                            ({"intra_op_threads": 0}, "intra_op_threads"),
                            ({"providers": "CPUExecutionProvider"}, "providers must be")):
        with pytest.raises(ConfigError, match=message):
            OnnxRuntimeBackend(exported_bundle, **kwargs)  # type: ignore[arg-type]
    for kwargs, message in (({"device": "tensorrt"}, "unknown device"), ({"threads": 0}, "threads")):
        with pytest.raises(ConfigError, match=message):
            TorchBackend(exported_bundle, **kwargs)  # type: ignore[arg-type]


def test_explicit_provider_list(exported_bundle: Path) -> None:
    with OnnxRuntimeBackend(exported_bundle, providers=[("CPUExecutionProvider", {})], intra_op_threads=1) as b:
        assert b.describe()["providers"][0] == "CPUExecutionProvider"
    with pytest.raises(MissingDependencyError, match="NoSuchExecutionProvider"):
        OnnxRuntimeBackend(exported_bundle, providers=["NoSuchExecutionProvider"])


def test_missing_onnx_is_a_bundle_error(plain_bundle: Path) -> None:
    with pytest.raises(BundleError, match="protoinspect export") as info:
        OnnxRuntimeBackend(plain_bundle)
    assert "detector.onnx" in str(info.value) and str(plain_bundle) in str(info.value)
    with pytest.raises(BundleError, match="protoinspect export"):
        create_backend("onnxruntime", plain_bundle)


def test_graph_that_breaks_the_contract(plain_bundle: Path, tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    bundle = tmp_path / "bundle"
    shutil.copytree(plain_bundle, bundle)
    x = helper.make_tensor_value_info("frame", TensorProto.UINT8, ["n", *SIZE, 3])
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, ["n", *SIZE, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["frame"], ["y"])], "wrong", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    add_files(bundle, {"detector.onnx": model.SerializeToString()})
    with pytest.raises(BundleError, match="does not match the bundle's detector contract") as info:
        OnnxRuntimeBackend(bundle)
    assert "['frame']" in str(info.value) and "protoinspect export" in str(info.value)


def test_tampered_onnx_is_refused(exported_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(exported_bundle, bundle)
    loaded = load_bundle(bundle)
    data = bytearray((bundle / "detector.onnx").read_bytes())
    data[-1] ^= 0xFF
    (bundle / "detector.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        OnnxRuntimeBackend(loaded)  # a Bundle loaded before the change: read_bytes re-checks


# ----------------------------------------------------------------------------- describe, close, imports


def test_describe(ort_backend: OnnxRuntimeBackend, torch_backend: TorchBackend, exported_bundle: Path) -> None:
    d = ort_backend.describe()
    json.dumps(d)
    assert d["backend"] == "onnxruntime" and d["provider"] == d["providers"][0] == "CPUExecutionProvider"
    assert d["onnxruntime"] == ort.__version__ and d["device"] == "cpu" and d["engine_cache"] is None
    assert d["model_sha256"] == hashlib.sha256((exported_bundle / "detector.onnx").read_bytes()).hexdigest()
    assert d["bundle_id"] == load_bundle(exported_bundle).manifest.bundle_id
    d = torch_backend.describe()
    json.dumps(d)
    assert d["backend"] == "torch" and d["provider"] == "torch-cpu" and d["torch"] == torch.__version__
    assert d["model_sha256"] == hashlib.sha256((exported_bundle / "detector.safetensors").read_bytes()).hexdigest()
    assert d["image_size"] == list(SIZE)


@pytest.mark.parametrize("cls", [OnnxRuntimeBackend, TorchBackend])
def test_run_after_close(cls: type, exported_bundle: Path, rng: np.random.Generator) -> None:
    backend = cls(exported_bundle)
    backend.close()
    backend.close()  # idempotent
    assert backend.closed and backend.describe()["closed"] is True
    with pytest.raises(BackendError, match="is closed"):
        backend.run({"image": _frames(rng, 1)})


def test_importing_backends_pulls_in_no_runtime() -> None:
    code = ("import protoinspect.sdk.backends\n"
            "from protoinspect.sdk.backends import create_backend, resolve_backend_name, Backend")
    assert loaded_after(code, RUNTIME_FORBIDDEN) == []


def test_cuda_only_torch_options_need_cuda(exported_bundle: Path) -> None:
    bundle = exported_bundle
    from protoinspect.sdk.backends.torch_backend import TorchBackend

    for option in ({"cuda_graph": True}, {"half": True}):
        with pytest.raises(ConfigError, match="need a CUDA device"):
            TorchBackend(bundle, device="cpu", **option)
    with pytest.raises(ConfigError, match="attention_impl='triton' needs CUDA"):
        backend = TorchBackend(bundle, device="cpu", attention_impl="triton")
        backend.run({"image": np.zeros((1, *SIZE, 3), np.uint8)})


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_replay_matches_eager(exported_bundle: Path, rng: np.random.Generator) -> None:
    bundle = exported_bundle
    from protoinspect.sdk.backends.torch_backend import TorchBackend

    eager = TorchBackend(bundle, device="cuda")
    graphed = TorchBackend(bundle, device="cuda", cuda_graph=True)
    for n in (1, 1, 3):  # the second batch of 1 replays the captured graph
        frames = _frames(rng, n)
        a, b = eager.run({"image": frames}), graphed.run({"image": frames})
        for name in a:
            np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-5)
