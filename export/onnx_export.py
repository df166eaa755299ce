"""Export a detector bundle to ONNX (``detector.onnx``) with a torch/onnxruntime parity check and a TensorRT lint.

The graph takes what :func:`sdk.preprocess.resize_to_rgb` produces, batched: ``image`` is
``N x H x W x 3`` uint8 RGB at the bundle's model size. The resize stays outside the graph because
camera frames come in every size; the normalisation is inside it (cast to float32, NHWC -> NCHW,
``x * scale + offset`` with the bundle's own float32 constants, exactly :func:`sdk.preprocess.normalize`).
Outputs: ``anomaly_map`` (``N x 1 x H x W`` float32) and ``score`` (``N`` float32). The batch axis is
dynamic; H and W are fixed by the bundle.

Usage::

    protoinspect export BUNDLE_DIR [--opset N] [--no-verify] [--frames IMG ...]

After export the graph is linted against TensorRT 10's ONNX parser support matrix
(:mod:`export.trt_ops`), then run in onnxruntime (CPU) next to torch on fresh random frames (plus any
real frames given) in batches of 1 and 3; ``detector.onnx`` is added to the bundle and described
in the manifest's ``extra["onnx"]`` (I/O names, dtypes, shapes, opset, lint and parity results).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.trt_ops import (
    TRT10_SUPPORTED_OPS,
    TRT10_TOPK_MAX_K,
    TRT10_UNSUPPORTED_OPS,
    TRT_DOC_VERSION,
    TRT_MAX_OPSET,
    TRT_MIN_OPSET,
)
from sdk.errors import ConfigError, ExportError, InputError, ProtoInspectError
from sdk.preprocess import ColorOrder, PreprocessSpec, resize_to_rgb

ONNX_FILE = "detector.onnx"
INPUT_NAME = "image"
OUTPUT_NAMES = ("anomaly_map", "score")
DEFAULT_OPSET = 17
#: Lowest opset accepted: 17 is the first with a LayerNormalization op (the decoder's LayerNorms
#: then export as one node instead of a ReduceMean/Sub/Pow/Sqrt chain).
MIN_OPSET = 17
PARITY_BATCH_SIZES = (1, 3)
PARITY_PROVIDER = "CPUExecutionProvider"

# Parity tolerances, both in units of the map's scale: the allowed |onnxruntime - torch| is
# ``atol * max(1, max |torch anomaly_map|)`` over the checked frames.
# Measured with torch 2.13 / onnxruntime 1.32 on x86 CPU (float32 everywhere, batches of 1 and 3):
#   tiny test detector, 64x64 (tests/test_onnx_export.py), 5 bundles x 8 random frames, both map
#   modes: map <= 7.2e-7 abs (<= 3.4e-7 x scale ~2), score <= 4.8e-7;
#   trained small_cnn detector (runs/mtd_v1), 256x256, random + real MTD frames: prototype mode map
#   2.7e-6 .. 5.9e-6 abs at scale 1.4 (<= 4.3e-6 relative), score <= 7.8e-7; fused mode map 2.5e-5
#   abs at scale 54 (4.6e-7 relative), score 5.7e-6.
# That is float32 rounding noise of different kernels / summation orders. 1e-4 x scale leaves >= 20x
# headroom (bigger encoders, other CPUs) and still fails on real export bugs: a wrong mean/std,
# channel order or resize alignment moves the map by 1e-2 or more. Relative, because a trained map is
# divided by the normal-image spread in ``map_norm`` and its scale (and absolute noise) can be 50x
# larger than 1. The score gets the same bound: the mean of a map's top-k values moves by at most
# the map's largest change (even when the top-k set changes), so score_atol = map_atol.
MAP_ATOL = 1e-4
SCORE_ATOL = 1e-4

_ONNX_DOMAINS = ("", "ai.onnx")


# ----------------------------------------------------------------------------- the exported module


class DetectorExportModule(nn.Module):
    """A :class:`~sdk.models.prototype_detector.PrototypeDetectorNet` with the bundle's normalisation baked in.

    Input ``image``: N x H x W x 3 uint8 RGB at model size (``sdk.preprocess.resize_to_rgb`` output).
    Outputs: ``anomaly_map`` N x 1 x H x W float32 and ``score`` N float32, as the net gives them.
    """

    def __init__(self, net: nn.Module, spec: PreprocessSpec) -> None:
        super().__init__()
        self.net = net
        self.image_size = tuple(spec.image_size)
        # The very float32 constants sdk.preprocess.normalize uses (x * scale + offset), as 1x3x1x1.
        scale = np.asarray(spec._scale, dtype=np.float32).reshape(1, 3, 1, 1)
        offset = np.asarray(spec._offset, dtype=np.float32).reshape(1, 3, 1, 1)
        self.register_buffer("scale", torch.from_numpy(scale.copy()))
        self.register_buffer("offset", torch.from_numpy(offset.copy()))

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """N x H x W x 3 uint8 -> N x 3 x H x W float32, ``x * scale + offset`` per channel.

        Cast first, then transpose: TensorRT takes UINT8 only as a network input/output type, so
        the first op on the input must be the Cast.
        """
        x = image.to(torch.float32).permute(0, 3, 1, 2)
        return x * self.scale + self.offset

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 NHWC RGB batch -> (anomaly map N x 1 x H x W, score N)."""
        return self.net(self.normalize(image))


