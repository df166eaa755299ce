"""Engine vs ONNX Runtime parity: sample inputs, per-precision tolerances, and the comparison.

The reference is the bundle's float32 ONNX file on ONNX Runtime's CPU provider; the candidate is the
TensorRT engine. Differences are measured like :mod:`protoinspect.export.onnx_parity`: the allowed
``|engine - onnxruntime|`` of an output is ``tol * max(1, max |onnxruntime output|)``, so a trained map
with a large scale is held to a relative bound.

Tolerances per precision (relative to the output's scale), and why:

* ``fp32``: 1e-3. TensorRT enables TF32 for float32 convolutions and matrix products on Ampere and newer
  (``BuilderFlag.TF32`` is on by default), which rounds their inputs to a 10-bit mantissa (~5e-4 relative
  per product); torch vs onnxruntime float32 agree to ~1e-6, so 1e-3 still catches real bugs (a wrong
  normalisation or channel order moves the map by >= 1e-2 of its scale).
* ``fp16``: 3e-2. Float16 has a 10-bit mantissa for every tensor (not only the products) through ~30
  layers; 3e-2 of the scale keeps verdicts stable (scores are thresholded with margins far larger).
* ``int8``: 1.5e-1. Entropy-calibrated INT8 activations carry ~1 % quantisation error per layer;
  published INT8 anomaly-detection deployments see a few percent on maps. Check the image-level AUROC
  on held-out data before shipping an INT8 engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from protoinspect.sdk.preprocess import PreprocessSpec

PARITY_TOLERANCES: dict[str, float] = {"fp32": 1e-3, "fp16": 3e-2, "int8": 1.5e-1}
#: Batch sizes the parity check runs, to exercise the optimisation profile (clipped to max_batch).
PARITY_BATCHES = (1, 3)


def compare_outputs(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
                    precision: str) -> dict[str, Any]:
    """Compare every reference output with the candidate's output of the same name.

    Returns:
        ``{"precision", "tolerance", "max_abs_diff": {name: float}, "scale": {name: float},
        "passed": bool, "failed": [messages]}``; a missing output, a shape mismatch or a non-finite value
        in the candidate fails.
    """
    tol = PARITY_TOLERANCES[precision]
    diffs: dict[str, float] = {}
    scales: dict[str, float] = {}
    failed: list[str] = []
    for name, ref in reference.items():
        ref = np.asarray(ref, dtype=np.float64)
        scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
        scales[name] = scale
        if name not in candidate:
            failed.append(f"{name}: missing from the engine's outputs")
            continue
        got = np.asarray(candidate[name], dtype=np.float64)
        if got.shape != ref.shape:
            failed.append(f"{name}: shape {got.shape}, onnxruntime gives {ref.shape}")
            continue
        if not np.isfinite(got).all():
            failed.append(f"{name}: {int((~np.isfinite(got)).sum())} non-finite values (fp16 overflow?)")
            diffs[name] = float("inf")
            continue
        diffs[name] = float(np.abs(got - ref).max()) if ref.size else 0.0
        if diffs[name] > tol * scale:
            failed.append(f"{name}: max |diff| {diffs[name]:.3g} > {tol:g} x scale {scale:.3g}")
    return {"precision": precision, "tolerance": tol, "max_abs_diff": diffs, "scale": scales,
            "passed": not failed, "failed": failed}


def merge_reports(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One report over several batches: the largest difference per output, failures concatenated."""
    if not reports:
        raise ValueError("no parity reports to merge")
    diffs: dict[str, float] = {}
    scales: dict[str, float] = {}
    for r in reports:
        for k, v in r["max_abs_diff"].items():
            diffs[k] = max(diffs.get(k, 0.0), v)
        for k, v in r["scale"].items():
            scales[k] = max(scales.get(k, 1.0), v)
    failed = [msg for r in reports for msg in r["failed"]]
    return {"precision": reports[0]["precision"], "tolerance": reports[0]["tolerance"], "max_abs_diff": diffs,
            "scale": scales, "passed": not failed, "failed": failed, "batches": len(reports)}


def detector_frames(spec: PreprocessSpec, calib_paths: Sequence[Path], num_random: int,
                    rng: np.random.Generator, max_real: int = 4) -> np.ndarray:
    """N x H x W x 3 uint8 RGB: ``num_random`` fresh random frames plus up to ``max_real`` calibration images
    through the runtime's pre-processing."""
    from protoinspect.export.trt_calibration import model_inputs

    h, w = spec.image_size
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(num_random)]
    if calib_paths:
        picks = [calib_paths[i] for i in np.linspace(0, len(calib_paths) - 1, min(max_real, len(calib_paths))).astype(int)]
        frames += list(model_inputs(picks, spec))
    return np.stack(frames)


def random_inputs(inputs: Sequence[tuple[str, Sequence[int]]], batch: int, rng: np.random.Generator,
                  dtypes: Mapping[str, np.dtype]) -> dict[str, np.ndarray]:
    """Random inputs for a graph other than the detector (the classifier: tokens ~ N(0, 1), regions in [0, 1])."""
    out = {}
    for name, dims in inputs:
        shape = (batch, *[int(d) for d in dims[1:]])
        dtype = np.dtype(dtypes[name])
        if dtype == np.uint8:
            out[name] = rng.integers(0, 256, shape, dtype=np.uint8)
        elif name == "regions":
            out[name] = rng.uniform(0.0, 1.0, shape).astype(dtype)
        else:
            out[name] = rng.standard_normal(shape).astype(dtype)
    return out


def batch_slices(n: int, max_batch: int) -> list[slice]:
    """Consecutive slices over ``n`` items alternating :data:`PARITY_BATCHES` (clipped to ``max_batch``)."""
    sizes = [min(b, max_batch) for b in PARITY_BATCHES]
    out, start, i = [], 0, 0
    while start < n:
        size = sizes[i % len(sizes)]
        out.append(slice(start, min(n, start + size)))
        start += size
        i += 1
    return out
