"""From a detector output to classifier inputs: anomalous pixels (peak component or MEBin) ->
anomaly-centred crops -> token grids and region descriptors.

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
from protoinspect.sdk import config_codec
from protoinspect.sdk._imports import require
from protoinspect.sdk.errors import ConfigError, InputError
from protoinspect.sdk.preprocess import normalize_images
from protoinspect.sdk.stages.crops import CropBox, CropSettings, anomaly_crop_boxes, crop_areas, crop_scores
from protoinspect.sdk.stages.mebin import MEBinResult, MEBinSettings, mebin, normalize_map
from protoinspect.sdk.stages.region_descriptors import DESCRIPTOR_NAMES, box_descriptors, standardise_rows

TOKEN_SOURCES = ("detector", "vit")
#: how the anomalous pixels of a map are found (``DiscoverySettings.region_method``)
REGION_METHODS = ("mebin", "peak")


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
        region_method: ``peak`` (bundles from issue 13 on): the connected component holding the map's
            maximum, of the pixels above ``peak_fraction`` of it, together with every pixel above the
            calibrated pixel threshold — every classified map has a region, centred on its strongest
            response; chosen on the synthetic development line (docs/results.md: image IoU and
            clustering above MEBin and the threshold alone). ``mebin`` (older bundles): MEBin's mask.
        peak_fraction: the relative level of the peak component (``peak`` only).
        descriptor_mean / descriptor_scale: standardisation of the per-crop region descriptors
            (:mod:`protoinspect.sdk.stages.region_descriptors`) that the classifier takes as a third
            input; empty: a classifier without descriptors.
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
    region_method: str = "mebin"
    peak_fraction: float = 0.5
    descriptor_mean: tuple[float, ...] = ()
    descriptor_scale: tuple[float, ...] = ()

    @property
    def uses_descriptors(self) -> bool:
        """Whether the classifier takes region descriptors."""
        return len(self.descriptor_mean) > 0

    def __post_init__(self) -> None:
        if self.region_method not in REGION_METHODS:
            raise ConfigError(f"region_method must be one of {REGION_METHODS}, got {self.region_method!r}")
        if not 0.0 < self.peak_fraction < 1.0:
            raise ConfigError(f"peak_fraction must be in (0, 1), got {self.peak_fraction!r}")
        if len(self.descriptor_mean) != len(self.descriptor_scale) or (
                self.descriptor_mean and len(self.descriptor_mean) != len(DESCRIPTOR_NAMES)) or not all(
                float(v) > 0 for v in self.descriptor_scale):
            raise ConfigError(f"descriptor_mean / descriptor_scale must both be empty or hold {len(DESCRIPTOR_NAMES)} "
                              f"values (scales > 0), got {len(self.descriptor_mean)} / {len(self.descriptor_scale)}")
        if not 0.0 <= self.fallback_fraction < 1.0:
            raise ConfigError(f"fallback_fraction must be in [0, 1), got {self.fallback_fraction!r}")
        if self.token_source not in TOKEN_SOURCES:
            raise ConfigError(f"token_source must be one of {TOKEN_SOURCES}, got {self.token_source!r}")
        if isinstance(self.grid, bool) or not isinstance(self.grid, int) or self.grid < 1:
            raise ConfigError(f"grid must be an int >= 1, got {self.grid!r}")
        if not (np.isfinite(self.s_min) and np.isfinite(self.s_max) and self.s_min <= self.s_max):
            raise ConfigError(f"MEBin range must be finite with s_min <= s_max, got ({self.s_min}, {self.s_max})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (``reject_threshold`` -inf as the string "-inf"; :mod:`protoinspect.sdk.config_codec`)."""
        return config_codec.to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DiscoverySettings:
        """Inverse of :meth:`to_dict`; unknown keys are an error (:mod:`protoinspect.sdk.config_codec`)."""
        return config_codec.from_dict(cls, d)


@dataclass(frozen=True, eq=False)
class CropSet:
    """Classifier inputs of one image.

    Attributes:
        tokens: n x C x G x G float32 feature crops.
        regions: n x 2 x G x G float32 (anomaly fraction, object fraction) per token.
        boxes: the n crop boxes in model pixels.
        areas: n anomalous-pixel counts (region-merging weights).
        scores: n crop anomaly scores in [0, 1].
        binarized: the MEBin result on the model-size map (None when the crops were built from
            regions found without MEBin).
        descriptors: n x D raw region descriptors of the anomalous pixels in each crop (NaN rows: none;
            :func:`protoinspect.sdk.stages.region_descriptors.box_descriptors`), None when not asked for.
        anomaly_mask: H x W bool, the anomalous pixels the crops were built from.
    """

    tokens: np.ndarray
    regions: np.ndarray
    boxes: tuple[CropBox, ...]
    areas: np.ndarray
    scores: np.ndarray
    binarized: MEBinResult | None
    descriptors: np.ndarray | None = None
    anomaly_mask: np.ndarray | None = None

    def classifier_inputs(self, settings: DiscoverySettings) -> dict[str, np.ndarray]:
        """The classifier graph's inputs: ``tokens``, ``regions`` and, for a classifier with descriptors,
        ``descriptors`` standardised with the bundle's stats.

        Raises:
            InputError: the settings use descriptors but the crop set was built without them.
        """
        out = {"tokens": np.asarray(self.tokens, np.float32), "regions": np.asarray(self.regions, np.float32)}
        if settings.uses_descriptors:
            if self.descriptors is None:
                raise InputError("the classifier takes region descriptors: build the crop set with the image")
            out["descriptors"] = standardise_rows(self.descriptors, settings.descriptor_mean, settings.descriptor_scale)
        return out


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


