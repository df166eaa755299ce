"""``protoinspect export-triton``: the Triton model repository of a bundle (export/triton_repository.py).

Every config.pbtxt is parsed with tritonclient's ModelConfig and compared with the ONNX graph's IO; the
inspector's model.py runs against a small fake ``triton_python_backend_utils`` (below) on real tiny bundles
and must answer what an in-process Inspector returns.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")

from google.protobuf import json_format, text_format
from protoinspect.export.triton_config import ONNX_TO_TRITON, check_config, config_text
from protoinspect.export.triton_repository import REPO_MANIFEST, export_triton_repository, main
from protoinspect.sdk.config import InspectorConfig
from protoinspect.sdk.errors import BundleError, ConfigError, ExportError, MissingDependencyError
from protoinspect.sdk.inspector import Inspector
from protoinspect.sdk.triton_tensors import OUTPUTS, tensors_to_results

# ------------------------------------------------------------------ fixtures and helpers

@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 64x64 detector bundle with detector.onnx (no classifier, no engines)."""
    from detector_bundles import make_exported_bundle

    return make_exported_bundle(tmp_path_factory.mktemp("triton") / "bundle", np.random.default_rng(3))


def parse(path: Path) -> Any:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_matches_onnx(cfg: Any, onnx_path: Path) -> None:
    """Config IO == the ONNX graph's inputs/outputs: names, dtypes, dims after the batch axis."""
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    inits = {i.name for i in graph.initializer}
    for tensors, values in ((cfg.input, [v for v in graph.input if v.name not in inits]), (cfg.output, graph.output)):
        assert [t.name for t in tensors] == [v.name for v in values]
        for t, v in zip(tensors, values):
            shape = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
            assert model_config_pb2.DataType.Name(t.data_type) == ONNX_TO_TRITON[v.type.tensor_type.elem_type]
            assert shape[0] == -1 and cfg.max_batch_size > 0  # the batch axis becomes max_batch_size
            assert list(t.dims) == (shape[1:] or [1])


def fake_pb_utils() -> types.ModuleType:
    """The part of Triton's ``triton_python_backend_utils`` that model.py uses (documented Python-backend API)."""
    pb = types.ModuleType("triton_python_backend_utils")

    class Tensor:
        def __init__(self, name: str, array: np.ndarray) -> None:
            self._name, self._array = name, np.asarray(array)

        def name(self) -> str:
            return self._name

        def as_numpy(self) -> np.ndarray:
            return self._array

    class TritonError(Exception):
        INVALID_ARG = 3

        def __init__(self, message: str, code: int | None = None) -> None:
            super().__init__(message)
            self._message, self._code = message, code

        def message(self) -> str:
            return self._message

        def code(self) -> int | None:
            return self._code

    class InferenceResponse:
        def __init__(self, output_tensors: list[Tensor], error: TritonError | None = None) -> None:
            self._outputs, self._error = output_tensors, error

        def output_tensors(self) -> list[Tensor]:
            return self._outputs

        def has_error(self) -> bool:
            return self._error is not None

        def error(self) -> TritonError | None:
            return self._error

    class InferenceRequest:
        def __init__(self, inputs: list[Tensor]) -> None:
            self._inputs = inputs

        def inputs(self) -> list[Tensor]:
            return self._inputs

    def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
        return next((t for t in request.inputs() if t.name() == name), None)

    def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
        return next((t for t in response.output_tensors() if t.name() == name), None)

    for obj in (Tensor, TritonError, InferenceResponse, InferenceRequest, get_input_tensor_by_name,
                get_output_tensor_by_name):
        setattr(pb, obj.__name__, obj)
    return pb


