"""sdk/backends/trt_runtime.py: engines with plugin layers, on the fake ``tensorrt`` / ``pycuda`` modules.

The runtime never imports ``protoinspect.export``: plugin registration reaches it through
``add_plugin_registrar`` and TensorRT's own plugin registry, and a missing plugin is a ``MissingPluginError``.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
from fake_engine_bundles import FakeTensorRT, install_fakes
from import_probe import loaded_after

from protoinspect.sdk.backends import trt_runtime
from protoinspect.sdk.backends.registry import create_backend
from protoinspect.sdk.backends.trt_runtime import CudaDevice, EngineRunner, add_plugin_registrar, ensure_plugins
from protoinspect.sdk.backends.trt_sidecar import make_sidecar, read_sidecar, runtime_plugins
from protoinspect.sdk.bundle import add_files
from protoinspect.sdk.errors import BackendError, BundleError, ConfigError, MissingPluginError

ENGINE = "detector.fp16.sm87.engine"
PLUGIN = "acme::fancy_attention"


@pytest.fixture(scope="module")
def fake_trt() -> FakeTensorRT:
    """The engines of ``trt_engine_bundle``: TensorRT 10.9 (AOT plugins), sm 8.7, max batch 2."""
    return FakeTensorRT("10.9.0", max_batch=2)


@pytest.fixture(autouse=True)
def _fresh_registrars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trt_runtime, "_PLUGIN_REGISTRARS", {})
    monkeypatch.setattr(trt_runtime, "_REGISTRARS_RUN", set())


def install(monkeypatch: pytest.MonkeyPatch, *, registry: bool = True) -> tuple[types.ModuleType, types.ModuleType]:
    """Fake tensorrt 10.9 + pycuda; with ``registry``, ``trt.get_plugin_registry()`` lists ``trt.creators``."""
    trt, cuda = install_fakes(monkeypatch, FakeTensorRT("10.9.0"))
    trt.creators = []  # type: ignore[attr-defined]
    if registry:
        registry = lambda: types.SimpleNamespace(all_creators=list(trt.creators))  # noqa: E731
        trt.get_plugin_registry = registry  # type: ignore[attr-defined]
    return trt, cuda


def creator(plugin_id: str) -> types.SimpleNamespace:
    namespace, name = plugin_id.split("::")
    return types.SimpleNamespace(name=name, plugin_namespace=namespace, plugin_version="1")


def with_plugins(bundle: Path, plugins: list[dict]) -> None:
    """Record ``plugins`` in the engine's sidecar (through add_files, so the manifest hashes stay valid)."""
    path = bundle / f"{ENGINE}.json"
    sidecar = json.loads(path.read_text())
    sidecar["plugins"] = plugins
    add_files(bundle, {path.name: json.dumps(sidecar).encode()})


def runner(trt: types.ModuleType, cuda: types.ModuleType, bundle: Path, plugins: list[str]) -> EngineRunner:
    return EngineRunner(trt, cuda, CudaDevice(cuda, 0), (bundle / ENGINE).read_bytes(), name=ENGINE, plugins=plugins)


def test_runtime_imports_no_export_code() -> None:
    code = "import protoinspect.sdk.backends.trt_backend, protoinspect.sdk.backends.trt_runtime"
    assert loaded_after(code, ("protoinspect.export", "protoinspect.training", "tensorrt", "triton")) == []