# ----------------------------------------------------------------------------- lint


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

    Checks (TensorRT 10 ONNX parser support matrix, see :mod:`export.trt_ops`):
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


# ----------------------------------------------------------------------------- parity


def _as_batch(images_uint8: Any) -> np.ndarray:
    arr = np.stack(list(images_uint8)) if isinstance(images_uint8, (list, tuple)) else np.asarray(images_uint8)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] == 0:
        msg = f"parity frames must be N x H x W x 3 uint8 RGB at model size (N >= 1), got {arr.shape} {arr.dtype}"
        raise InputError(msg)
    return np.ascontiguousarray(arr)


def _parity_batches(n: int) -> list[np.ndarray]:
    """Index batches alternating PARITY_BATCH_SIZES; frames are reused when too few to fill one of each."""
    idx = np.arange(n)
    if n < sum(PARITY_BATCH_SIZES):
        idx = np.resize(idx, sum(PARITY_BATCH_SIZES))
    batches, start, j = [], 0, 0
    while start < len(idx):
        size = PARITY_BATCH_SIZES[j % len(PARITY_BATCH_SIZES)]
        batches.append(idx[start:start + size])
        start += size
        j += 1
    return batches


def _ort_session(onnx_path: str | Path) -> Any:
    from sdk._imports import require

    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # a check, not a benchmark: do not compete with other jobs
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(onnx_path), options, providers=[PARITY_PROVIDER])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        msg = f"onnxruntime cannot load {onnx_path}: {type(exc).__name__}: {exc}"
        raise ExportError(msg) from exc