@dataclass(frozen=True, eq=False)
class AnomalyMask:
    """The anomalous pixels of one model-size map, as discovery training and the runtime find them.

    Attributes:
        mask: H x W bool.
        num_regions: the region count that decides how many crops describe the image (MEBin's
            ``δ̄``; 1 for the ``fallback_fraction`` mask).
        binarized: the MEBin result (its ``normalized`` map gives the crop scores); None for ``peak``.
        normalized: H x W ``Â`` of the map in [0, 255] (the crop scores).
    """

    mask: np.ndarray
    num_regions: int
    binarized: MEBinResult | None
    normalized: np.ndarray


def peak_mask(model_map: np.ndarray, fraction: float, pixel_threshold: float = float("inf")) -> np.ndarray:
    """The component (8-connected) of ``map > fraction * max(map)`` that holds the maximum, together
    with every pixel above ``pixel_threshold`` (none when it is not finite); no peak component when the
    maximum is not positive."""
    cv2 = require("cv2")
    amap = np.asarray(model_map)
    peak = float(amap.max())
    above = amap > pixel_threshold if np.isfinite(pixel_threshold) else np.zeros(amap.shape, bool)
    if not peak > 0:
        return above
    _, labels = cv2.connectedComponents((amap > fraction * peak).view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    y, x = np.unravel_index(int(np.argmax(amap)), amap.shape)
    return above | (labels == labels[y, x])


def discovery_anomaly_mask(model_map: np.ndarray, settings: DiscoverySettings,
                           pixel_threshold: float = float("inf")) -> AnomalyMask:
    """The anomalous pixels by ``settings.region_method``: ``peak`` (:func:`peak_mask` with the calibrated
    ``pixel_threshold``) or MEBin on the model-size map with the bundle's calibrated range (when MEBin
    finds no stable region and ``settings.fallback_fraction > 0``, the top ``fallback_fraction`` of the
    map's pixels)."""
    if settings.region_method == "peak":
        cv2 = require("cv2")
        mask = peak_mask(model_map, settings.peak_fraction, pixel_threshold)
        count = int(cv2.connectedComponents(mask.view(np.uint8), connectivity=8)[0]) - 1
        return AnomalyMask(mask=mask, num_regions=count, binarized=None,
                           normalized=normalize_map(model_map, settings.s_min, settings.s_max))
    binarized = mebin(model_map, settings.s_min, settings.s_max, settings.mebin)
    mask, count = binarized.mask, binarized.num_regions
    if not mask.any() and settings.fallback_fraction > 0:
        mask = model_map >= np.quantile(model_map, 1.0 - settings.fallback_fraction)
        count = 1  # the strongest spot; the largest boxes are kept first
    return AnomalyMask(mask=mask, num_regions=int(count), binarized=binarized, normalized=binarized.normalized)


def crop_set(boxes: Sequence[CropBox], features: np.ndarray | None, anomaly_mask: np.ndarray,
             object_mask: np.ndarray | None, settings: DiscoverySettings, normalized_map: np.ndarray,
             binarized: MEBinResult | None = None,
             token_fn: Callable[[Sequence[CropBox]], np.ndarray] | None = None,
             image: np.ndarray | None = None) -> CropSet:
    """Token and region grids, areas and scores of ``boxes`` (model pixels) over one image.

    Args:
        boxes: the crops, at least one.
        features: C x h x w detector features (None only with ``token_fn``).
        anomaly_mask: H x W bool anomalous pixels at model size.
        object_mask: H x W bool object mask at model size; None: the whole image is object.
        settings: the token grid side.
        normalized_map: H x W ``Â`` of the same map (:func:`protoinspect.sdk.stages.mebin.normalize_map`;
            the crop scores).
        binarized: MEBin's result on the same map, kept in the crop set (None: not computed).
        token_fn: boxes -> n x C x G x G tokens instead of sampling ``features`` (ViT token source).
        image: H x W x 3 uint8 model-size image: the crops' region descriptors are computed (None: not).

    Raises:
        InputError: no box, masks of another size than the map, or neither features nor ``token_fn``.
    """
    shape = normalized_map.shape
    obj = np.ones(shape, bool) if object_mask is None else np.asarray(object_mask, bool)
    if not boxes or obj.shape != shape or anomaly_mask.shape != shape:
        raise InputError(f"need >= 1 box and masks of the map's size {shape}, got {len(boxes)} boxes, "
                         f"masks {obj.shape} / {anomaly_mask.shape}")
    size = (int(shape[0]), int(shape[1]))
    if token_fn is not None:
        tokens = token_fn(boxes)
    elif features is None or features.ndim != 3:
        raise InputError("crop_set needs C x h x w features (or a token_fn)")
    else:
        tokens = np.stack([crop_tokens(features, b, size, settings.grid) for b in boxes])
    regions = np.stack([crop_regions(anomaly_mask, obj, b, settings.grid) for b in boxes])
    descriptors = None
    if image is not None:
        descriptors = box_descriptors(anomaly_mask, image, [(b.x0, b.y0, b.x1, b.y1) for b in boxes], object_mask)
    return CropSet(tokens=tokens, regions=regions, boxes=tuple(boxes),
                   areas=crop_areas(anomaly_mask, boxes).astype(np.float32),
                   scores=crop_scores(normalized_map, boxes), binarized=binarized, descriptors=descriptors,
                   anomaly_mask=np.asarray(anomaly_mask, bool))


def build_crops(model_map: np.ndarray, features: np.ndarray, object_mask: np.ndarray | None,
                settings: DiscoverySettings, anomaly_mask: np.ndarray | None = None,
                token_fn: Callable[[Sequence[CropBox]], np.ndarray] | None = None,
                image: np.ndarray | None = None, pixel_threshold: float = float("inf")) -> CropSet:
    """MEBin on the model-size map, anomaly-centred crops, and their token and region grids (training's path;
    the runtime classifier builds the same crops from the Inspector's regions, see
    :mod:`protoinspect.sdk.stages.region_classifier`).

    Args:
        model_map: H x W float map at the model's input size.
        features: C x h x w float32 detector features of the same image.
        object_mask: H x W bool object mask at model size; None: the whole image is object.
        settings: grid, MEBin range and parameters, crop parameters.
        anomaly_mask: H x W bool mask to use instead of MEBin's (ground-truth ablation); the crop
            count then follows its connected components.
        token_fn: boxes -> n x C x G x G tokens, replacing the sampling of ``features`` (the ViT
            token source, see :func:`vit_crop_tokens`).
        image: H x W x 3 uint8 model-size image, for the crops' region descriptors (None: none computed).
        pixel_threshold: the bundle's calibrated pixel threshold (``region_method="peak"``).

    Returns:
        The :class:`CropSet` (at least one crop: the whole image when nothing is anomalous).
    """
    if model_map.ndim != 2 or features.ndim != 3:
        raise InputError(f"need an H x W map and C x h x w features, got {model_map.shape} and {features.shape}")
    found = discovery_anomaly_mask(model_map, settings, pixel_threshold)
    mask, regions_count = found.mask, found.num_regions
    if anomaly_mask is not None:
        cv2 = require("cv2")
        mask = np.asarray(anomaly_mask, bool)
        regions_count = int(cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0]) - 1
    if mask.shape != model_map.shape:
        raise InputError(f"anomaly mask {mask.shape} does not match the map {model_map.shape}")
    boxes = anomaly_crop_boxes(mask, regions_count, settings.crops)
    return crop_set(boxes, features, mask, object_mask, settings, found.normalized, found.binarized, token_fn, image)


def vit_crop_tokens(vit: Any, image_rgb: np.ndarray, boxes: Sequence[CropBox], grid: int, input_size: int) -> np.ndarray:
    """Token grids (n x D x G x G float32) of image crops through a ViT (:class:`protoinspect.sdk.models.vit_tokens.ViTTokens`).

    Each box of the model-size RGB image is resized to ``input_size`` (bilinear), ImageNet-normalised
    (:func:`protoinspect.sdk.preprocess.normalize_images`), encoded, and its patch-token map resampled
    to G x G like the detector's features.
    """
    cv2 = require("cv2")
    torch = require("torch")
    crops = np.stack([cv2.resize(np.ascontiguousarray(image_rgb[b.y0:b.y1, b.x0:b.x1]), (input_size, input_size),
                                 interpolation=cv2.INTER_LINEAR) for b in boxes])
    with torch.inference_mode():
        maps = vit(torch.from_numpy(normalize_images(crops))).float().numpy()
    whole = CropBox(0, 0, input_size, input_size)
    return np.stack([crop_tokens(m, whole, (input_size, input_size), grid) for m in maps])
