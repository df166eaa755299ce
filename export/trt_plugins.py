"""The Triton attention kernels as TensorRT plugins compiled ahead of time (``tensorrt.plugin``, TensorRT >= 10.9).

:func:`register_plugins` registers two quickly deployable plugins in the namespace ``protoinspect``:

* ``protoinspect::prototype_attention`` - inputs q (B x H x N x D), k, v (B x H x M x D or H x M x D),
  attribute ``scale``; outputs out (like q) and lse (B x H x N float32);
* ``protoinspect::region_guided_attention`` - inputs q, k, v (B x H x N x D), bias (B x Hb x N),
  attributes ``row_start``, ``row_stop`` (-1 = N), ``scale``; output out (like q).

Each has a ``@trtp.register`` shape function, a ``@trtp.autotune`` declaring fp32/fp16 LINEAR I/O and
two tactics (Triton block configurations TensorRT times at build), and a ``@trtp.aot_impl`` that compiles
the entry kernels of :mod:`protoinspect.export.trt_plugin_kernels` to PTX for the build GPU's architecture.
The ONNX file must carry the custom nodes (``export/onnx_custom_ops.py``: op type = plugin name, string
attribute ``plugin_namespace``, ``aot=1``), and :func:`register_plugins` must run in the process that
parses it, before parsing.

Build time and run time are separate layers. Registration is a build-time (``export``) step; the runtime
(``protoinspect.sdk.backends``) never imports ``protoinspect.export``:

* TensorRT embeds an AOT plugin's PTX in the engine, so an engine built with these plugins deserializes
  and runs without Python plugin code (trtexec, C++, Triton Inference Server, the SDK's TensorRT backend).
* An engine's sidecar may list its plugin layers (key ``plugins``, ``[{"id": "namespace::name", "aot": bool}]``,
  from :func:`plugin_layers`). The SDK backend requires the non-AOT ones (JIT Python plugins, C++ plugin
  libraries) to be registered before it deserializes the engine. It gets them through a hook, not an
  import: ``protoinspect.sdk.backends.trt_runtime.add_plugin_registrar(namespace, fn)`` stores a callable
  that the backend runs once, right before the first engine needing that namespace, and it then checks
  TensorRT's own plugin registry (``tensorrt.get_plugin_registry()``, where ``tensorrt.plugin`` and
  ``load_library`` put their creators). A plugin still missing raises ``MissingPluginError`` naming the
  plugin, the hook and the rebuild-without-plugins alternative. An application wires the two layers::

      from protoinspect.export.trt_plugins import PLUGIN_NAMESPACE, register_plugins
      from protoinspect.sdk.backends.trt_runtime import add_plugin_registrar
      add_plugin_registrar(PLUGIN_NAMESPACE, register_plugins)

JetPack 6 ships TensorRT 10.3, which has no ``tensorrt.plugin`` AOT support: there the kernels would
need a C++ IPluginV3; :func:`register_plugins` says so instead of failing obscurely.

No ``from __future__ import annotations`` here on purpose: ``tensorrt.plugin`` checks the decorated
functions' annotations against its own classes at registration time.
"""

import logging
from typing import Any, Dict, List, Optional, Tuple, Union

from protoinspect.kernels.errors import TritonNotInstalledError
from protoinspect.sdk._imports import require
from protoinspect.sdk.backends.trt_sidecar import version_key
from protoinspect.sdk.errors import ConfigError, MissingDependencyError

logger = logging.getLogger(__name__)

PLUGIN_NAMESPACE = "protoinspect"
PROTOTYPE_ATTENTION = "prototype_attention"
REGION_GUIDED_ATTENTION = "region_guided_attention"
#: First TensorRT with stable QDP ahead-of-time plugins (``tensorrt.plugin.aot_impl``).
MIN_TRT_VERSION = (10, 9)

_registered: Optional[int] = None


def plugin_id(name: str) -> str:
    """``"prototype_attention"`` -> ``"protoinspect::prototype_attention"``."""
    return f"{PLUGIN_NAMESPACE}::{name}"


def current_arch() -> int:
    """Compute capability of CUDA device 0 as an int (87 for sm_87), through pycuda."""
    cuda = require("pycuda.driver")
    cuda.init()
    major, minor = cuda.Device(0).compute_capability()
    return int(major) * 10 + int(minor)


def plugin_layers(model: Any) -> List[Dict[str, Any]]:
    """The plugin layers of an ONNX model, as an engine sidecar's ``plugins`` entry (see the module docstring).

    Args:
        model: an ``onnx.ModelProto``; a node outside the standard domains ("" / "ai.onnx") becomes a
            TensorRT plugin layer ``domain::op_type``, built ahead of time when its int attribute ``aot`` is 1.

    Returns:
        ``[{"id": "namespace::name", "aot": bool}, ...]``, one entry per distinct plugin, sorted by id.
    """
    layers: Dict[str, bool] = {}
    for node in model.graph.node:
        if node.domain in ("", "ai.onnx"):
            continue
        aot = any(a.name == "aot" and a.i == 1 for a in node.attribute)
        pid = f"{node.domain}::{node.op_type}"
        layers[pid] = layers.get(pid, True) and aot
    return [{"id": pid, "aot": aot} for pid, aot in sorted(layers.items())]


def _constant(expr: Any, what: str) -> int:
    if not getattr(expr, "is_constant", False):
        raise ConfigError(f"{what} must be a fixed number in the network (the kernel is compiled for it); it is dynamic")
    return int(expr.constant_value)


