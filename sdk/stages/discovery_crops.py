"""From a detector output to classifier inputs: MEBin -> anomaly-centred crops -> token grids.

One code path for training (``training/train_discovery.py``), evaluation and the runtime stage, so
what the classifier sees in the field is exactly what it was trained on. Everything works at the
model's input size (the detector's ``model_map``); the feature map is the detector's ``features``
output (stride 8 by default), sampled bilinearly at the centres of a G x G grid over each crop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from protoinspect.sdk._imports import require
from protoinspect.sdk.errors import ConfigError, InputError
from protoinspect.sdk.stages.crops import CropBox, CropSettings, anomaly_crop_boxes, crop_areas, crop_scores
from protoinspect.sdk.stages.mebin import MEBinResult, MEBinSettings, mebin

TOKEN_SOURCES = ("detector", "vit")


@dataclass(frozen=True)
class DiscoverySettings:
    """How anomalies become classifier inputs, and the calibrated values (stored in the bundle).

    Attributes:
        grid: token grid side G per crop.
        s_min / s_max: MEBin search range, calibrated on the training maps.
        mebin: MEBin parameters.
        crops: crop and region-merging parameters.
        reject_threshold: frames whose merged vMF score (cosine to the nearest prototype) is below it
            are outliers (verdict REJECTED); -inf disables rejection.
        token_source: ``detector`` (crops of the detector's feature map, the default: no second
            backbone) or ``vit`` (each crop of the image through the bundle's ``vit.safetensors``,
            a user-supplied pretrained ViT, at ``vit_input`` pixels).
        fallback_fraction: when MEBin finds no region (a weak map, e.g. a defect the detector scores
            low), the anomaly mask is the top ``fallback_fraction`` of the map's pixels instead, so
            the crop still centres on the most anomalous spot rather than covering the whole image;
            0 (default) keeps AnomalyNCD's whole-image crop. Measured on MTD it did not help
            consistently (docs/results.md), so it is off.
    """

    grid: int = 8
    s_min: float = 0.0
    s_max: float = 1.0
    mebin: MEBinSettings = field(default_factory=MEBinSettings)
    crops: CropSettings = field(default_factory=CropSettings)
    reject_threshold: float = float("-inf")
    token_source: str = "detector"
    vit_input: int = 224
    fallback_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.fallback_fraction < 1.0:
            raise ConfigError(f"fallback_fraction must be in [0, 1), got {self.fallback_fraction!r}")
        if self.token_source not in TOKEN_SOURCES:
            raise ConfigError(f"token_source must be one of {TOKEN_SOURCES}, got {self.token_source!r}")
        if isinstance(self.grid, bool) or not isinstance(self.grid, int) or self.grid < 1:
            raise ConfigError(f"grid must be an int >= 1, got {self.grid!r}")
        if not (np.isfinite(self.s_min) and np.isfinite(self.s_max) and self.s_min <= self.s_max):
            raise ConfigError(f"MEBin range must be finite with s_min <= s_max, got ({self.s_min}, {self.s_max})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (``reject_threshold`` -inf as the string "-inf")."""
        t = self.reject_threshold
        return {"grid": self.grid, "s_min": float(self.s_min), "s_max": float(self.s_max),
                "mebin": self.mebin.to_dict(), "crops": self.crops.to_dict(),
                "reject_threshold": "-inf" if t == float("-inf") else float(t),
                "token_source": self.token_source, "vit_input": int(self.vit_input),
                "fallback_fraction": float(self.fallback_fraction)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DiscoverySettings:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown discovery settings {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        d = dict(d)
        if "mebin" in d:
            d["mebin"] = MEBinSettings.from_dict(d["mebin"])
        if "crops" in d:
            d["crops"] = CropSettings.from_dict(d["crops"])
        if "reject_threshold" in d:
            d["reject_threshold"] = float(d["reject_threshold"])
        return cls(**d)


@dataclass(frozen=True, eq=False)
class CropSet:
    """Classifier inputs of one image.

    Attributes:
        tokens: n x C x G x G float32 feature crops.
        regions: n x 2 x G x G float32 (anomaly fraction, object fraction) per token.
        boxes: the n crop boxes in model pixels.
        areas: n anomalous-pixel counts (region-merging weights).
        scores: n crop anomaly scores in [0, 1].
        binarized: the MEBin result on the model-size map.
    """

    tokens: np.ndarray
    regions: np.ndarray
    boxes: tuple[CropBox, ...]
    areas: np.ndarray
    scores: np.ndarray
    binarized: MEBinResult


def crop_tokens(features: np.ndarray, box: CropBox, image_size: tuple[int, int], grid: int) -> np.ndarray:
    """Bilinear samples (C x G x G float32) of a C x h x w feature map at the centres of a G x G grid
    laid over ``box`` (model pixels of an image of ``image_size`` (H, W)); edges are clamped."""
    c, fh, fw = features.shape
    height, width = image_size
    ys = box.y0 + (np.arange(grid) + 0.5) * (box.height / grid)  # model pixels
    xs = box.x0 + (np.arange(grid) + 0.5) * (box.width / grid)
    fy = np.clip(ys * (fh / height) - 0.5, 0, fh - 1)  # feature-cell coordinates (cell centres at k + 0.5)
    fx = np.clip(xs * (fw / width) - 0.5, 0, fw - 1)
    y0 = np.floor(fy).astype(int)
    x0 = np.floor(fx).astype(int)
    y1 = np.minimum(y0 + 1, fh - 1)
    x1 = np.minimum(x0 + 1, fw - 1)
    wy = (fy - y0).astype(np.float32)[:, None]
    wx = (fx - x0).astype(np.float32)[None, :]
    top = features[:, y0][:, :, x0] * (1 - wx) + features[:, y0][:, :, x1] * wx
    bottom = features[:, y1][:, :, x0] * (1 - wx) + features[:, y1][:, :, x1] * wx
    return np.ascontiguousarray(top * (1 - wy) + bottom * wy, dtype=np.float32)


def crop_regions(anomaly_mask: np.ndarray, object_mask: np.ndarray, box: CropBox, grid: int) -> np.ndarray:
    """Per-token fractions (2 x G x G float32) of anomalous and of object pixels inside ``box``."""
    cv2 = require("cv2")
    out = np.empty((2, grid, grid), np.float32)
    for i, m in enumerate((anomaly_mask, object_mask)):
        window = np.ascontiguousarray(m[box.y0:box.y1, box.x0:box.x1], dtype=np.float32)
        out[i] = cv2.resize(window, (grid, grid), interpolation=cv2.INTER_AREA)
    return out


def build_crops(model_map: np.ndarray, features: np.ndarray, object_mask: np.ndarray | None,
                settings: DiscoverySettings, anomaly_mask: np.ndarray | None = None,
                token_fn: Callable[[Sequence[CropBox]], np.ndarray] | None = None) -> CropSet:
    """MEBin on the model-size map, anomaly-centred crops, and their token and region grids.

    Args:
        model_map: H x W float map at the model's input size.
        features: C x h x w float32 detector features of the same image.
        object_mask: H x W bool object mask at model size; None: the whole image is object.
        settings: grid, MEBin range and parameters, crop parameters.
        anomaly_mask: H x W bool mask to use instead of MEBin's (ground-truth ablation); the crop
            count then follows its connected components.
        token_fn: boxes -> n x C x G x G tokens, replacing the sampling of ``features`` (the ViT
            token source, see :func:`vit_crop_tokens`).

    Returns:
        The :class:`CropSet` (at least one crop: the whole image when nothing is anomalous).
    """
    if model_map.ndim != 2 or features.ndim != 3:
        raise InputError(f"need an H x W map and C x h x w features, got {model_map.shape} and {features.shape}")
    binarized = mebin(model_map, settings.s_min, settings.s_max, settings.mebin)
    mask = binarized.mask if anomaly_mask is None else np.asarray(anomaly_mask, bool)
    regions_count = binarized.num_regions
    if anomaly_mask is None and not mask.any() and settings.fallback_fraction > 0:
        mask = model_map >= np.quantile(model_map, 1.0 - settings.fallback_fraction)
        regions_count = 1  # the strongest spot; anomaly_crop_boxes keeps the largest boxes first
    if anomaly_mask is not None:
        cv2 = require("cv2")
        regions_count = int(cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0]) - 1
    obj = np.ones(model_map.shape, bool) if object_mask is None else np.asarray(object_mask, bool)
    if obj.shape != model_map.shape or mask.shape != model_map.shape:
        raise InputError(f"masks {obj.shape} / {mask.shape} do not match the map {model_map.shape}")
    boxes = tuple(anomaly_crop_boxes(mask, regions_count, settings.crops))
    size = (int(model_map.shape[0]), int(model_map.shape[1]))
    if token_fn is not None:
        tokens = token_fn(boxes)
    else:
        tokens = np.stack([crop_tokens(features, b, size, settings.grid) for b in boxes])
    regions = np.stack([crop_regions(mask, obj, b, settings.grid) for b in boxes])
    return CropSet(tokens=tokens, regions=regions, boxes=boxes, areas=crop_areas(mask, boxes).astype(np.float32),
                   scores=crop_scores(binarized.normalized, boxes), binarized=binarized)


def vit_crop_tokens(vit: Any, image_rgb: np.ndarray, boxes: Sequence[CropBox], grid: int, input_size: int) -> np.ndarray:
    """Token grids (n x D x G x G float32) of image crops through a ViT (:class:`protoinspect.sdk.models.vit_tokens.ViTTokens`).

    Each box of the model-size RGB image is resized to ``input_size`` (bilinear), ImageNet-normalised,
    encoded, and its patch-token map resampled to G x G like the detector's features.
    """
    cv2 = require("cv2")
    torch = require("torch")
    from protoinspect.sdk.models.vit_tokens import IMAGENET_MEAN, IMAGENET_STD

    mean = np.asarray(IMAGENET_MEAN, np.float32)
    std = np.asarray(IMAGENET_STD, np.float32)
    crops = []
    for b in boxes:
        crop = cv2.resize(np.ascontiguousarray(image_rgb[b.y0:b.y1, b.x0:b.x1]), (input_size, input_size),
                          interpolation=cv2.INTER_LINEAR)
        crops.append(((crop.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1))
    with torch.inference_mode():
        maps = vit(torch.from_numpy(np.stack(crops))).float().numpy()
    whole = CropBox(0, 0, input_size, input_size)
    return np.stack([crop_tokens(m, whole, (input_size, input_size), grid) for m in maps])
