"""Tests of protoinspect.export.onnx_export: ONNX export of a detector bundle, torch/onnxruntime parity, TensorRT lint, CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from detector_bundles import make_detector_bundle  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from protoinspect.export.onnx_export import (  # noqa: E402
    DEFAULT_OPSET,
    MAP_ATOL,
    MIN_OPSET,
    ONNX_FILE,
    SCORE_ATOL,
    DetectorGraph,
    export_detector_onnx,
    lint_onnx,
    main,
    verify_onnx_parity,
)
from protoinspect.export.trt_ops import (  # noqa: E402
    TRT10_SUPPORTED_OPS,
    TRT10_TOPK_MAX_K,
    TRT10_UNSUPPORTED_OPS,
    TRT_DOC_VERSION,
    TRT_MAX_OPSET,
)
from protoinspect.sdk.bundle import load_bundle  # noqa: E402
from protoinspect.sdk.errors import ConfigError, ExportError, InputError  # noqa: E402
from protoinspect.sdk.models.loading import load_detector_net  # noqa: E402
from protoinspect.sdk.preprocess import PreprocessSpec, normalize  # noqa: E402

SMALL = {"num_prototypes": 16, "embed_dim": 32, "num_heads": 2, "blur_sigma": 1.0}
SIZE = (64, 64)


def _make_bundle(out: Path, rng: np.random.Generator, spec: PreprocessSpec | None = None, **config: object) -> Path:
    return make_detector_bundle(out, rng, spec, **config)


def _frames(rng: np.random.Generator, n: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    return rng.integers(0, 256, (n, *size, 3), dtype=np.uint8)


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture()
def bundle(tmp_path: Path, rng: np.random.Generator) -> Path:
    return _make_bundle(tmp_path / "bundle", rng)


# ----------------------------------------------------------------------------- export + bundle


def test_export_adds_verified_onnx_to_bundle(bundle: Path) -> None:
    weights_entry = load_bundle(bundle).manifest.files["detector.safetensors"]
    info = export_detector_onnx(bundle)

    loaded = load_bundle(bundle)  # verify=True: every sha256 is checked
    entry = loaded.manifest.files[ONNX_FILE]
    data = (bundle / ONNX_FILE).read_bytes()
    assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert loaded.read_bytes(ONNX_FILE) == data
    assert loaded.manifest.files["detector.safetensors"] == weights_entry
    assert info["bundle_id"] == loaded.manifest.bundle_id
    assert info["path"] == str(bundle / ONNX_FILE)

    record = loaded.manifest.extra["onnx"]
    assert record == json.loads(json.dumps({k: v for k, v in info.items() if k not in ("path", "bundle_id")}))
    assert record["file"] == ONNX_FILE and record["opset"] == DEFAULT_OPSET == 17
    assert record["inputs"] == [{"name": "image", "dtype": "uint8", "shape": ["batch", 64, 64, 3]}]
    assert record["outputs"] == [
        {"name": "anomaly_map", "dtype": "float32", "shape": ["batch", 1, 64, 64]},
        {"name": "score", "dtype": "float32", "shape": ["batch"]},
        {"name": "features", "dtype": "float32", "shape": ["batch", 336, 8, 8]},
    ]
    assert record["tensorrt_lint"] == {
        "tensorrt_doc_version": TRT_DOC_VERSION, "max_opset": TRT_MAX_OPSET, "problems": []
    }
    assert set(record["op_types"]) <= TRT10_SUPPORTED_OPS
    parity = record["parity"]
    assert parity["passed"] is True and parity["provider"] == "CPUExecutionProvider"
    assert parity["num_frames"] == parity["num_random"] == 4 and parity["num_real"] == 0
    assert parity["batch_sizes"] == [1, 3]
    assert parity["map_atol"] == MAP_ATOL and parity["score_atol"] == SCORE_ATOL
    assert 0 <= parity["map_max_abs_diff"] <= parity["map_tolerance"] == MAP_ATOL * parity["map_scale"]
    assert 0 <= parity["score_max_abs_diff"] <= parity["score_tolerance"]

    # the stored model is what was exported: opset and I/O as recorded
    model = onnx.load(str(bundle / ONNX_FILE))
    assert {imp.domain: imp.version for imp in model.opset_import}[""] == 17


def test_onnxruntime_matches_torch_and_sdk_preprocessing(bundle: Path, rng: np.random.Generator) -> None:
    """ORT on uint8 frames == the torch net on protoinspect.sdk.preprocess.normalize(frames), batch 1 and 3."""
    export_detector_onnx(bundle, verify=False)
    spec = load_bundle(bundle).manifest.preprocess_spec
    net = load_detector_net(bundle)
    session = _session(bundle / ONNX_FILE)
    for n in (1, 3):
        frames = _frames(rng, n)
        with torch.no_grad():
            t_map, t_score = net(torch.from_numpy(np.stack([normalize(f, spec) for f in frames])))
        o_map, o_score, o_feat = session.run(None, {"image": frames})
        assert o_feat.shape == (n, 336, 8, 8) and o_feat.dtype == np.float32
        assert o_map.shape == (n, 1, 64, 64) and o_map.dtype == np.float32
        assert o_score.shape == (n,) and o_score.dtype == np.float32
        scale = max(1.0, float(t_map.abs().max()))
        np.testing.assert_allclose(o_map, t_map.numpy(), rtol=0, atol=MAP_ATOL * scale)
        np.testing.assert_allclose(o_score, t_score.numpy(), rtol=0, atol=SCORE_ATOL * scale)


def test_export_fused_map_mode(tmp_path: Path, rng: np.random.Generator) -> None:
    bundle = _make_bundle(tmp_path / "fused", rng, map_mode="fused")
    info = export_detector_onnx(bundle)
    assert info["map_mode"] == "fused"
    assert info["parity"]["passed"] and info["parity"]["map_max_abs_diff"] <= info["parity"]["map_tolerance"]
    assert lint_onnx(bundle / ONNX_FILE) == []
    assert "Sigmoid" in info["op_types"]  # the segmentation head is in the graph

    module = DetectorGraph(load_detector_net(bundle), load_bundle(bundle).manifest.preprocess_spec).eval()
    frames = _frames(rng, 3)
    with torch.no_grad():
        t_map, t_score, t_feat = module(torch.from_numpy(frames))
    o_map, o_score, o_feat = _session(bundle / ONNX_FILE).run(None, {"image": frames})
    np.testing.assert_allclose(o_feat, t_feat.numpy(), rtol=0, atol=MAP_ATOL * max(1.0, float(t_feat.abs().max())))
    scale = max(1.0, float(t_map.abs().max()))
    np.testing.assert_allclose(o_map, t_map.numpy(), rtol=0, atol=MAP_ATOL * scale)
    np.testing.assert_allclose(o_score, t_score.numpy(), rtol=0, atol=SCORE_ATOL * scale)


def test_export_with_real_frames_of_other_sizes(bundle: Path, rng: np.random.Generator) -> None:
    real = [
        rng.integers(0, 256, (100, 80), dtype=np.uint8),  # gray, larger
        rng.integers(0, 256, (48, 40, 3), dtype=np.uint8),  # colour, smaller
    ]
    info = export_detector_onnx(bundle, num_random=1, real_frames=real)
    parity = info["parity"]
    assert (parity["num_random"], parity["num_real"], parity["num_frames"]) == (1, 2, 3)
    assert parity["batch_sizes"] == [1, 3]  # 3 frames reused to fill a batch of 1 and one of 3


def test_export_without_verify_records_no_parity(bundle: Path) -> None:
    info = export_detector_onnx(bundle, verify=False)
    assert info["parity"] is None
    assert load_bundle(bundle).manifest.extra["onnx"]["parity"] is None


@pytest.mark.parametrize("opset", [MIN_OPSET - 1, 11, TRT_MAX_OPSET + 1, "17", 17.0, True])
def test_opset_out_of_range_raises_config_error(bundle: Path, opset: object) -> None:
    with pytest.raises(ConfigError, match="opset"):
        export_detector_onnx(bundle, opset=opset)  # type: ignore[arg-type]
    assert ONNX_FILE not in load_bundle(bundle).manifest.files


def test_export_at_opset_20(bundle: Path) -> None:
    info = export_detector_onnx(bundle, opset=20, num_random=1)
    assert info["opset"] == 20 and info["parity"]["passed"]


def test_trt_lint_failure_aborts_export_and_leaves_bundle(tmp_path: Path, rng: np.random.Generator) -> None:
    """score_top_fraction=1 at 64x64 makes the score's TopK K=4096, above TensorRT's limit."""
    bundle = _make_bundle(tmp_path / "bundle", rng, score_mode="top_fraction", score_top_fraction=1.0)
    before = (bundle / "manifest.json").read_bytes()
    with pytest.raises(ExportError, match="TopK") as info:
        export_detector_onnx(bundle)
    assert "K=4096" in str(info.value) and "TensorRT" in str(info.value)
    assert (bundle / "manifest.json").read_bytes() == before
    assert not (bundle / ONNX_FILE).exists()


# ----------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    "spec",
    [PreprocessSpec(image_size=SIZE), PreprocessSpec(image_size=(32, 48), mean=(0.3, 0.5, 0.7), std=(0.2, 0.25, 0.3))],
)
def test_baked_normalisation_equals_sdk_normalize(spec: PreprocessSpec, rng: np.random.Generator) -> None:
    module = DetectorGraph(torch.nn.Identity(), spec)
    frames = _all_values_and_random(rng, spec.image_size)
    expected = np.stack([normalize(f, spec) for f in frames])
    with torch.no_grad():
        got = module.normalize(torch.from_numpy(frames)).numpy()
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)  # same float32 constants, same two operations: bit-exact
    assert module.scale.dtype == module.offset.dtype == torch.float32


def _all_values_and_random(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Two frames: every uint8 value 0..255 in every channel, and random pixels."""
    first = np.zeros((*size, 3), np.uint8)
    first.reshape(-1, 3)[:256] = np.arange(256, dtype=np.uint8)[:, None]
    return np.stack([first, rng.integers(0, 256, (*size, 3), dtype=np.uint8)])


