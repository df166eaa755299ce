"""export/trt_plugins.py and export/trt_plugin_kernels.py: the Triton kernels as TensorRT AOT plugins, and the
custom-op ONNX export.

Without TensorRT: the custom-op ONNX is checked with onnx alone, the plugin entry kernels are compiled to
PTX for sm_87 / sm_90 by Triton on this CPU and run under the Triton interpreter against the references,
and the plugin definitions are exercised through a fake ``tensorrt.plugin``.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from detector_bundles import make_exported_bundle

from protoinspect.sdk.errors import ConfigError, MissingDependencyError

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[2]
NEEDS_GPU = "needs TensorRT and a CUDA GPU"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_exported_bundle(tmp_path_factory.mktemp("plugins") / "bundle", np.random.default_rng())


# ------------------------------------------------------------------------------------------- ONNX variant
def test_custom_op_onnx_has_plugin_nodes(exported: Path, tmp_path: Path) -> None:
    import onnx

    from protoinspect.export.onnx_custom_ops import export_detector_custom_ops
    from protoinspect.sdk.bundle import load_bundle

    config = load_bundle(exported).manifest.model["config"]
    info = export_detector_custom_ops(exported, tmp_path / "plugins.onnx")
    model = onnx.load(info["path"])
    nodes = [n for n in model.graph.node if n.domain == "protoinspect"]
    assert len(nodes) == info["custom_nodes"] == 2 * config["num_layers"]  # aggregate + reconstruct per layer
    assert {n.op_type for n in nodes} == {"prototype_attention"}
    assert {(o.domain, o.version) for o in model.opset_import} >= {("protoinspect", 1), ("", 17)}
    head_dim = config["embed_dim"] // config["num_heads"]
    inferred = {v.name: v.type.tensor_type for v in model.graph.value_info}
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["plugin_namespace"] == b"protoinspect" and attrs["aot"] == 1
        assert attrs["scale"] == pytest.approx(1 / math.sqrt(head_dim))
        assert len(node.input) == 3 and len(node.output) == 2
        out, lse = inferred[node.output[0]], inferred[node.output[1]]
        assert out.elem_type == lse.elem_type == onnx.TensorProto.FLOAT
        assert len(out.shape.dim) == 4 and len(lse.shape.dim) == 3
    assert not any(n.op_type == "Softmax" for n in model.graph.node)  # every attention went to the plugin
    assert [o.name for o in model.graph.output] == ["anomaly_map", "score", "features"]
    assert info["plugins"] == [{"id": "protoinspect::prototype_attention", "aot": True}]  # for the engine's sidecar


def test_default_export_keeps_reference_operators(exported: Path) -> None:
    import onnx

    model = onnx.load(str(exported / "detector.onnx"))
    assert not any(n.domain not in ("", "ai.onnx") for n in model.graph.node)
    assert sum(n.op_type == "Softmax" for n in model.graph.node) >= 4


def test_custom_op_export_refuses_topk(tmp_path: Path, rng: np.random.Generator) -> None:
    from protoinspect.export.onnx_custom_ops import export_detector_custom_ops

    topk = make_exported_bundle(tmp_path / "topk", rng, topk=4)
    with pytest.raises(ConfigError, match="topk=4"):
        export_detector_custom_ops(topk, tmp_path / "x.onnx")


# ------------------------------------------------------------------------------------------- kernels -> PTX
def _params(ptx: str, entry: str) -> list[str]:
    body = re.search(rf"\.entry {entry}\((.*?)\)", ptx, re.S)
    assert body, f"no .entry {entry} in the PTX"
    return re.findall(r"\.param \.(u64|u32)", body.group(1))


def test_plugin_kernels_compile_to_ptx_without_a_gpu() -> None:
    from protoinspect.export.trt_plugin_kernels import TACTICS, compile_prototype_attention, compile_region_guided_attention

    k = compile_prototype_attention("fp16", 32, k_batched=True, arch=87)
    assert k.name == "prototype_attention_trt" and ".target sm_87" in k.ptx
    # TensorRT's order: q, k, v pointers, then H, N, M, then out, lse (Triton's unused scratch pointers trail)
    assert _params(k.ptx, k.name)[:8] == ["u64"] * 3 + ["u32"] * 3 + ["u64"] * 2
    assert k.threads == 32 * TACTICS[1][2] and k.shared > 0 and k.block_n == TACTICS[1][0]
    r = compile_region_guided_attention("fp32", 24, bias_per_head=False, arch=90, tactic=2)
    assert r.name == "region_guided_attention_trt" and re.search(r"\.target sm_90", r.ptx)
    assert _params(r.ptx, r.name)[:9] == ["u64"] * 4 + ["u32"] * 4 + ["u64"]
    assert r.num_warps == TACTICS[2][2] and r.block_n == TACTICS[2][0]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"dtype": "bf16"}, "take"), ({"head_dim": 300}, "1..256"), ({"tactic": 9}, "unknown tactic"),
    ({"arch": 70}, "sm_75"), ({"scale": float("inf")}, "finite"),
])
def test_plugin_kernel_arguments_are_checked(kwargs: dict, message: str) -> None:
    from protoinspect.export.trt_plugin_kernels import compile_prototype_attention

    args = {"dtype": "fp16", "head_dim": 32, "k_batched": True, **kwargs}
    with pytest.raises(ConfigError, match=message):
        compile_prototype_attention(**args)


INTERPRETED = textwrap.dedent("""
    import math, torch
    from protoinspect.export.trt_plugin_kernels import prototype_attention_trt, region_guided_attention_trt
    from protoinspect.kernels.attention_reference import prototype_attention_reference
    from protoinspect.kernels.attention_reference import region_guided_attention_reference
    from protoinspect.kernels.launch_checks import LOG2E
    B, H, N, M, D = 2, 2, 37, 45, 24
    worst = 0.0
    for batched in (True, False):
        q = torch.randn(B, H, N, D); k = torch.randn(*((B, H, M, D) if batched else (H, M, D))); v = torch.randn_like(k)
        out, lse = torch.empty(B, H, N, D), torch.empty(B, H, N)
        prototype_attention_trt[(math.ceil(N / 32), B * H)](q, k, v, H, N, M, out, lse, HEAD_DIM=D, HEAD_DIM_PAD=32,
            K_BATCHED=int(batched), QK_SCALE=D ** -0.5 * LOG2E, DOT_PRECISION="ieee", BLOCK_N=32, BLOCK_M=32)
        worst = max(worst, (out - prototype_attention_reference(q, k, v)).abs().max().item())
        s = torch.matmul(q, k.transpose(-1, -2)) * D ** -0.5
        worst = max(worst, (lse - torch.logsumexp(s, -1) * LOG2E).abs().max().item())
    for hb in (1, H):
        q, k, v = (torch.randn(B, H, N, D) for _ in range(3)); bias = torch.randn(B, hb, N)
        out = torch.empty(B, H, N, D)
        region_guided_attention_trt[(math.ceil(N / 32), B * H)](q, k, v, bias, H, N, 1, 5, out, HEAD_DIM=D,
            HEAD_DIM_PAD=32, BIAS_PER_HEAD=int(hb == H), QK_SCALE=D ** -0.5 * LOG2E, DOT_PRECISION="ieee",
            BLOCK_N=32, BLOCK_M=32)
        ref = region_guided_attention_reference(q, k, v, bias, bias_rows=slice(1, 5))
        worst = max(worst, (out - ref).abs().max().item())
    print("WORST", worst)