@pytest.fixture()
def pb(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = fake_pb_utils()
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", module)
    return module


def load_inspector_model(repo: Path, version: int = 1) -> Any:
    """Load DIR/inspector/<version>/model.py as Triton does and call ``initialize`` with Triton's args."""
    model_dir = repo / "inspector"
    spec = importlib.util.spec_from_file_location("triton_inspector_model_under_test", model_dir / str(version) / "model.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    model = module.TritonPythonModel()
    config_json = json_format.MessageToJson(parse(model_dir / "config.pbtxt"), preserving_proto_field_name=True)
    model.initialize({"model_config": config_json, "model_repository": str(model_dir), "model_version": str(version),
                      "model_instance_kind": "CPU", "model_instance_device_id": "0", "model_name": "inspector"})
    return model


def frames(rng: np.random.Generator, n: int, h: int = 72, w: int = 96) -> np.ndarray:
    out = rng.integers(90, 140, size=(n, h, w, 3), dtype=np.uint8)
    out[:, 20:40, 30:55] = 250  # a bright blob: a region to find
    return out


def assert_same_results(served: list[Any], local: list[Any]) -> None:
    assert len(served) == len(local)
    for s, r in zip(served, local):
        assert s.verdict == r.verdict
        assert s.anomaly_score == pytest.approx(r.anomaly_score, rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(s.model_map, r.model_map, rtol=1e-5, atol=1e-6)
        assert s.frame_size == r.frame_size and s.bundle_id == r.bundle_id
        assert [d.to_dict() for d in s.defects] == [d.to_dict() for d in r.defects]
        assert (s.image_class_id, s.image_class_name) == (r.image_class_id, r.image_class_name)


# ------------------------------------------------------------------ layout and configs

def test_layout_and_configs_match_the_onnx_graph(exported: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    record = export_triton_repository(exported, repo, max_batch_size=6, preferred_batch_sizes=[2, 6],
                                      max_queue_delay_us=500, instances=2)
    assert sorted(p.name for p in repo.iterdir()) == sorted(["detector", "inspector", REPO_MANIFEST])
    assert (repo / "detector/1/model.onnx").read_bytes() == (exported / "detector.onnx").read_bytes()
    assert (repo / "inspector/1/model.py").is_file() and (repo / "inspector/1/bundle/manifest.json").is_file()
    det = parse(repo / "detector/config.pbtxt")
    assert (det.name, det.platform, det.max_batch_size) == ("detector", "onnxruntime_onnx", 6)
    assert_matches_onnx(det, repo / "detector/1/model.onnx")
    assert list(det.dynamic_batching.preferred_batch_size) == [2, 6]
    assert det.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.count, g.kind) for g in det.instance_group] == [(2, model_config_pb2.ModelInstanceGroup.KIND_CPU)]
    assert list(det.version_policy.specific.versions) == [1]
    bundle_id = json.loads((exported / "manifest.json").read_text())["bundle_id"]
    assert det.parameters["bundle_id"].string_value == bundle_id == record["bundle_id"]
    insp = parse(repo / "inspector/config.pbtxt")
    assert (insp.name, insp.backend, insp.platform) == ("inspector", "python", "")
    assert [t.name for t in insp.input] == ["FRAME"] and list(insp.input[0].dims) == [-1, -1, -1]
    assert insp.input[0].data_type == model_config_pb2.TYPE_UINT8
    assert [t.name for t in insp.output] == list(OUTPUTS)
    assert list(next(t for t in insp.output if t.name == "MODEL_MAP").dims) == [64, 64]
    assert not any(name.endswith("_trt") for name in record["models"])
    assert json.loads((repo / REPO_MANIFEST).read_text())["versions"] == {"1": bundle_id}
    assert not list(tmp_path.glob(".repo.tmp-*"))


def test_classifier_model_when_the_bundle_has_one(discovery_bundle: tuple[Path, Path], tmp_path: Path) -> None:
    _, disc = discovery_bundle
    export_triton_repository(disc, tmp_path / "repo", kind="gpu")
    cls = parse(tmp_path / "repo/classifier/config.pbtxt")
    assert (cls.platform, cls.max_batch_size) == ("onnxruntime_onnx", 8)
    assert_matches_onnx(cls, disc / "classifier.onnx")
    assert cls.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU


def test_tensorrt_plan_models_only_with_engines(trt_engine_bundle: Path, tmp_path: Path) -> None:
    record = export_triton_repository(trt_engine_bundle, tmp_path / "repo", max_batch_size=8)
    plan = parse(tmp_path / "repo/detector_trt/config.pbtxt")
    assert plan.platform == "tensorrt_plan" and plan.default_model_filename == "model.plan"
    assert plan.max_batch_size == 4  # capped by the engine's optimisation profile (fake engines: max 4)
    assert plan.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert_matches_onnx(plan, trt_engine_bundle / "detector.onnx")
    params = {k: v.string_value for k, v in plan.parameters.items()}
    assert (params["tensorrt_version"], params["compute_capability"], params["precision"]) == ("10.3.0", "8.7", "fp16")
    engine = params["engine_files"]
    assert (tmp_path / "repo/detector_trt/1/model.plan").read_bytes() == (trt_engine_bundle / engine).read_bytes()
    assert set(record["models"]) == {"detector", "detector_trt", "inspector"}
    with pytest.raises(ConfigError, match="int8"):
        export_triton_repository(trt_engine_bundle, tmp_path / "other", trt_precision="int8")


# ------------------------------------------------------------------ bad input, nothing overwritten

def test_bundle_without_onnx_is_refused(tmp_path: Path) -> None:
    from detector_bundles import make_detector_bundle

    bundle = make_detector_bundle(tmp_path / "bundle", np.random.default_rng(0))
    with pytest.raises(BundleError, match=r"protoinspect export .*bundle"):
        export_triton_repository(bundle, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_existing_repository_is_not_touched_without_overwrite(exported: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "models"
    (foreign / "resnet/1").mkdir(parents=True)
    (foreign / "resnet/config.pbtxt").write_text('name: "resnet"\n')
    (foreign / "resnet/1/model.onnx").write_bytes(b"\x00weights")
    before = snapshot(foreign)
    with pytest.raises(ExportError, match=r"(?s)models.*--overwrite"):
        export_triton_repository(exported, foreign)
    with pytest.raises(ExportError, match="not a repository written by"):  # never replace a foreign folder
        export_triton_repository(exported, foreign, overwrite=True)
    assert snapshot(foreign) == before
    ours = tmp_path / "repo"
    export_triton_repository(exported, ours)
    before = snapshot(ours)
    with pytest.raises(ExportError, match="--overwrite"):
        export_triton_repository(exported, ours, max_batch_size=2)
    assert snapshot(ours) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models", "repo"]  # no temporary folder left


def test_overwrite_and_versions(exported: Path, tmp_path: Path) -> None:
    from detector_bundles import make_exported_bundle

    repo = tmp_path / "repo"
    (repo).mkdir()  # an empty folder is fine
    assert export_triton_repository(exported, repo)["version"] == 1
    assert export_triton_repository(exported, repo, overwrite=True, max_batch_size=2)["version"] == 1  # same bundle
    other = make_exported_bundle(tmp_path / "other", np.random.default_rng(11))
    record = export_triton_repository(other, repo, overwrite=True)
    assert record["version"] == 2 and set(record["versions"]) == {"1", "2"}
    assert sorted(p.name for p in (repo / "detector").iterdir()) == ["2", "config.pbtxt"]
    assert list(parse(repo / "inspector/config.pbtxt").version_policy.specific.versions) == [2]
    with pytest.raises(ConfigError, match="already belongs"):
        export_triton_repository(exported, repo, overwrite=True, version=2)
    with pytest.raises(ConfigError, match="max_batch_size"):
        export_triton_repository(exported, tmp_path / "x", max_batch_size=0)
    with pytest.raises(ConfigError, match="kind"):
        export_triton_repository(exported, tmp_path / "x", kind="tpu")


def test_cli(exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from protoinspect.pipelines.cli import COMMANDS
    from protoinspect.pipelines.cli import main as cli_main

    assert COMMANDS["export-triton"][0] == "protoinspect.export.triton_repository:main"
    repo = tmp_path / "repo"
    assert cli_main(["export-triton", str(exported), "--repo", str(repo), "--max-batch", "4", "--instances", "2",
                     "--kind", "cpu"]) == 0
    assert parse(repo / "detector/config.pbtxt").max_batch_size == 4
    assert main([str(exported), "--repo", str(repo)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([str(exported), "--repo", str(repo), "--overwrite"]) == 0


def test_generated_config_is_checked_with_tritonclient(exported: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from protoinspect.export import triton_repository as tr

    spec = tr._graph_spec("detector", exported / "detector.onnx", platform="onnxruntime_onnx", version=1, max_batch=8,
                          preferred=None, delay_us=0, instances=1, kind="KIND_CPU", params={})
    check_config(config_text(spec), spec)
    with pytest.raises(ExportError, match="dims"):
        check_config(config_text(spec).replace("dims: [ 64, 64, 3 ]", "dims: [ 64, 3 ]"), spec)
    with pytest.raises(ExportError, match="does not parse"):
        check_config(config_text(spec).replace("KIND_CPU", "KIND_QPU"), spec)
    monkeypatch.setattr(tr, "config_text", lambda s: config_text(s).replace("max_batch_size: 8", "max_batch_size: 3"))
    with pytest.raises(ExportError, match="max_batch_size"):
        export_triton_repository(exported, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()
    monkeypatch.setitem(sys.modules, "tritonclient.grpc.model_config_pb2", None)
    with pytest.raises(MissingDependencyError, match=r"protoinspect\[serving\]"):
        export_triton_repository(exported, tmp_path / "repo")


# ------------------------------------------------------------------ the inspector model (Python backend)

def test_inspector_model_equals_in_process(discovery_bundle: tuple[Path, Path], tmp_path: Path,
                                           pb: types.ModuleType) -> None:
    _, disc = discovery_bundle
    cfg = InspectorConfig(image_threshold=float("-inf"))  # every frame anomalous: regions and classes run
    export_triton_repository(disc, tmp_path / "repo", inspector_config=cfg)
    model = load_inspector_model(tmp_path / "repo")
    batch = frames(np.random.default_rng(5), 3)
    ok = np.full((1, 64, 64, 1), 128, np.uint8)  # one gray frame in its own request
    responses = model.execute([pb.InferenceRequest([pb.Tensor("FRAME", batch)]),
                               pb.InferenceRequest([pb.Tensor("FRAME", ok)])])
    assert not any(r.has_error() for r in responses)
    served = [tensors_to_results({t.name(): t.as_numpy() for t in r.output_tensors()}) for r in responses]
    with Inspector.from_bundle(disc, backend="onnxruntime", config=cfg) as local:
        expected = [local.inspect_batch(list(batch)), local.inspect_batch([ok[0]])]
    assert_same_results(served[0], expected[0])
    assert_same_results(served[1], expected[1])
    assert any(r.defects for r in expected[0])  # the comparison covered defects with classes
    assert all(d.class_id is not None for r in expected[0] for d in r.defects)
    model.finalize()


def test_inspector_model_answers_a_typed_error_for_a_wrong_dtype(exported: Path, tmp_path: Path,
                                                                pb: types.ModuleType) -> None:
    export_triton_repository(exported, tmp_path / "repo")
    model = load_inspector_model(tmp_path / "repo")
    good = frames(np.random.default_rng(1), 2, 64, 64)
    responses = model.execute([pb.InferenceRequest([pb.Tensor("FRAME", good.astype(np.float32))]),
                               pb.InferenceRequest([pb.Tensor("FRAME", good)]),
                               pb.InferenceRequest([pb.Tensor("IMAGE", good)])])
    assert responses[0].has_error() and isinstance(responses[0].error(), pb.TritonError)
    assert "UINT8" in responses[0].error().message() and "float32" in responses[0].error().message()
    assert responses[0].error().code() == pb.TritonError.INVALID_ARG
    assert not responses[1].has_error()
    with Inspector.from_bundle(exported, backend="onnxruntime") as local:
        served = tensors_to_results({t.name(): t.as_numpy() for t in responses[1].output_tensors()})
        assert_same_results(served, local.inspect_batch(list(good)))
    assert responses[2].has_error() and "FRAME" in responses[2].error().message()
    model.finalize()


def test_signed_bundle_travels_and_is_checked_by_the_server_model(exported: Path, tmp_path: Path,
                                                                   pb: types.ModuleType) -> None:
    import shutil

    pytest.importorskip("cryptography")
    from protoinspect.sdk.bundle_signing import generate_keypair, sign_bundle
    from protoinspect.sdk.errors import BundleSignatureError

    bundle = Path(shutil.copytree(exported, tmp_path / "bundle"))
    generate_keypair(tmp_path / "release.key")
    generate_keypair(tmp_path / "other.key")
    sign_bundle(bundle, tmp_path / "release.key")
    trusted = InspectorConfig(trusted_keys=[(tmp_path / "release.key.pub").read_text()])  # PEM text travels
    export_triton_repository(bundle, tmp_path / "repo", inspector_config=trusted)
    assert (tmp_path / "repo/inspector/1/bundle/signature.json").is_file()
    load_inspector_model(tmp_path / "repo").finalize()
    untrusted = InspectorConfig(trusted_keys=[(tmp_path / "other.key.pub").read_text()])
    export_triton_repository(bundle, tmp_path / "repo", overwrite=True, inspector_config=untrusted)
    with pytest.raises(BundleSignatureError):
        load_inspector_model(tmp_path / "repo")


def test_cli_trusted_key_makes_the_server_model_refuse_an_unsigned_bundle(exported: Path, tmp_path: Path,
                                                                          pb: types.ModuleType) -> None:
    pytest.importorskip("cryptography")
    from protoinspect.sdk.bundle_signing import generate_keypair
    from protoinspect.sdk.errors import BundleSignatureError

    generate_keypair(tmp_path / "release.key")
    assert main([str(exported), "--repo", str(tmp_path / "repo"), "--trusted-key", str(tmp_path / "release.key.pub")]) == 0
    with pytest.raises(BundleSignatureError, match="not signed"):
        load_inspector_model(tmp_path / "repo")
    assert main([str(exported), "--repo", str(tmp_path / "repo2"), "--trusted-key", str(tmp_path / "missing.pub")]) != 0