class _Echo(torch.nn.Module):
    """Stand-in net returning its (normalised) input, to read the graph's normalisation back."""

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return x, x.flatten(1).mean(dim=1), x


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # dynamo=False is the legacy exporter, on purpose
def test_onnx_normalisation_equals_sdk_normalize(tmp_path: Path, rng: np.random.Generator) -> None:
    """The normalisation as onnxruntime runs it (observed bit-exact on x86; 1e-6 allows a fused multiply-add)."""
    spec = PreprocessSpec(image_size=(32, 32), mean=(0.3, 0.5, 0.7), std=(0.2, 0.25, 0.3))
    module = DetectorGraph(_Echo(), spec).eval()
    path = tmp_path / "norm.onnx"
    torch.onnx.export(module, (torch.from_numpy(_frames(rng, 2, (32, 32))),), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["x", "m", "f"], dynamic_axes={"image": {0: "b"}})
    frames = _all_values_and_random(rng, (32, 32))
    got = _session(path).run(["x"], {"image": frames})[0]
    np.testing.assert_allclose(got, np.stack([normalize(f, spec) for f in frames]), rtol=0, atol=1e-6)
    assert lint_onnx(path) == []


# ----------------------------------------------------------------------------- parity function


def test_verify_parity_detects_a_mismatch(bundle: Path, rng: np.random.Generator) -> None:
    export_detector_onnx(bundle, verify=False)
    spec = load_bundle(bundle).manifest.preprocess_spec
    net = load_detector_net(bundle)
    tol = {"map_atol": MAP_ATOL, "score_atol": SCORE_ATOL}
    ok = verify_onnx_parity(net, bundle / ONNX_FILE, _frames(rng, 2), spec=spec, **tol)
    assert ok["passed"] and ok["batch_sizes"] == [1, 3]
    with torch.no_grad():
        net.map_norm[1, 0] += 0.01  # the torch side drifts from the exported graph
    with pytest.raises(ExportError, match="anomaly_map max"):
        verify_onnx_parity(net, bundle / ONNX_FILE, _frames(rng, 4), spec=spec, **tol)