""")


def test_plugin_entry_kernels_match_references_under_the_interpreter() -> None:
    """The entry kernels' strides and argument order, checked numerically (separate process: the variable is read
    when @triton.jit decorates)."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", INTERPRETED], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    worst = float(re.search(r"WORST (\S+)", proc.stdout).group(1))
    assert worst < 1e-5  # fp32 IEEE dots: float32 rounding only


# ------------------------------------------------------------------------------------------- plugin definitions
class Sym:
    """A symbolic size: an int or a name, with the arithmetic the plugin code uses."""

    def __init__(self, v: Any) -> None:
        self.v = v

    is_constant = property(lambda self: isinstance(self.v, int))
    constant_value = property(lambda self: self.v)

    def __mul__(self, other: Any) -> Sym:
        return Sym(f"{self}*{other}")

    def __repr__(self) -> str:
        return str(self.v)


def fake_trtp() -> types.ModuleType:
    trtp = types.ModuleType("tensorrt.plugin")
    trtp.defs = {}  # type: ignore[attr-defined]

    def decorator(kind: str) -> Any:
        return lambda pid: (lambda fn: trtp.defs.setdefault((kind, pid), fn))

    trtp.register, trtp.autotune, trtp.aot_impl = decorator("register"), decorator("autotune"), decorator("aot_impl")

    class TensorDesc:
        def __init__(self, shape: Any, dtype: Any) -> None:
            self.shape_expr, self.dtype = [s if isinstance(s, Sym) else Sym(s) for s in shape], dtype

        def like(self) -> TensorDesc:
            return TensorDesc(self.shape_expr, self.dtype)

    class AutoTuneCombination:
        def __init__(self, types_: str, fmt: str) -> None:
            self.types, self.format, self.tactic_ids = types_, fmt, []

        def tactics(self, ids: list[int]) -> None:
            self.tactic_ids = list(ids)

    trtp.TensorDesc, trtp.AutoTuneCombination = TensorDesc, AutoTuneCombination
    trtp.KernelLaunchParams = type("KernelLaunchParams", (), {})
    trtp.SymExprs = list
    trtp.SymIntExprs = type("SymIntExprs", (list,), {"from_tuple": classmethod(lambda cls, xs: cls(xs))})
    trtp.SymInt32 = lambda e: e
    trtp.cdiv = lambda a, b: f"cdiv({a},{b})"
    trtp.from_shape_expr = lambda shape, dtype: TensorDesc(shape, dtype)
    return trtp


