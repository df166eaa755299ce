"""Torch vs onnxruntime (CPU) parity check of an exported detector graph.

:func:`verify_onnx_parity` runs the torch module and the ONNX file on the same uint8 frames, in
batches alternating :data:`PARITY_BATCH_SIZES` to exercise the dynamic batch axis, and compares the
outputs within :data:`MAP_ATOL` / :data:`SCORE_ATOL` of the map's scale; :func:`format_parity`
renders the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from protoinspect.sdk.models.detector_graph import INPUT_NAME, OUTPUT_NAMES, DetectorGraph
from protoinspect.sdk.errors import ConfigError, ExportError, InputError
from protoinspect.sdk.preprocess import PreprocessSpec

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
    from protoinspect.sdk._imports import require

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
        net_or_module: a :class:`DetectorGraph`, or a bare ``PrototypeDetectorNet`` together
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
    if not isinstance(module, DetectorGraph):
        if spec is None:
            msg = "verify_onnx_parity needs spec= (the bundle's PreprocessSpec) when given a bare detector net"
            raise ConfigError(msg)
        module = DetectorGraph(module, spec)
    module = module.eval()
    images = _as_batch(images_uint8)
    h, w = module.image_size
    if images.shape[1:3] != (h, w):
        msg = (
            f"parity frames are {images.shape[1]}x{images.shape[2]}, the model takes {h}x{w}: "
            "resize with protoinspect.sdk.preprocess.resize_to_rgb"
        )
        raise InputError(msg)

    session = _ort_session(onnx_path)
    map_diff = score_diff = feat_diff = 0.0
    map_scale = feat_scale = 1.0
    sizes = []
    for idx in _parity_batches(len(images)):
        batch = np.ascontiguousarray(images[idx])
        with torch.no_grad():
            t_map, t_score, t_feat = (t.numpy() for t in module(torch.from_numpy(batch)))
        o_map, o_score, o_feat = session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
        n = len(idx)
        for name, arr, shape in (("anomaly_map", o_map, (n, 1, h, w)), ("score", o_score, (n,)),
                                 ("features", o_feat, t_feat.shape)):
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
        feat_diff = max(feat_diff, float(np.abs(o_feat - t_feat).max()))
        feat_scale = max(feat_scale, float(np.abs(t_feat).max()))
        sizes.append(n)

    import onnxruntime

    result = {
        "map_max_abs_diff": map_diff,
        "score_max_abs_diff": score_diff,
        "map_scale": map_scale,
        "map_atol": float(map_atol),
        "score_atol": float(score_atol),
        "map_tolerance": float(map_atol) * map_scale,
        "features_max_abs_diff": feat_diff,
        "features_scale": feat_scale,
        "features_tolerance": float(map_atol) * feat_scale,
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
            ("features", "features_max_abs_diff", "features_tolerance", map_atol),
        )
        if not result[key] <= result[tol]
    ]
    if failed:
        msg = f"ONNX parity check failed for {onnx_path}: " + "; ".join(failed)
        raise ExportError(msg)
    return result


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