def test_verify_parity_argument_errors(bundle: Path, rng: np.random.Generator) -> None:
    export_detector_onnx(bundle, verify=False)
    net = load_detector_net(bundle)
    with pytest.raises(ConfigError, match="spec"):
        verify_onnx_parity(net, bundle / ONNX_FILE, _frames(rng, 1), map_atol=MAP_ATOL, score_atol=SCORE_ATOL)
    spec = load_bundle(bundle).manifest.preprocess_spec
    with pytest.raises(InputError, match="uint8"):
        verify_onnx_parity(net, bundle / ONNX_FILE, _frames(rng, 1).astype(np.float32),
                           map_atol=1, score_atol=1, spec=spec)
    with pytest.raises(InputError, match="resize"):
        verify_onnx_parity(net, bundle / ONNX_FILE, _frames(rng, 1, (32, 32)), map_atol=1, score_atol=1, spec=spec)


# ----------------------------------------------------------------------------- lint


def _save(tmp_path: Path, graph: onnx.GraphProto, opset: int = 17, name: str = "m.onnx") -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def test_lint_accepts_a_clean_graph(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "clean", [x], [y])
    assert lint_onnx(_save(tmp_path, graph)) == []


def test_lint_flags_double_unsupported_ops_and_opset(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.DOUBLE, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])
    w = helper.make_tensor("w", TensorProto.DOUBLE, [4], [1.0, 2.0, 3.0, 4.0])
    k = helper.make_tensor("k", TensorProto.INT64, [1], [TRT10_TOPK_MAX_K + 1])
    nodes = [
        helper.make_node("Mul", ["x", "w"], ["xw"], name="scale"),
        helper.make_node("Unique", ["xw"], ["u"], name="uniq"),
        helper.make_node("Cast", ["u"], ["f"], to=TensorProto.FLOAT, name="to_float"),
        helper.make_node("Cast", ["f"], ["d"], to=TensorProto.DOUBLE, name="to_double"),
        helper.make_node("Cast", ["d"], ["f2"], to=TensorProto.FLOAT, name="back"),
        helper.make_node("MyPlugin", ["f2"], ["p"], domain="com.example", name="plugin"),
        helper.make_node("TopK", ["p", "k"], ["y", "i"], name="topk"),
    ]
    graph = helper.make_graph(nodes, "bad", [x], [y], initializer=[w, k])
    problems = lint_onnx(_save(tmp_path, graph, opset=TRT_MAX_OPSET + 1))
    text = "\n".join(problems)
    assert "input 'x' is DOUBLE" in text
    assert "initializer 'w' is DOUBLE" in text
    assert "Cast node 'to_double' casts to DOUBLE" in text
    assert "operator Unique is marked unsupported" in text and "uniq" in text
    assert "operator com.example::MyPlugin is a custom-domain operator" in text
    assert f"K={TRT10_TOPK_MAX_K + 1}" in text
    assert f"opset {TRT_MAX_OPSET + 1} is outside" in text
    assert "Mul" not in text.replace("'scale'", "")  # supported ops are not reported
    assert len(problems) == len(set(problems))