def install_plugin_fakes(monkeypatch: pytest.MonkeyPatch, version: str) -> types.ModuleType:
    import protoinspect.export.trt_plugins as plugins

    trt = types.ModuleType("tensorrt")
    trt.__version__, trt.float32, trt.float16, trt.bfloat16 = version, "float32", "float16", "bfloat16"
    trtp = fake_trtp()
    trt.plugin = trtp
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", trtp)
    monkeypatch.setattr(plugins, "_registered", None)
    return trtp


def test_register_plugins_defines_aot_implementations(monkeypatch: pytest.MonkeyPatch) -> None:
    from protoinspect.export.trt_plugins import plugin_id, register_plugins

    trtp = install_plugin_fakes(monkeypatch, "10.9.0")
    assert register_plugins(arch=87) == 87 and register_plugins(arch=87) == 87  # idempotent
    with pytest.raises(ConfigError, match="already registered for sm_87"):
        register_plugins(arch=90)
    proto, region = plugin_id("prototype_attention"), plugin_id("region_guided_attention")
    assert {k for k, _ in trtp.defs} == {"register", "autotune", "aot_impl"} and {p for _, p in trtp.defs} == {proto, region}

    q = trtp.TensorDesc([Sym("B"), 4, Sym("N"), 32], "float16")
    k = trtp.TensorDesc([Sym("B"), 4, Sym("M"), 32], "float16")
    out, lse = trtp.defs[("register", proto)](q, k, k, 0.17)
    assert [s.v for s in lse.shape_expr] == ["B", 4, "N"] and lse.dtype == "float32" and out.dtype == "float16"
    (combo,) = trtp.defs[("autotune", proto)](q, k, k, (out, lse))
    assert combo.tactic_ids == [1, 2] and combo.format == "LINEAR" and combo.types.count("FP32|FP16") == 4
    name, ptx, launch, extra = trtp.defs[("aot_impl", proto)](q, k, k, 0.17, (out, lse), 2)
    assert name == b"prototype_attention_trt" and b".entry prototype_attention_trt(" in ptx and b"sm_87" in ptx
    assert (launch.grid_x, str(launch.grid_y), launch.block_x) == ("cdiv(N,128)", "B*4", 256) and launch.shared_mem > 0
    assert [str(e) for e in extra] == ["4", "N", "M"]

    bias = trtp.TensorDesc([Sym("B"), 1, Sym("N")], "float32")
    q32 = trtp.TensorDesc([Sym("B"), 2, Sym("N"), 16], "float32")
    name, ptx, launch, extra = trtp.defs[("aot_impl", region)](q32, q32, q32, bias, 0, -1, 0.25, (q32,), 1)
    assert name == b"region_guided_attention_trt" and [str(e) for e in extra] == ["2", "N", "0", "N"]
    dynamic = trtp.TensorDesc([Sym("B"), 4, Sym("N"), Sym("D")], "float16")
    with pytest.raises(ConfigError, match="head dim D.*dynamic"):
        trtp.defs[("aot_impl", proto)](dynamic, k, k, 0.17, (out, lse), 1)
    with pytest.raises(ConfigError, match="float32 or float16"):
        trtp.defs[("aot_impl", proto)](trtp.TensorDesc([1, 4, 8, 32], "bfloat16"), k, k, 0.17, (out, lse), 1)


