"""Calibration on held-out normal images: map normalisation and the image / pixel thresholds."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from protoinspect.sdk.models.prototype_detector import PrototypeDetectorNet


@torch.no_grad()
def run_maps(model: PrototypeDetectorNet, batches: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """Raw (unnormalised, unblurred) prototype and segmentation maps -> two N x H x W float32 arrays."""
    model.eval()
    protos, segs = [], []
    for x in batches:
        p, s = model.raw_maps(x)
        protos.append(p[:, 0].numpy())
        segs.append(s[:, 0].numpy())
    return np.concatenate(protos), np.concatenate(segs)


@torch.no_grad()
def run_detector(model: PrototypeDetectorNet, batches: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """Final maps (N x H x W) and image scores (N) of the model as it will be exported."""
    model.eval()
    maps, scores = [], []
    for x in batches:
        m, s = model(x)
        maps.append(m[:, 0].numpy())
        scores.append(s.numpy())
    return np.concatenate(maps), np.concatenate(scores)


def set_map_normalisation(model: PrototypeDetectorNet, batches: list[torch.Tensor]) -> dict[str, float]:
    """Centre and scale each raw map by the median and the 99th-percentile spread of normal pixels."""
    proto, seg = run_maps(model, batches)
    stats = []
    for arr in (proto, seg):
        loc = float(np.median(arr))
        scale = float(np.quantile(arr, 0.99) - loc)
        stats.append([loc, max(scale, 1e-6)])
    model.map_norm.copy_(torch.tensor(stats, dtype=torch.float32))
    return {"proto_loc": stats[0][0], "proto_scale": stats[0][1], "seg_loc": stats[1][0], "seg_scale": stats[1][1]}


def calibrate_thresholds(
    model: PrototypeDetectorNet, batches: list[torch.Tensor], image_quantile: float, pixel_quantile: float
) -> dict[str, Any]:
    """Thresholds from held-out normal images: quantiles of their image scores and map pixels."""
    maps, scores = run_detector(model, batches)
    image_thr = float(np.quantile(scores, image_quantile))
    pixel_thr = float(np.quantile(maps, pixel_quantile))
    return {
        "image": image_thr,
        "pixel": pixel_thr,
        "calibration": {
            "method": "quantile of held-out defect-free images",
            "num_images": int(len(scores)),
            "image_quantile": image_quantile,
            "pixel_quantile": pixel_quantile,
            "normal_score_mean": float(scores.mean()),
            "normal_score_std": float(scores.std()),
            "normal_score_max": float(scores.max()),
        },
    }


def calibrate_detector(
    model: PrototypeDetectorNet, batches: list[torch.Tensor], image_quantile: float, pixel_quantile: float
) -> dict[str, Any]:
    """Map normalisation, then thresholds, on held-out normal batches -> the manifest's ``thresholds``."""
    norm = set_map_normalisation(model, batches)
    thresholds = calibrate_thresholds(model, batches, image_quantile, pixel_quantile)
    thresholds["calibration"]["map_normalisation"] = norm
    return thresholds