def test_lint_flags_ops_not_in_the_matrix_and_inner_double(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    nodes = [
        helper.make_node("Cast", ["x"], ["d"], to=TensorProto.DOUBLE, name="up"),
        helper.make_node("Cast", ["d"], ["y"], to=TensorProto.FLOAT, name="down"),
        helper.make_node("Swish", ["x"], ["s"], name="swish"),  # a newer ONNX op the matrix does not list
    ]
    graph = helper.make_graph(nodes, "inner", [x], [y, helper.make_tensor_value_info("s", TensorProto.FLOAT, [2])])
    problems = lint_onnx(_save(tmp_path, graph, opset=24))
    text = "\n".join(problems)
    assert "tensor 'd' is DOUBLE" in text  # found through shape inference
    assert "operator Swish is not in TensorRT" in text
    assert "opset" not in text


def test_lint_unreadable_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a model")
    with pytest.raises(ExportError, match="cannot read ONNX model"):
        lint_onnx(bad)


def test_trt_ops_tables_are_consistent() -> None:
    assert not TRT10_SUPPORTED_OPS & TRT10_UNSUPPORTED_OPS
    for op in ("Conv", "LayerNormalization", "TopK", "Resize", "Cast", "Pad", "Erf", "Softmax"):
        assert op in TRT10_SUPPORTED_OPS
    for op in ("Unique", "NonZero"):
        assert (op in TRT10_UNSUPPORTED_OPS) != (op in TRT10_SUPPORTED_OPS)
    assert TRT_MAX_OPSET >= DEFAULT_OPSET


# ----------------------------------------------------------------------------- CLI


def test_cli_export_prints_parity(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from protoinspect.pipelines.cli import COMMANDS
    from protoinspect.pipelines.cli import main as cli_main

    assert COMMANDS["export"][0] == "protoinspect.pipelines.commands:export_main"
    assert cli_main(["export", str(bundle), "--opset", "17"]) == 0
    out = capsys.readouterr().out
    assert "anomaly_map  max |diff|" in out and "score        max |diff|" in out
    assert "lint: ok" in out and ONNX_FILE in out
    assert ONNX_FILE in load_bundle(bundle).manifest.files


def test_cli_export_no_verify_and_errors(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(bundle), "--no-verify"]) == 0
    assert "not checked" in capsys.readouterr().out
    assert main([str(bundle), "--opset", "13"]) == 2
    err = capsys.readouterr().err
    assert "opset 13" in err and "Traceback" not in err
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_export_with_real_frames(bundle: Path, tmp_path: Path, rng: np.random.Generator,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    import cv2

    paths = []
    for i, shape in enumerate([(90, 70, 3), (50, 60)]):
        p = tmp_path / f"frame{i}.png"
        cv2.imwrite(str(p), rng.integers(0, 256, shape, dtype=np.uint8))
        paths.append(str(p))
    assert main([str(bundle), "--num-random", "2", "--frames", *paths]) == 0
    assert "(2 random, 2 real)" in capsys.readouterr().out
