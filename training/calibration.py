"""Calibration on held-out normal images: map normalisation and the image / pixel thresholds."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from protoinspect.sdk.errors import ConfigError
from protoinspect.sdk.models.prototype_detector import PrototypeDetectorNet
from protoinspect.training.threshold_trust import false_alarm_trust


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
    """Thresholds from held-out defect-free images: quantiles of their image scores and map pixels.

    ``image_quantile`` is 1 - the target false-alarm rate. ``calibration`` also says how far the image
    threshold can be trusted on these images (see :func:`protoinspect.training.threshold_trust.false_alarm_trust`):
    ``target_false_alarm_rate``, ``num_false_alarms`` (images scoring at or above the threshold, which the
    Inspector would flag), ``false_alarm_rate``, ``false_alarm_rate_upper`` (one-sided 95 % Clopper-Pearson),
    ``confidence``, ``min_images_for_target``, ``target_confirmed`` and the sentence ``trust``.

    Raises:
        ConfigError: a quantile outside [0, 1] or no calibration images.
    """
    for name, q in (("image_quantile", image_quantile), ("pixel_quantile", pixel_quantile)):
        if not 0.0 <= float(q) <= 1.0:
            msg = f"{name} must be in [0, 1], got {q!r}"
            raise ConfigError(msg)
    if not batches or sum(len(x) for x in batches) == 0:
        msg = "calibration needs at least one held-out defect-free image, got none"
        raise ConfigError(msg)
    maps, scores = run_detector(model, batches)
    image_thr = float(np.quantile(scores, image_quantile))
    pixel_thr = float(np.quantile(maps, pixel_quantile))
    # the target as the user wrote it: 1 - 0.99 is 0.010000000000000009 in floating point
    target = round(1.0 - float(image_quantile), 12)
    trust = false_alarm_trust(len(scores), int((scores >= image_thr).sum()), target)
    return {
        "image": image_thr,
        "pixel": pixel_thr,
        "calibration": {
            "method": "quantile of held-out defect-free images",
            "image_quantile": image_quantile,
            "pixel_quantile": pixel_quantile,
            "normal_score_mean": float(scores.mean()),
            "normal_score_std": float(scores.std()),
            "normal_score_max": float(scores.max()),
            **trust,
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
