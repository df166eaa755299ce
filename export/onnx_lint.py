"""TensorRT 10 lint of an ONNX graph: operators, opset, DOUBLE tensors and TopK limits.

Checks a model against TensorRT 10's ONNX parser support matrix (:mod:`protoinspect.export.trt_ops`), recursing
into If/Loop/Scan bodies; :func:`lint_onnx` returns the problems found (empty when none).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from protoinspect.export.trt_ops import (
    TRT10_SUPPORTED_OPS,
    TRT10_TOPK_MAX_K,
    TRT10_UNSUPPORTED_OPS,
    TRT_DOC_VERSION,
    TRT_MAX_OPSET,
    TRT_MIN_OPSET,
)
from protoinspect.sdk.errors import ExportError

_ONNX_DOMAINS = ("", "ai.onnx")


def _dtype_name(elem_type: int) -> str:
    import onnx

    try:
        return onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return str(elem_type)


def _subgraphs(node: Any) -> list[Any]:
    import onnx

    graphs = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            graphs.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            graphs.extend(attr.graphs)
    return graphs


def _constant_values(graph: Any, names: set[str]) -> dict[str, np.ndarray]:
    """Values of the tensors ``names`` that are initializers or Constant outputs (to read TopK's K)."""
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer if init.name in names}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in _ONNX_DOMAINS and node.output[0] in names:
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def lint_onnx(model_path: str | Path) -> list[str]:
    """TensorRT 10 compatibility problems of an ONNX file; empty when none were found.

    Checks (TensorRT 10 ONNX parser support matrix, see :mod:`protoinspect.export.trt_ops`):
        * the default-domain opset is within ``TRT_MIN_OPSET..TRT_MAX_OPSET``;
        * every node (also inside If/Loop/Scan bodies) is a default-domain operator marked supported;
        * no DOUBLE anywhere: graph inputs/outputs, value_info (after shape inference), initializers,
          Constant / ConstantOfShape values, Cast(to=DOUBLE);
        * TopK: ``K`` (when constant) at most :data:`TRT10_TOPK_MAX_K` and ``sorted`` = 1.

    Raises:
        ExportError: the file cannot be read as an ONNX model.
    """
    import onnx

    try:
        model = onnx.load(str(model_path))
    except Exception as exc:  # noqa: BLE001 - protobuf/OS errors: all mean "not a readable model"
        msg = f"cannot read ONNX model {model_path}: {type(exc).__name__}: {exc}"
        raise ExportError(msg) from exc
    try:
        model = onnx.shape_inference.infer_shapes(model)  # fills value_info, so inner DOUBLEs show
    except Exception:  # noqa: BLE001 - an invalid graph is still linted as stored
        pass

    problems: list[str] = []
    double = onnx.TensorProto.DOUBLE
    opsets = {imp.domain or "ai.onnx": imp.version for imp in model.opset_import}
    version = opsets.get("ai.onnx")
    if version is None:
        problems.append("model imports no default-domain (ai.onnx) opset")
    elif not TRT_MIN_OPSET <= version <= TRT_MAX_OPSET:
        problems.append(
            f"opset {version} is outside TensorRT {TRT_DOC_VERSION}'s supported range {TRT_MIN_OPSET}..{TRT_MAX_OPSET}"
        )

    bad_ops: dict[str, list[str]] = {}

    def check_type(kind: str, value_info: Any) -> None:
        t = value_info.type
        if t.HasField("tensor_type") and t.tensor_type.elem_type == double:
            problems.append(
                f"{kind} '{value_info.name}' is DOUBLE (TensorRT casts DOUBLE down to FLOAT; export float32)"
            )

    def visit(graph: Any, where: str) -> None:
        for vi in graph.input:
            check_type(f"{where}input", vi)
        for vi in graph.output:
            check_type(f"{where}output", vi)
        for vi in graph.value_info:
            check_type(f"{where}tensor", vi)
        for init in graph.initializer:
            if init.data_type == double:
                problems.append(f"{where}initializer '{init.name}' is DOUBLE")
        for init in graph.sparse_initializer:
            if init.values.data_type == double:
                problems.append(f"{where}sparse initializer '{init.values.name}' is DOUBLE")
        topk_inputs = {n.input[1] for n in graph.node if n.op_type == "TopK" and len(n.input) > 1}
        constants = _constant_values(graph, topk_inputs)
        for node in graph.node:
            label = node.name or (node.output[0] if node.output else node.op_type)
            if node.domain not in _ONNX_DOMAINS:
                bad_ops.setdefault(f"{node.domain}::{node.op_type}", []).append(label)
            elif node.op_type not in TRT10_SUPPORTED_OPS:
                bad_ops.setdefault(node.op_type, []).append(label)
            attrs = {a.name: a for a in node.attribute}
            if node.op_type == "Cast" and "to" in attrs and attrs["to"].i == double:
                problems.append(f"{where}Cast node '{label}' casts to DOUBLE")
            holds_value = node.op_type in ("Constant", "ConstantOfShape") and "value" in attrs
            if holds_value and attrs["value"].t.data_type == double:
                problems.append(f"{where}{node.op_type} node '{label}' holds a DOUBLE value")
            if node.op_type == "TopK":
                if "sorted" in attrs and attrs["sorted"].i != 1:
                    problems.append(f"{where}TopK node '{label}' has sorted=0 (TensorRT requires sorted=1)")
                k = constants.get(node.input[1]) if len(node.input) > 1 else None
                if k is not None and k.size == 1 and int(k.reshape(-1)[0]) > TRT10_TOPK_MAX_K:
                    problems.append(
                        f"{where}TopK node '{label}' has K={int(k.reshape(-1)[0])} > {TRT10_TOPK_MAX_K} "
                        f"(TensorRT {TRT_DOC_VERSION} requires K < {TRT10_TOPK_MAX_K + 1}; for the image score "
                        "lower score_top_fraction or the image size)"
                    )
            for sub in _subgraphs(node):
                visit(sub, f"{where}{node.op_type} '{label}' body: ")

    visit(model.graph, "")
    for op, nodes in bad_ops.items():
        shown = ", ".join(nodes[:3]) + (f", ... ({len(nodes)} nodes)" if len(nodes) > 3 else "")
        if "::" in op:
            why = "is a custom-domain operator (TensorRT needs a plugin for it)"
        elif op in TRT10_UNSUPPORTED_OPS:
            why = f"is marked unsupported in TensorRT {TRT_DOC_VERSION}'s ONNX operator matrix"
        else:
            why = f"is not in TensorRT {TRT_DOC_VERSION}'s ONNX operator matrix"
        problems.append(f"operator {op} {why} (nodes: {shown})")
    return list(dict.fromkeys(problems))  # dedupe, keep order