def test_registrar_runs_once_before_the_first_engine_needing_it(trt_bundle: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    trt, cuda = install(monkeypatch)
    calls: list[int] = []

    def register() -> None:
        calls.append(1)
        trt.creators.append(creator(PLUGIN))

    add_plugin_registrar("acme", register)
    assert calls == []  # nothing runs until an engine needs the namespace
    runner(trt, cuda, trt_bundle, []).close()
    assert calls == []
    for _ in range(2):
        r = runner(trt, cuda, trt_bundle, [PLUGIN])
        assert r.run({"image": np.zeros((1, 64, 64, 3), np.uint8)})["score"].shape == (1,)
        r.close()
    assert calls == [1]


def test_missing_plugin_says_how_to_register_it(trt_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trt, cuda = install(monkeypatch)
    trt.creators.append(creator("acme::other"))
    with pytest.raises(MissingPluginError, match=r"needs the TensorRT plugin\(s\) \['acme::fancy_attention'\]") as info:
        runner(trt, cuda, trt_bundle, [PLUGIN, "acme::other"])
    message = str(info.value)
    assert isinstance(info.value, BackendError)
    for fragment in ("add_plugin_registrar('acme', fn)", "load_library(PATH)", "build_engine.py"):
        assert fragment in message, message
    add_plugin_registrar("acme", lambda: None)  # a registrar that registers nothing: still missing
    with pytest.raises(MissingPluginError):
        runner(trt, cuda, trt_bundle, [PLUGIN])


def test_failing_registrar_is_a_backend_error_and_runs_again(trt_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trt, cuda = install(monkeypatch)
    attempts: list[int] = []

    def flaky() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("no GPU for the plugin compiler")
        trt.creators.append(creator(PLUGIN))

    add_plugin_registrar("acme", flaky)
    with pytest.raises(BackendError, match="registering the TensorRT plugins of namespace 'acme'.*no GPU"):
        ensure_plugins(trt, [PLUGIN], name=ENGINE)
    ensure_plugins(trt, [PLUGIN], name=ENGINE)
    assert len(attempts) == 2


def test_unlistable_registry_defers_to_tensorrt(trt_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trt, cuda = install(monkeypatch, registry=False)
    assert trt_runtime.registered_plugin_ids(trt) is None
    runner(trt, cuda, trt_bundle, [PLUGIN]).close()  # cannot check: TensorRT's deserialization decides
    with pytest.raises(BackendError, match=r"could not deserialize.*uses the plugins \['acme::fancy_attention'\]"):
        EngineRunner(trt, cuda, CudaDevice(cuda, 0), b"not an engine", plugins=[PLUGIN])


@pytest.mark.parametrize(("namespace", "registrar", "match"), [
    ("", lambda: None, "non-empty string"), ("a::b", lambda: None, "without '::'"), ("acme", 3, "must be callable"),
])
def test_add_plugin_registrar_checks_its_arguments(namespace: str, registrar: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        add_plugin_registrar(namespace, registrar)  # type: ignore[arg-type]


def test_backend_requires_the_sidecar_non_aot_plugins(trt_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trt, _ = install(monkeypatch)
    with_plugins(trt_bundle, [{"id": "protoinspect::prototype_attention", "aot": True}])
    with create_backend("tensorrt", trt_bundle) as backend:  # AOT: the kernels are inside the engine
        assert backend.output_names[:2] == ("anomaly_map", "score")
    with_plugins(trt_bundle, [{"id": "protoinspect::prototype_attention", "aot": False}])
    with pytest.raises(MissingPluginError, match=r"protoinspect.export.trt_plugins.register_plugins"):
        create_backend("tensorrt", trt_bundle)
    add_plugin_registrar("protoinspect", lambda: trt.creators.append(creator("protoinspect::prototype_attention")))
    with create_backend("tensorrt", trt_bundle) as backend:
        assert backend.run({"image": np.zeros((3, 64, 64, 3), np.uint8)})["score"].shape == (3,)


@pytest.mark.parametrize("plugins", [{"id": "a::b", "aot": True}, [{"id": "no-namespace", "aot": True}],
                                     [{"id": "a::b", "aot": 1}], [{"aot": False}]])
def test_sidecar_rejects_malformed_plugins(plugins: object) -> None:
    plain = make_sidecar(engine_file=ENGINE, onnx_file="detector.onnx", onnx_sha256="a" * 64, tensorrt_version="10.9.0",
                         gpu_name="Orin", compute_capability="8.7", precision="fp16",
                         profile={"image": {"min": [1, 64, 64, 3], "opt": [1, 64, 64, 3], "max": [2, 64, 64, 3]}},
                         dla_core=None, built_utc="2026-01-01T00:00:00Z", builder={})
    assert runtime_plugins(plain) == []
    with pytest.raises(BundleError, match=r"invalid \['plugins'\]"):
        read_sidecar(json.dumps({**plain, "plugins": plugins}).encode(), "x.engine.json")