def verify_onnx_parity(
    net_or_module: nn.Module,
    onnx_path: str | Path,
    images_uint8: Any,
    *,
    map_atol: float = MAP_ATOL,
    score_atol: float = SCORE_ATOL,
    spec: PreprocessSpec | None = None,
) -> dict[str, Any]:
    """Run torch and onnxruntime (CPU) on the same uint8 frames and compare their outputs.

    Args:
        net_or_module: a :class:`DetectorExportModule`, or a bare ``PrototypeDetectorNet`` together
            with ``spec`` (then wrapped).
        onnx_path: the exported graph (input ``image``, outputs ``anomaly_map`` and ``score``).
        images_uint8: N x H x W x 3 uint8 RGB frames at model size (array or list of arrays); run in
            batches alternating 1 and 3 (frames reused if N < 4) to exercise the dynamic batch axis.
        map_atol / score_atol: allowed max |difference| in units of the map scale
            ``max(1, max |torch anomaly_map|)`` (see :data:`MAP_ATOL`).
        spec: the bundle's preprocessing, only needed for a bare net.

    Returns:
        ``map_max_abs_diff``, ``score_max_abs_diff``, ``map_scale``, the absolute tolerances
        ``map_tolerance`` / ``score_tolerance``, ``map_atol``, ``score_atol``, ``num_frames``,
        ``batch_sizes``, ``provider``, ``onnxruntime`` (version) and ``passed`` (True).

    Raises:
        ExportError: a difference above tolerance, non-finite or wrongly shaped outputs.
        ConfigError: a bare net without ``spec``.
        InputError: frames of the wrong dtype or shape.
    """
    module = net_or_module
    if not isinstance(module, DetectorExportModule):
        if spec is None:
            msg = "verify_onnx_parity needs spec= (the bundle's PreprocessSpec) when given a bare detector net"
            raise ConfigError(msg)
        module = DetectorExportModule(module, spec)
    module = module.eval()
    images = _as_batch(images_uint8)
    h, w = module.image_size
    if images.shape[1:3] != (h, w):
        msg = (
            f"parity frames are {images.shape[1]}x{images.shape[2]}, the model takes {h}x{w}: "
            "resize with sdk.preprocess.resize_to_rgb"
        )
        raise InputError(msg)

    session = _ort_session(onnx_path)
    map_diff = score_diff = 0.0
    map_scale = 1.0
    sizes = []
    for idx in _parity_batches(len(images)):
        batch = np.ascontiguousarray(images[idx])
        with torch.no_grad():
            t_map, t_score = (t.numpy() for t in module(torch.from_numpy(batch)))
        o_map, o_score = session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
        n = len(idx)
        for name, arr, shape in (("anomaly_map", o_map, (n, 1, h, w)), ("score", o_score, (n,))):
            if arr.shape != shape or arr.dtype != np.float32:
                msg = (
                    f"onnxruntime output '{name}' is {arr.shape} {arr.dtype} for a batch of {n}, "
                    f"expected {shape} float32"
                )
                raise ExportError(msg)
            if not np.isfinite(arr).all():
                msg = f"onnxruntime output '{name}' has non-finite values for a batch of {n}"
                raise ExportError(msg)
        map_diff = max(map_diff, float(np.abs(o_map - t_map).max()))
        score_diff = max(score_diff, float(np.abs(o_score - t_score).max()))
        map_scale = max(map_scale, float(np.abs(t_map).max()))
        sizes.append(n)

    import onnxruntime

    result = {
        "map_max_abs_diff": map_diff,
        "score_max_abs_diff": score_diff,
        "map_scale": map_scale,
        "map_atol": float(map_atol),
        "score_atol": float(score_atol),
        "map_tolerance": float(map_atol) * map_scale,
        "score_tolerance": float(score_atol) * map_scale,
        "num_frames": int(len(images)),
        "batch_sizes": sizes,
        "provider": PARITY_PROVIDER,
        "onnxruntime": onnxruntime.__version__,
        "passed": True,
    }
    failed = [
        f"{name} max |onnxruntime - torch| = {result[key]:.3g} > {result[tol]:.3g} "
        f"({atol:g} x map scale {map_scale:.3g})"
        for name, key, tol, atol in (
            ("anomaly_map", "map_max_abs_diff", "map_tolerance", map_atol),
            ("score", "score_max_abs_diff", "score_tolerance", score_atol),
        )
        if not result[key] <= result[tol]
    ]
    if failed:
        msg = f"ONNX parity check failed for {onnx_path}: " + "; ".join(failed)
        raise ExportError(msg)
    return result


# ----------------------------------------------------------------------------- export


def _check_opset(opset: Any) -> int:
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        msg = f"opset must be an integer, got {opset!r}"
        raise ConfigError(msg)
    opset = int(opset)
    if not MIN_OPSET <= opset <= TRT_MAX_OPSET:
        msg = (
            f"opset {opset} is out of range: pin an opset from {MIN_OPSET} (LayerNormalization) to {TRT_MAX_OPSET} "
            f"(the highest TensorRT {TRT_DOC_VERSION} parses); default {DEFAULT_OPSET}"
        )
        raise ConfigError(msg)
    try:
        from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET as torch_max
    except ImportError:  # private constant moved: let torch.onnx.export report it
        torch_max = None
    if torch_max is not None and opset > torch_max:
        msg = (
            f"opset {opset} is above {torch_max}, the highest torch {torch.__version__}'s "
            "TorchScript ONNX exporter writes"
        )
        raise ConfigError(msg)
    return opset


def _value_info_dict(vi: Any) -> dict[str, Any]:
    import onnx

    t = vi.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
    shape = [d.dim_param if d.HasField("dim_param") else int(d.dim_value) for d in t.shape.dim]
    return {"name": vi.name, "dtype": dtype, "shape": shape}


def _io_signature(onnx_path: Path, image_size: tuple[int, int]) -> tuple[list[dict], list[dict]]:
    import onnx

    model = onnx.load(str(onnx_path))
    inputs = [_value_info_dict(vi) for vi in model.graph.input]
    outputs = [_value_info_dict(vi) for vi in model.graph.output]
    h, w = image_size
    expected_in = [{"name": INPUT_NAME, "dtype": "uint8", "shape": ["batch", h, w, 3]}]
    expected_out = [
        {"name": OUTPUT_NAMES[0], "dtype": "float32", "shape": ["batch", 1, h, w]},
        {"name": OUTPUT_NAMES[1], "dtype": "float32", "shape": ["batch"]},
    ]
    if inputs != expected_in or outputs != expected_out:
        msg = f"exported graph has I/O {inputs} -> {outputs}, expected {expected_in} -> {expected_out}"
        raise ExportError(msg)
    return inputs, outputs