def test_register_plugins_needs_tensorrt_10_9(monkeypatch: pytest.MonkeyPatch) -> None:
    from protoinspect.export.trt_plugins import register_plugins

    install_plugin_fakes(monkeypatch, "10.3.0")
    with pytest.raises(MissingDependencyError, match="TensorRT 10.3.0 has no ahead-of-time.*10.9.*IPluginV3"):
        register_plugins(arch=87)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match=r"protoinspect\[tensorrt\]"):
        register_plugins(arch=87)


def test_register_plugins_without_triton_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin_fakes(monkeypatch, "10.9.0")
    for name in [m for m in sys.modules if m == "protoinspect.export.trt_plugin_kernels"
                 or m.startswith("protoinspect.kernels.") and m.endswith(("_kernel", "_backward", "tiles", "mma"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "triton", None)
    from protoinspect.export.trt_plugins import register_plugins

    with pytest.raises(MissingDependencyError, match=r'pip install "protoinspect\[triton\]"'):
        register_plugins(arch=87)


def test_plugin_layers_list_custom_nodes_for_the_sidecar() -> None:
    import onnx
    from onnx import helper

    from protoinspect.export.trt_plugins import plugin_layers
    from protoinspect.sdk.backends.trt_sidecar import runtime_plugins

    nodes = [helper.make_node("prototype_attention", ["a"], ["b"], domain="protoinspect", aot=1),
             helper.make_node("prototype_attention", ["b"], ["c"], domain="protoinspect", aot=1),
             helper.make_node("Relu", ["c"], ["d"]),
             helper.make_node("fancy_op", ["d"], ["e"], domain="acme")]
    value = helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1])
    graph = helper.make_graph(nodes, "g", [value], [helper.make_tensor_value_info("e", onnx.TensorProto.FLOAT, [1])])
    layers = plugin_layers(helper.make_model(graph))
    assert layers == [{"id": "acme::fancy_op", "aot": False}, {"id": "protoinspect::prototype_attention", "aot": True}]
    assert runtime_plugins({"plugins": layers}) == ["acme::fancy_op"]  # AOT kernels are inside the engine


def _real_trt_with_plugins() -> bool:
    from fake_tensorrt import real_tensorrt_gpu

    if not real_tensorrt_gpu():
        return False
    import tensorrt

    from protoinspect.sdk.backends.trt_sidecar import version_key

    return version_key(tensorrt.__version__)[:2] >= (10, 9)


@pytest.mark.gpu
@pytest.mark.skipif(not _real_trt_with_plugins(), reason=NEEDS_GPU + " (TensorRT >= 10.9)")
def test_real_plugin_engine_matches_reference_graph(exported: Path, tmp_path: Path) -> None:
    import tensorrt as trt

    from protoinspect.export.onnx_custom_ops import export_detector_custom_ops
    from protoinspect.export.trt_plugins import register_plugins

    register_plugins()
    path = export_detector_custom_ops(exported, tmp_path / "plugins.onnx")["path"]
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(Path(path).read_bytes()), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("image", (1, 64, 64, 3), (1, 64, 64, 3), (2, 64, 64, 3))
    config.add_optimization_profile(profile)
    assert builder.build_serialized_network(network, config) is not None