def register_plugins(arch: Optional[int] = None) -> int:
    """Register both plugins with ``tensorrt.plugin`` (once per process) and return the target architecture.

    Args:
        arch: compute capability to compile for (87 = Jetson Orin, 90 = H100); None: CUDA device 0's.

    Raises:
        MissingDependencyError: tensorrt or triton (or pycuda, for ``arch=None``) is not installed, or TensorRT
            is older than 10.9 (no AOT Python plugins: JetPack 6's 10.3 needs a C++ IPluginV3 instead).
        ConfigError: already registered for another architecture in this process.
    """
    global _registered
    trt = require("tensorrt")
    if version_key(trt.__version__)[:2] < MIN_TRT_VERSION:
        raise MissingDependencyError(
            f"TensorRT {trt.__version__} has no ahead-of-time Python plugins (tensorrt.plugin.aot_impl needs "
            f"TensorRT >= {'.'.join(map(str, MIN_TRT_VERSION))}); JetPack 6 ships 10.3: build the detector without "
            "custom ops (the default ONNX export), or ship the kernel as a C++ IPluginV3 library")
    target = current_arch() if arch is None else int(arch)
    if _registered is not None:
        if _registered != target:
            raise ConfigError(f"plugins already registered for sm_{_registered} in this process; cannot switch to sm_{target}")
        return target
    _define(trt, require("tensorrt.plugin"), target)
    _registered = target
    logger.info("registered TensorRT AOT plugins %s and %s for sm_%d", plugin_id(PROTOTYPE_ATTENTION),
                plugin_id(REGION_GUIDED_ATTENTION), target)
    return target


def _define(trt: Any, trtp: Any, arch: int) -> None:
    """The register / autotune / aot_impl definitions of both plugins (annotations are trtp's own classes)."""
    try:
        from protoinspect.export.trt_plugin_kernels import (
            TACTICS,
            compile_prototype_attention,
            compile_region_guided_attention,
        )
    except TritonNotInstalledError as exc:
        raise MissingDependencyError(str(exc)) from exc

    desc = trtp.TensorDesc
    aot_result = Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]

    def dtype_name(t: Any) -> str:
        if t.dtype == trt.float16:
            return "fp16"
        if t.dtype == trt.float32:
            return "fp32"
        raise ConfigError(f"the attention plugins take float32 or float16 tensors, got {t.dtype}")

    def launch(q: Any, compiled: Any) -> Any:
        params = trtp.KernelLaunchParams()
        shape = q.shape_expr
        params.grid_x = trtp.cdiv(shape[2], compiled.block_n)
        params.grid_y = shape[0] * shape[1]
        params.block_x = compiled.threads
        params.shared_mem = compiled.shared
        return params

    # ---------------------------------------------------------------- prototype attention
    @trtp.register(plugin_id(PROTOTYPE_ATTENTION))
    def prototype_attention_desc(q: desc, k: desc, v: desc, scale: float) -> Tuple[desc, desc]:
        shape = q.shape_expr
        return q.like(), trtp.from_shape_expr((shape[0], shape[1], shape[2]), dtype=trt.float32)

    @trtp.autotune(plugin_id(PROTOTYPE_ATTENTION))
    def prototype_attention_tune(q: desc, k: desc, v: desc, outputs: Tuple[desc, desc]) -> List[trtp.AutoTuneCombination]:
        combo = trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, FP32|FP16, FP32|FP16, FP32", "LINEAR")
        combo.tactics(sorted(TACTICS))
        return [combo]

    @trtp.aot_impl(plugin_id(PROTOTYPE_ATTENTION))
    def prototype_attention_aot(q: desc, k: desc, v: desc, scale: float, outputs: Tuple[desc, desc],
                                tactic: int) -> aot_result:
        head_dim = _constant(q.shape_expr[3], "the head dim D of prototype_attention's q")
        compiled = compile_prototype_attention(dtype_name(q), head_dim, k_batched=len(k.shape_expr) == 4,
                                               scale=scale, tactic=int(tactic), arch=arch)
        qs, ks = q.shape_expr, k.shape_expr
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(qs[1]), trtp.SymInt32(qs[2]), trtp.SymInt32(ks[len(ks) - 2])])
        return compiled.name.encode(), compiled.ptx.encode(), launch(q, compiled), extra

    # ---------------------------------------------------------------- region-guided attention
    @trtp.register(plugin_id(REGION_GUIDED_ATTENTION))
    def region_guided_attention_desc(q: desc, k: desc, v: desc, bias: desc, row_start: int, row_stop: int,
                                     scale: float) -> desc:
        return q.like()

    @trtp.autotune(plugin_id(REGION_GUIDED_ATTENTION))
    def region_guided_attention_tune(q: desc, k: desc, v: desc, bias: desc,
                                     outputs: Tuple[desc]) -> List[trtp.AutoTuneCombination]:
        combo = trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, FP32|FP16, FP32|FP16, FP32|FP16", "LINEAR")
        combo.tactics(sorted(TACTICS))
        return [combo]

    @trtp.aot_impl(plugin_id(REGION_GUIDED_ATTENTION))
    def region_guided_attention_aot(q: desc, k: desc, v: desc, bias: desc, row_start: int, row_stop: int,
                                    scale: float, outputs: Tuple[desc], tactic: int) -> aot_result:
        head_dim = _constant(q.shape_expr[3], "the head dim D of region_guided_attention's q")
        bias_heads = bias.shape_expr[1]
        per_head = not (getattr(bias_heads, "is_constant", False) and int(bias_heads.constant_value) == 1)
        compiled = compile_region_guided_attention(dtype_name(q), head_dim, bias_per_head=per_head, scale=scale,
                                                   tactic=int(tactic), arch=arch)
        qs = q.shape_expr
        stop = qs[2] if int(row_stop) < 0 else int(row_stop)
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(e) for e in (qs[1], qs[2], int(row_start), stop)])
        return compiled.name.encode(), compiled.ptx.encode(), launch(q, compiled), extra
