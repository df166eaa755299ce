"""Export a detector bundle to ONNX (``detector.onnx``) with a torch/onnxruntime parity check and a TensorRT lint.

The graph takes what :func:`protoinspect.sdk.preprocess.resize_to_rgb` produces, batched: ``image`` is
``N x H x W x 3`` uint8 RGB at the bundle's model size. The resize stays outside the graph because
camera frames come in every size; the normalisation is inside it (cast to float32, NHWC -> NCHW,
``x * scale + offset`` with the bundle's own float32 constants, exactly :func:`protoinspect.sdk.preprocess.normalize`).
Outputs: ``anomaly_map`` (``N x 1 x H x W`` float32) and ``score`` (``N`` float32). The batch axis is
dynamic; H and W are fixed by the bundle.

Usage::

    protoinspect export BUNDLE_DIR [--opset N] [--no-verify] [--frames IMG ...]

After export the graph is linted against TensorRT 10's ONNX parser support matrix
(:mod:`protoinspect.export.trt_ops`), then run in onnxruntime (CPU) next to torch on fresh random frames (plus any
real frames given) in batches of 1 and 3; ``detector.onnx`` is added to the bundle and described
in the manifest's ``extra["onnx"]`` (I/O names, dtypes, shapes, opset, lint and parity results).

The graph's module and I/O names live in :mod:`protoinspect.sdk.models.detector_graph`, the lint in
:mod:`protoinspect.export.onnx_lint`, the parity check in :mod:`protoinspect.export.onnx_parity`; their public names are
re-exported here.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Re-exported: protoinspect.export.onnx_export stays the one import point for the export API.
from protoinspect.sdk.models.detector_graph import INPUT_NAME, OUTPUT_NAMES, DetectorGraph
from protoinspect.export.onnx_lint import lint_onnx
from protoinspect.export.onnx_parity import (
    MAP_ATOL,
    PARITY_BATCH_SIZES,
    PARITY_PROVIDER,
    SCORE_ATOL,
    format_parity,
    verify_onnx_parity,
)
from protoinspect.export.trt_ops import (
    TRT10_SUPPORTED_OPS,
    TRT10_TOPK_MAX_K,
    TRT10_UNSUPPORTED_OPS,
    TRT_DOC_VERSION,
    TRT_MAX_OPSET,
    TRT_MIN_OPSET,
)
from protoinspect.sdk.errors import report_error
from protoinspect.sdk.errors import ConfigError, ExportError, ProtoInspectError
from protoinspect.sdk.preprocess import ColorOrder, resize_to_rgb

__all__ = [
    "DEFAULT_OPSET",
    "INPUT_NAME",
    "MAP_ATOL",
    "MIN_OPSET",
    "ONNX_FILE",
    "OUTPUT_NAMES",
    "PARITY_BATCH_SIZES",
    "PARITY_PROVIDER",
    "SCORE_ATOL",
    "TRT10_SUPPORTED_OPS",
    "TRT10_TOPK_MAX_K",
    "TRT10_UNSUPPORTED_OPS",
    "TRT_DOC_VERSION",
    "TRT_MAX_OPSET",
    "TRT_MIN_OPSET",
    "DetectorGraph",
    "export_detector_onnx",
    "format_parity",
    "lint_onnx",
    "main",
    "verify_onnx_parity",
]

ONNX_FILE = "detector.onnx"
DEFAULT_OPSET = 17
#: Lowest opset accepted: 17 is the first with a LayerNormalization op (the decoder's LayerNorms
#: then export as one node instead of a ReduceMean/Sub/Pow/Sqrt chain).
MIN_OPSET = 17


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


def _io_signature(onnx_path: Path, image_size: tuple[int, int],
                  feature_shape: tuple[int, int, int]) -> tuple[list[dict], list[dict]]:
    import onnx

    model = onnx.load(str(onnx_path))
    inputs = [_value_info_dict(vi) for vi in model.graph.input]
    outputs = [_value_info_dict(vi) for vi in model.graph.output]
    h, w = image_size
    expected_in = [{"name": INPUT_NAME, "dtype": "uint8", "shape": ["batch", h, w, 3]}]
    expected_out = [
        {"name": OUTPUT_NAMES[0], "dtype": "float32", "shape": ["batch", 1, h, w]},
        {"name": OUTPUT_NAMES[1], "dtype": "float32", "shape": ["batch"]},
        {"name": OUTPUT_NAMES[2], "dtype": "float32", "shape": ["batch", *feature_shape]},
    ]
    if inputs != expected_in or outputs != expected_out:
        msg = f"exported graph has I/O {inputs} -> {outputs}, expected {expected_in} -> {expected_out}"
        raise ExportError(msg)
    return inputs, outputs


def _feature_shape(module: DetectorGraph) -> tuple[int, int, int]:
    """(C, h, w) of the ``features`` output, from one torch forward at model size."""
    h, w = module.image_size
    with torch.no_grad():
        feats = module(torch.zeros((1, h, w, 3), dtype=torch.uint8))[2]
    return tuple(int(v) for v in feats.shape[1:])  # type: ignore[return-value]


def _pin_output_shapes(path: Path, image_size: tuple[int, int], feature_shape: tuple[int, int, int]) -> None:
    """Write the known output shapes into the graph (``batch`` x 1 x H x W, ``batch``, ``batch`` x C x h x w).

    The TorchScript exporter's own shape inference loses H and W through the blur's replicate padding
    and may even label a spatial axis ``batch``; consumers (TensorRT, onnxruntime) then see a wrong
    declared shape. The true shapes are fixed by the bundle, so they are stated here and checked by
    ``onnx.checker`` (full check, strict shape inference) afterwards.
    """
    import onnx

    model = onnx.load(str(path))
    h, w = image_size
    dims = {OUTPUT_NAMES[0]: ["batch", 1, h, w], OUTPUT_NAMES[1]: ["batch"],
            OUTPUT_NAMES[2]: ["batch", *feature_shape]}
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


def _torch_export(module: DetectorGraph, path: Path, opset: int) -> None:
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
                dynamic_axes={INPUT_NAME: batch, **{name: batch for name in OUTPUT_NAMES}},
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
            bundle's color order) also checked after :func:`protoinspect.sdk.preprocess.resize_to_rgb`.
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

    from protoinspect.sdk.bundle import add_files, load_bundle
    from protoinspect.sdk.models.loading import load_detector_net

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
    module = DetectorGraph(net, spec).eval()
    h, w = spec.image_size

    with tempfile.TemporaryDirectory(prefix="protoinspect-onnx-") as tmp:
        path = Path(tmp) / ONNX_FILE
        _torch_export(module, path, opset)
        feature_shape = _feature_shape(module)
        _pin_output_shapes(path, (h, w), feature_shape)
        try:
            onnx.checker.check_model(str(path), full_check=True)
        except Exception as exc:  # noqa: BLE001 - onnx.checker.ValidationError and friends
            msg = f"the exported graph fails onnx.checker: {exc}"
            raise ExportError(msg) from exc
        inputs, outputs = _io_signature(path, (h, w), feature_shape)
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
            "input_layout": "NHWC uint8 RGB at model size; resize (protoinspect.sdk.preprocess.resize_to_rgb) outside the graph",
            "normalization": "in graph: float32(x) * scale + offset per RGB channel (protoinspect.sdk.preprocess.normalize)",
            "map_mode": net.config.map_mode,
            "op_types": op_types,
            "tensorrt_lint": {"tensorrt_doc_version": TRT_DOC_VERSION, "max_opset": TRT_MAX_OPSET, "problems": []},
            "parity": parity,
        }
        manifest = add_files(bundle.path, {ONNX_FILE: path}, extra={"onnx": info})
    return {**info, "path": str(bundle.path / ONNX_FILE), "bundle_id": manifest.bundle_id}


# ----------------------------------------------------------------------------- CLI


def _read_frames(paths: Sequence[str]) -> list[np.ndarray]:
    """Images named on the command line, as BGR frames (what a camera gives the Inspector)."""
    from protoinspect.sdk.sources import read_frame

    return [read_frame(Path(p)) for p in paths]


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
                   help="real images (any size) to include in the parity check (`protoinspect export` adds two "
                   "test images of each training dataset recorded in the bundle, when those folders exist here)")
    args = p.parse_args(argv)
    try:
        frames: list[np.ndarray] = []
        if not args.no_verify:
            frames = _read_frames(args.frames)
            print(f"parity frames: {args.num_random} random + {len(frames)} real"
                  f"{': ' + ', '.join(args.frames) if args.frames else ' (give --frames IMAGE ...)'}")
        info = export_detector_onnx(args.bundle, opset=args.opset, verify=not args.no_verify,
                                    num_random=args.num_random, real_frames=frames, frames_color_order="bgr")
    except ProtoInspectError as exc:
        return report_error(exc)
    size = Path(info["path"]).stat().st_size
    print(f"exported {info['path']} (opset {info['opset']}, {size / 1e6:.2f} MB, bundle_id {info['bundle_id']})")
    ops = info["op_types"]
    print(f"TensorRT {TRT_DOC_VERSION} lint: ok ({len(ops)} operator types: {', '.join(ops)})")
    if info["parity"] is None:
        print("parity: not checked (--no-verify)")
    else:
        print(format_parity(info["parity"]))
    from protoinspect.sdk.bundle import load_bundle
    from protoinspect.sdk.backends.classifier_base import has_classifier

    if has_classifier(load_bundle(args.bundle)):
        from protoinspect.export.classifier_export import export_classifier_onnx

        try:
            clf = export_classifier_onnx(args.bundle)
        except ProtoInspectError as exc:
            return report_error(exc)
        d, t = clf["parity"]["max_abs_diff"], clf["parity"]["tolerance"]
        print(f"exported classifier.onnx; parity torch vs onnxruntime: embedding {d['embedding']:.3g} "
              f"(tol {t['embedding']:.3g}), logits {d['logits']:.3g} (tol {t['logits']:.3g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