def _pin_output_shapes(path: Path, image_size: tuple[int, int]) -> None:
    """Write the known output shapes into the graph (``batch`` x 1 x H x W and ``batch``).

    The TorchScript exporter's own shape inference loses H and W through the blur's replicate padding
    and may even label a spatial axis ``batch``; consumers (TensorRT, onnxruntime) then see a wrong
    declared shape. The true shapes are fixed by the bundle, so they are stated here and checked by
    ``onnx.checker`` (full check, strict shape inference) afterwards.
    """
    import onnx

    model = onnx.load(str(path))
    h, w = image_size
    dims = {OUTPUT_NAMES[0]: ["batch", 1, h, w], OUTPUT_NAMES[1]: ["batch"]}
    for out in model.graph.output:
        shape = out.type.tensor_type.shape
        del shape.dim[:]
        for d in dims[out.name]:
            dim = shape.dim.add()
            if isinstance(d, str):
                dim.dim_param = d
            else:
                dim.dim_value = d
    onnx.save(model, str(path))


def _torch_export(module: DetectorExportModule, path: Path, opset: int) -> None:
    h, w = module.image_size
    # batch 2 so that no size is specialised to 1; H and W are fixed (the bundle's model size), which
    # is what the tracer warnings about shapes turned into Python numbers refer to.
    sample = torch.randint(0, 256, (2, h, w, 3), dtype=torch.uint8)
    batch = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*feature will be removed.*", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*Constant folding.*", category=UserWarning)
        try:
            torch.onnx.export(
                module,
                (sample,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes={INPUT_NAME: batch, OUTPUT_NAMES[0]: batch, OUTPUT_NAMES[1]: batch},
                do_constant_folding=True,
            )
        except Exception as exc:  # noqa: BLE001 - torch raises many types here
            msg = f"torch.onnx.export failed at opset {opset}: {type(exc).__name__}: {exc}"
            raise ExportError(msg) from exc


def export_detector_onnx(
    bundle_dir: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    num_random: int = 4,
    real_frames: Sequence[np.ndarray] | None = None,
    frames_color_order: ColorOrder | None = None,
) -> dict[str, Any]:
    """Export a bundle's detector to ``detector.onnx`` inside the bundle, lint and (optionally) verify it.

    Args:
        bundle_dir: a detector bundle (``PrototypeDetectorNet`` weights).
        opset: ONNX opset to pin, ``MIN_OPSET`` (17) to ``TRT_MAX_OPSET``.
        verify: run the torch/onnxruntime parity check (needs onnxruntime).
        num_random: fresh random uint8 frames for the parity check.
        real_frames: camera frames (any size; HxW gray or HxWx3 in ``frames_color_order``, default the
            bundle's color order) also checked after :func:`sdk.preprocess.resize_to_rgb`.
        frames_color_order: channel order of ``real_frames``.

    Returns:
        What was written to ``manifest.extra["onnx"]`` plus ``path`` (the ONNX file) and
        ``bundle_id`` (the bundle's new id).

    Raises:
        ConfigError: opset out of range, or nothing to verify with.
        BundleError: the bundle is invalid.
        ExportError: the export, the TensorRT lint or the parity check failed (the bundle is then
            left unchanged).
    """
    import onnx

    from sdk.bundle import add_files, load_bundle
    from sdk.models.loading import load_detector_net

    opset = _check_opset(opset)
    if isinstance(num_random, bool) or not isinstance(num_random, (int, np.integer)) or num_random < 0:
        msg = f"num_random must be a non-negative integer, got {num_random!r}"
        raise ConfigError(msg)
    real_frames = list(real_frames or [])
    if verify and num_random + len(real_frames) == 0:
        msg = "verify=True needs frames: num_random > 0 or real_frames"
        raise ConfigError(msg)

    bundle = load_bundle(bundle_dir)
    spec = bundle.manifest.preprocess_spec
    net = load_detector_net(bundle)
    module = DetectorExportModule(net, spec).eval()
    h, w = spec.image_size

    with tempfile.TemporaryDirectory(prefix="protoinspect-onnx-") as tmp:
        path = Path(tmp) / ONNX_FILE
        _torch_export(module, path, opset)
        _pin_output_shapes(path, (h, w))
        try:
            onnx.checker.check_model(str(path), full_check=True)
        except Exception as exc:  # noqa: BLE001 - onnx.checker.ValidationError and friends
            msg = f"the exported graph fails onnx.checker: {exc}"
            raise ExportError(msg) from exc
        inputs, outputs = _io_signature(path, (h, w))
        problems = lint_onnx(path)
        if problems:
            msg = f"the exported graph is not TensorRT {TRT_DOC_VERSION} compatible:\n  - " + "\n  - ".join(problems)
            raise ExportError(msg)
        op_types = sorted({n.op_type for n in onnx.load(str(path)).graph.node})

        parity: dict[str, Any] | None = None
        if verify:
            rng = np.random.default_rng()  # fresh frames on every export
            frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(int(num_random))]
            frames += [resize_to_rgb(f, spec, frames_color_order) for f in real_frames]
            parity = verify_onnx_parity(module, path, np.stack(frames))
            parity.update(num_random=int(num_random), num_real=len(real_frames))

        info: dict[str, Any] = {
            "file": ONNX_FILE,
            "opset": opset,
            "exporter": f"torch.onnx TorchScript exporter (dynamo=False), torch {torch.__version__}",
            "onnx": onnx.__version__,
            "inputs": inputs,
            "outputs": outputs,
            "input_layout": "NHWC uint8 RGB at model size; resize (sdk.preprocess.resize_to_rgb) outside the graph",
            "normalization": "in graph: float32(x) * scale + offset per RGB channel (sdk.preprocess.normalize)",
            "map_mode": net.config.map_mode,
            "op_types": op_types,
            "tensorrt_lint": {"tensorrt_doc_version": TRT_DOC_VERSION, "max_opset": TRT_MAX_OPSET, "problems": []},
            "parity": parity,
        }
        manifest = add_files(bundle.path, {ONNX_FILE: path}, extra={"onnx": info})
    return {**info, "path": str(bundle.path / ONNX_FILE), "bundle_id": manifest.bundle_id}


