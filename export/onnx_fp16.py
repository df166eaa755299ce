"""Float32 -> float16 conversion of an ONNX graph, for TensorRT 11's strongly typed fp16 engines.

TensorRT 11 removed ``BuilderFlag.FP16``: a strongly typed network runs each tensor in the type the
ONNX file gives it, so an fp16 engine needs a graph whose float tensors are float16. NVIDIA's tool for
that is ModelOpt AutoCast (``python -m modelopt.onnx.autocast``); :func:`convert_to_fp16` is a small,
dependency-free version of the same idea built on ``onnx`` alone:

* graph inputs and outputs keep their types (uint8 ``image`` in, float32 maps and scores out);
* every other float32 tensor becomes float16: initializers and ``Constant`` values are converted
  (values beyond float16's range are an error), ``Cast(to=FLOAT)`` becomes ``Cast(to=FLOAT16)``,
  ``ConstantOfShape`` values follow;
* numerically sensitive ops (:data:`DEFAULT_KEEP_FP32_OPS`: sums, means, square roots, powers) stay
  float32, with Cast nodes around them, and so do inputs that must be float32 by the ONNX spec
  (``Resize`` scales);
* the result passes ``onnx.checker`` with full type inference, or the conversion fails with
  :class:`~protoinspect.export.trt_config.EngineBuildError` naming the ModelOpt command to use instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from protoinspect.export.trt_config import EngineBuildError

#: Ops computed in float32 (Casts around them): reductions and powers overflow or lose precision in fp16.
DEFAULT_KEEP_FP32_OPS = frozenset({"ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp",
                                   "ReduceProd", "Sqrt", "Pow"})
#: (op, input index) slots that must be float32 whatever the data type (ONNX spec).
FP32_ONLY_INPUTS = frozenset({("Resize", 2)})
_DTYPE_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "EyeLike"})
FP16_MAX = float(np.finfo(np.float16).max)
AUTOCAST_HINT = ("convert the ONNX file with NVIDIA ModelOpt AutoCast instead (`python -m modelopt.onnx.autocast "
                 "--onnx_path detector.onnx --output_path detector.fp16.onnx`) and build from that")


def _fp16_tensor(tensor: Any, what: str) -> Any:
    from onnx import numpy_helper

    arr = numpy_helper.to_array(tensor)
    finite = arr[np.isfinite(arr)]
    if finite.size and float(np.abs(finite).max()) > FP16_MAX:
        raise EngineBuildError(f"{what} holds {float(np.abs(finite).max()):.3g}, beyond float16's range; " + AUTOCAST_HINT)
    return numpy_helper.from_array(arr.astype(np.float16), tensor.name)


def convert_to_fp16(model: Any, keep_fp32_ops: Iterable[str] = DEFAULT_KEEP_FP32_OPS) -> Any:
    """A float16 copy of ``model`` (an ``onnx.ModelProto``; the original is not modified).

    Raises:
        EngineBuildError: control-flow subgraphs, ops with a float ``dtype`` attribute, tensors whose type
            cannot be inferred, constants beyond float16's range, or a result that fails ``onnx.checker``.
    """
    import onnx
    from onnx import TensorProto, helper

    f32, f16 = TensorProto.FLOAT, TensorProto.FLOAT16
    keep = frozenset(keep_fp32_ops)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    for node in g.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise EngineBuildError(f"node {node.name or node.op_type} has a subgraph ({node.op_type}), which this "
                                   "converter does not handle; " + AUTOCAST_HINT)
        if node.op_type in _DTYPE_OPS:
            raise EngineBuildError(f"op {node.op_type} sets its output type by attribute; " + AUTOCAST_HINT)

    inferred = onnx.shape_inference.infer_shapes(out)
    types: dict[str, int] = {vi.name: vi.type.tensor_type.elem_type
                             for vi in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    types.update({i.name: i.data_type for i in g.initializer})
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
        elif node.op_type == "ConstantOfShape":
            value = [a for a in node.attribute if a.name == "value"]
            types[node.output[0]] = value[0].t.data_type if value else f32

    consumers: dict[str, list[tuple[Any, int]]] = {}
    for node in g.node:
        for i, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, i))
    producers = {name: node for node in g.node for name in node.output}
    inits = {i.name: i for i in g.initializer}
    graph_inputs = {i.name for i in g.input}
    graph_outputs = {o.name for o in g.output}

    def wants32(node: Any, idx: int) -> bool:
        return node.op_type in keep or (node.op_type, idx) in FP32_ONLY_INPUTS

    floats = [n for n, t in types.items() if t == f32 and (n in producers or n in inits or n in graph_inputs)]
    native: dict[str, int] = {}
    for name in floats:
        uses = consumers.get(name, [])
        all32 = bool(uses) and all(wants32(n, i) for n, i in uses) and name not in graph_outputs
        producer = producers.get(name)
        if name in graph_inputs or (producer is not None and producer.op_type in keep):
            native[name] = f32
        elif all32 and (name in inits or producer.op_type in ("Constant", "Cast", "ConstantOfShape")):
            native[name] = f32
        else:
            native[name] = f16
    for node in g.node:
        for name in node.output:
            if name and name not in types:
                raise EngineBuildError(f"cannot infer the type of tensor {name!r} (output of {node.op_type}); " + AUTOCAST_HINT)

    # rewrite the producers of float16 tensors
    for init in g.initializer:
        if native.get(init.name) == f16:
            init.CopyFrom(_fp16_tensor(init, f"initializer {init.name}"))
    for node in g.node:
        target = native.get(node.output[0]) if node.output else None
        if target != f16:
            continue
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    a.t.CopyFrom(_fp16_tensor(a.t, f"constant {node.output[0]}"))
        elif node.op_type == "Cast":
            for a in node.attribute:
                if a.name == "to":
                    a.i = f16
        elif node.op_type == "ConstantOfShape":
            value = [a for a in node.attribute if a.name == "value"]
            tensor = value[0].t if value else helper.make_tensor("value", f32, [1], [0.0])
            new = _fp16_tensor(tensor, f"ConstantOfShape {node.output[0]}")
            if value:
                value[0].t.CopyFrom(new)
            else:
                node.attribute.append(helper.make_attribute("value", new))

    # float graph outputs produced in float16: rename the producer's tensor and cast back at the end
    final_casts = []
    for name in [o.name for o in g.output if native.get(o.name) == f16]:
        inner = f"{name}__fp16"
        for node in g.node:
            node.output[:] = [inner if o == name else o for o in node.output]
            node.input[:] = [inner if i == name else i for i in node.input]
        native[inner] = f16
        types[inner] = f32
        final_casts.append(helper.make_node("Cast", [inner], [name], name=f"{name}__to_fp32", to=f32))

    # casts at consumer slots whose wanted type differs from the tensor's
    new_nodes, made = [], set()
    for node in g.node:
        for idx, name in enumerate(node.input):
            if not name or types.get(name) != f32 or name not in native:
                continue
            want = f32 if wants32(node, idx) else f16
            if native[name] == want:
                continue
            cast_name = f"{name}__to_{'fp32' if want == f32 else 'fp16'}"
            if cast_name not in made:
                new_nodes.append(helper.make_node("Cast", [name], [cast_name], name=cast_name, to=want))
                made.add(cast_name)
            node.input[idx] = cast_name
        new_nodes.append(node)
    del g.node[:]
    g.node.extend(new_nodes + final_casts)
    del g.value_info[:]
    try:
        onnx.checker.check_model(out, full_check=True)
    except Exception as exc:  # noqa: BLE001 - onnx raises ValidationError / InferenceError
        raise EngineBuildError(f"the float16 conversion produced an invalid graph ({type(exc).__name__}: {exc}); "
                               + AUTOCAST_HINT) from exc
    return out
