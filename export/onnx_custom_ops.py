"""ONNX export variant of the detector whose prototype attentions are TensorRT plugin nodes.

The default export (:mod:`protoinspect.export.onnx_export`) writes the attention as reference operators (MatMul,
Softmax, MatMul), which TensorRT fuses itself. This variant replaces every prototype cross-attention of
the decoder (reconstruction through the prototypes and, with dynamic prototypes, the aggregation into
them) by one node ``protoinspect::prototype_attention`` that TensorRT's ONNX parser maps to the AOT
plugin of :mod:`protoinspect.export.trt_plugins` (op type = plugin name, string attribute ``plugin_namespace``,
int attribute ``aot = 1``, float attribute ``scale``). The node has two outputs, ``out`` (like q) and
``lse`` (B x H x N float32); only ``out`` is used by the graph.

Usage::

    python -m protoinspect.export.onnx_custom_ops BUNDLE --out detector.plugins.onnx

Building an engine from it needs TensorRT >= 10.9 and ``protoinspect.export.trt_plugins.register_plugins()`` in the
building process (not in the process that runs the engine: the AOT plugins' kernels are embedded in it).
ONNX Runtime cannot run this file (it has no kernel for the custom op).
"""

from __future__ import annotations

import argparse
import copy
import math
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from protoinspect.export.trt_plugins import PLUGIN_NAMESPACE, PROTOTYPE_ATTENTION, plugin_layers
from protoinspect.kernels.attention_reference import prototype_attention_reference
from protoinspect.sdk.errors import ConfigError, ExportError, ProtoInspectError
from protoinspect.sdk.models.detector_graph import INPUT_NAME, OUTPUT_NAMES, DetectorGraph

CUSTOM_OPSET = 1
DEFAULT_OPSET = 17


class PrototypeAttentionOp(torch.autograd.Function):
    """Forward = the PyTorch reference; ONNX symbolic = one ``protoinspect::prototype_attention`` node."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        return prototype_attention_reference(q, k, v, scale=scale)

    @staticmethod
    def symbolic(g: Any, q: Any, k: Any, v: Any, scale: float) -> Any:
        out, lse = g.op(f"{PLUGIN_NAMESPACE}::{PROTOTYPE_ATTENTION}", q, k, v, scale_f=float(scale),
                        plugin_namespace_s=PLUGIN_NAMESPACE, aot_i=1, outputs=2)
        out.setType(q.type())
        sizes = q.type().varyingSizes()
        lse.setType(q.type().with_dtype(torch.float32).with_sizes(sizes[:3] if sizes else None))
        return out


class PluginCrossAttention(nn.Module):
    """A decoder ``_MultiHeadCross`` (same projections, shared weights) whose attention core is the plugin op."""

    def __init__(self, cross: nn.Module) -> None:
        super().__init__()
        self.cross = cross

    def forward(self, query: torch.Tensor, context: torch.Tensor, topk: int | None = None,
                impl: str = "reference") -> torch.Tensor:
        if topk is not None:
            raise ConfigError("the prototype_attention plugin computes full softmax attention; a detector trained "
                              f"with topk={topk} cannot use it: export it with the default exporter")
        c = self.cross
        q, k, v = c._heads(c.q_proj(query)), c._heads(c.k_proj(context)), c._heads(c.v_proj(context))
        out = PrototypeAttentionOp.apply(q, k, v, 1.0 / math.sqrt(q.shape[-1]))
        b, h, n, dh = out.shape
        return c.out_proj(out.transpose(1, 2).reshape(b, n, h * dh))


def use_plugin_attention(decoder: nn.Module) -> int:
    """Swap every cross-attention of ``decoder``'s layers for :class:`PluginCrossAttention`; return how many."""
    count = 0
    for layer in decoder.layers:
        for attr in ("aggregate", "reconstruct"):
            if hasattr(layer, attr):
                setattr(layer, attr, PluginCrossAttention(getattr(layer, attr)))
                count += 1
    return count


def export_detector_custom_ops(bundle_dir: str | Path, out_path: str | Path, *, opset: int = DEFAULT_OPSET) -> dict[str, Any]:
    """Export the bundle's detector with plugin attention nodes to ``out_path`` (the bundle is not changed).

    Returns:
        ``{"path", "opset", "custom_nodes", "plugin", "plugins"}``; ``plugins`` is the entry for the sidecar of
        an engine built from the file (:func:`protoinspect.export.trt_plugins.plugin_layers`: all AOT).

    Raises:
        BundleError: the bundle is invalid. ConfigError: a topk decoder.
        ExportError: torch's export failed or the file has no custom node.
    """
    import onnx

    from protoinspect.export.onnx_export import _check_opset, _feature_shape, _pin_output_shapes
    from protoinspect.sdk.bundle import load_bundle
    from protoinspect.sdk.models.loading import load_detector_net

    opset = _check_opset(opset)
    bundle = load_bundle(bundle_dir)
    spec = bundle.manifest.preprocess_spec
    net = copy.deepcopy(load_detector_net(bundle)).eval()
    if net.config.topk is not None:
        raise ConfigError(f"detector uses topk={net.config.topk}: the plugin computes full softmax attention")
    swapped = use_plugin_attention(net.decoder)
    module = DetectorGraph(net, spec).eval()
    h, w = spec.image_size
    out = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="protoinspect-plugins-") as tmp:
        path = Path(tmp) / "detector.plugins.onnx"
        batch = {0: "batch"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(module, (torch.randint(0, 256, (2, h, w, 3), dtype=torch.uint8),), str(path),
                                  dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                                  output_names=list(OUTPUT_NAMES),
                                  dynamic_axes={INPUT_NAME: batch, **{n: batch for n in OUTPUT_NAMES}},
                                  custom_opsets={PLUGIN_NAMESPACE: CUSTOM_OPSET}, do_constant_folding=True)
            except Exception as exc:  # noqa: BLE001 - torch raises many types here
                raise ExportError(f"custom-op export failed: {type(exc).__name__}: {exc}") from exc
        _pin_output_shapes(path, (h, w), _feature_shape(module))
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
        nodes = [n for n in model.graph.node if n.domain == PLUGIN_NAMESPACE and n.op_type == PROTOTYPE_ATTENTION]
        if len(nodes) != swapped:
            raise ExportError(f"expected {swapped} {PLUGIN_NAMESPACE}::{PROTOTYPE_ATTENTION} nodes, the graph has {len(nodes)}")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(path.read_bytes())
    return {"path": str(out), "opset": opset, "custom_nodes": len(nodes),
            "plugin": f"{PLUGIN_NAMESPACE}::{PROTOTYPE_ATTENTION}", "plugins": plugin_layers(model)}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m protoinspect.export.onnx_custom_ops BUNDLE --out FILE [--opset N]``."""
    p = argparse.ArgumentParser(prog="python -m protoinspect.export.onnx_custom_ops",
                                description="Export the detector with TensorRT plugin nodes for prototype attention.")
    p.add_argument("bundle")
    p.add_argument("--out", required=True, help="ONNX file to write")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    args = p.parse_args(argv)
    try:
        info = export_detector_custom_ops(args.bundle, args.out, opset=args.opset)
    except ProtoInspectError as exc:
        from protoinspect.sdk.errors import report_error

        return report_error(exc)
    print(f"wrote {info['path']}: {info['custom_nodes']} {info['plugin']} nodes (opset {info['opset']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