# ----------------------------------------------------------------------------- CLI


def _read_frames(paths: Sequence[str]) -> list[np.ndarray]:
    from training.image_io import probe_mode, read_image

    return [read_image(p, probe_mode(p)) for p in paths]  # gray or RGB


def format_parity(parity: dict[str, Any]) -> str:
    """Human-readable parity lines."""
    head = (
        f"parity torch vs onnxruntime ({parity['provider']}, onnxruntime {parity['onnxruntime']}) on "
        f"{parity['num_frames']} frames ({parity.get('num_random', '?')} random, {parity.get('num_real', 0)} real), "
        f"batches {parity['batch_sizes']}:"
    )
    rows = [
        f"  anomaly_map  max |diff| = {parity['map_max_abs_diff']:.3e}  (tolerance {parity['map_tolerance']:.3e} = "
        f"{parity['map_atol']:g} x map scale {parity['map_scale']:.3g})",
        f"  score        max |diff| = {parity['score_max_abs_diff']:.3e}  (tolerance {parity['score_tolerance']:.3e} = "
        f"{parity['score_atol']:g} x map scale {parity['map_scale']:.3g})",
    ]
    return "\n".join([head, *rows])


def main(argv: Sequence[str] | None = None) -> int:
    """``protoinspect export BUNDLE_DIR [--opset N] [--no-verify] [--frames IMG ...]``."""
    p = argparse.ArgumentParser(
        prog="protoinspect export",
        description="Export a detector bundle to ONNX (detector.onnx, added to the bundle), check it against "
        "TensorRT 10's operator support and against torch with onnxruntime.",
    )
    p.add_argument("bundle", help="model bundle directory")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset, {MIN_OPSET}..{TRT_MAX_OPSET} (TensorRT {TRT_DOC_VERSION}; torch's TorchScript "
                   f"exporter writes at most 20) (default {DEFAULT_OPSET})")
    p.add_argument("--no-verify", action="store_true", help="skip the torch/onnxruntime parity check")
    p.add_argument("--num-random", type=int, default=4, help="random frames in the parity check (default 4)")
    p.add_argument("--frames", nargs="+", default=[], metavar="IMAGE",
                   help="real images (any size) to include in the parity check")
    args = p.parse_args(argv)
    try:
        frames = _read_frames(args.frames) if args.frames and not args.no_verify else []
        info = export_detector_onnx(args.bundle, opset=args.opset, verify=not args.no_verify,
                                    num_random=args.num_random, real_frames=frames, frames_color_order="rgb")
    except ProtoInspectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = Path(info["path"]).stat().st_size
    print(f"exported {info['path']} (opset {info['opset']}, {size / 1e6:.2f} MB, bundle_id {info['bundle_id']})")
    ops = info["op_types"]
    print(f"TensorRT {TRT_DOC_VERSION} lint: ok ({len(ops)} operator types: {', '.join(ops)})")
    if info["parity"] is None:
        print("parity: not checked (--no-verify)")
    else:
        print(format_parity(info["parity"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
