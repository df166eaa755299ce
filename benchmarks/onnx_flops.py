"""Multiply-accumulates and bytes of an exported ONNX graph at batch 1, for roofline latency estimates.

    python benchmarks/onnx_flops.py BUNDLE/detector.onnx [--batch 1] [--json OUT]

Shapes come from one ONNX Runtime (CPU) run on a zero input with every intermediate tensor exposed as a
graph output, so they are the real ones (no symbolic-shape guessing). Counted:

* MACs: ``Conv`` = N * C_out * H_out * W_out * (C_in / group) * kH * kW; ``MatMul`` = batch dims * M * K * N
  (numpy broadcasting); ``Gemm`` = M * K * N; ``ConvTranspose`` = N * C_in * H_in * W_in * (C_out / group) * kH * kW.
  FLOPs = 2 * MACs. Other ops (normalisation, softmax, element-wise) are listed by element count only:
  they are memory-bound and their cost is in the bytes.
* bytes: weights (initializers), and activations two ways: ``unfused`` = every node output written once
  and read once (an upper bound: ONNX Runtime-like execution), ``fused`` = only outputs of Conv / MatMul /
  Gemm / Resize / Softmax / LayerNormalization / TopK / Reduce* written and read (TensorRT fuses
  element-wise chains into their producer, so those are roughly its kernel boundaries). fp32 sizes as
  exported; fp16 halves float tensors.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MAC_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
KERNEL_BOUNDARY_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Resize", "Softmax", "LayerNormalization",
                                 "TopK", "ReduceSum", "ReduceMean", "AveragePool", "MaxPool", "Pad"})


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def node_macs(node: Any, shapes: dict[str, tuple[int, ...]], weights: dict[str, tuple[int, ...]]) -> int:
    """Multiply-accumulates of one Conv / ConvTranspose / MatMul / Gemm node (0 for other ops)."""
    def shape(name: str) -> tuple[int, ...]:
        return weights.get(name) or shapes[name]

    if node.op_type == "Conv":
        w, out = shape(node.input[1]), shape(node.output[0])  # w: C_out x C_in/g x kH x kW
        return int(np.prod(out)) * int(np.prod(w[1:]))
    if node.op_type == "ConvTranspose":
        w, x = shape(node.input[1]), shape(node.input[0])  # w: C_in x C_out/g x kH x kW
        return int(np.prod(x)) * int(np.prod(w[1:]))
    if node.op_type == "MatMul":
        a, b = shape(node.input[0]), shape(node.input[1])
        a2, b2 = (a if len(a) > 1 else (1, *a)), (b if len(b) > 1 else (*b, 1))
        batch = np.broadcast_shapes(a2[:-2], b2[:-2]) if len(a2) > 2 or len(b2) > 2 else ()
        return int(np.prod(batch)) * a2[-2] * a2[-1] * b2[-1]
    if node.op_type == "Gemm":
        a, b = shape(node.input[0]), shape(node.input[1])
        m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
        n = b[0] if _attr(node, "transB", 0) else b[1]
        return int(m * k * n)
    return 0


def tensor_shapes(model: Any, batch: int) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape from one ONNX Runtime run on zeros (batch ``batch``; other dims as declared)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for name in node.output:
            if name and name not in known:
                probe.graph.output.append(onnx.ValueInfoProto(name=name))
                known.add(name)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    np_types = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(int64)": np.int64}
    feed = {i.name: np.zeros([batch if not isinstance(d, int) else d for d in i.shape], np_types[i.type])
            for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    shapes = {name: tuple(v.shape) for name, v in zip(names, session.run(names, feed))}
    shapes.update({k: tuple(v.shape) for k, v in feed.items()})
    return shapes


def count(onnx_path: str | Path, batch: int = 1) -> dict[str, Any]:
    """MACs per op type, parameters and bytes of the graph at ``batch`` (see the module docstring)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    weight_bytes = sum(numpy_helper.to_array(i).nbytes for i in model.graph.initializer)
    consts = {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    shapes = tensor_shapes(model, batch)
    macs: Counter[str] = Counter()
    elements: Counter[str] = Counter()
    unfused = fused = 0
    for node in model.graph.node:
        macs[node.op_type] += node_macs(node, shapes, weights)
        for out in node.output:
            if out in consts or out not in shapes or node.op_type in ("Shape", "Gather", "Unsqueeze", "Concat") \
                    and len(shapes[out]) <= 1:
                continue
            nbytes = int(np.prod(shapes[out])) * 4
            elements[node.op_type] += int(np.prod(shapes[out]))
            unfused += 2 * nbytes
            fused += 2 * nbytes if node.op_type in KERNEL_BOUNDARY_OPS else 0
    total = sum(macs[op] for op in MAC_OPS)
    return {"file": str(onnx_path), "batch": batch, "macs": total, "gflops": 2 * total / 1e9,
            "macs_by_op": {op: macs[op] for op in MAC_OPS if macs[op]},
            "params": int(sum(np.prod(d) for d in weights.values())), "weight_bytes_fp32": int(weight_bytes),
            "activation_bytes_unfused_fp32": int(unfused), "activation_bytes_fused_fp32": int(fused),
            "output_elements_by_op": dict(elements.most_common())}


def main(argv: Sequence[str] | None = None) -> int:
    """Print the counts (and write ``--json``)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("onnx")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--json")
    args = p.parse_args(argv)
    r = count(args.onnx, args.batch)
    print(f"{r['file']} at batch {r['batch']}: {r['macs'] / 1e9:.3f} GMACs = {r['gflops']:.3f} GFLOPs "
          f"({', '.join(f'{k} {v / 1e9:.3f}' for k, v in r['macs_by_op'].items())} GMACs)")
    print(f"params {r['params'] / 1e6:.2f} M ({r['weight_bytes_fp32'] / 1e6:.1f} MB fp32); activations "
          f"{r['activation_bytes_fused_fp32'] / 1e6:.1f} MB fused / {r['activation_bytes_unfused_fp32'] / 1e6:.1f} MB "
          "unfused (fp32, write + read)")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
