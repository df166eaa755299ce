"""Discovery training data: detector maps and features of anomalous images, their crops, and augmented
views (flips of the image through the frozen detector, jittered crop boxes), all through
:mod:`protoinspect.sdk.stages.discovery_crops` so training sees exactly what the runtime computes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch
from protoinspect.sdk.preprocess import PreprocessSpec, resize_gt_mask
from protoinspect.sdk.stages.crops import CropBox
from protoinspect.sdk.stages.discovery_crops import (
    CropSet,
    DiscoverySettings,
    build_crops,
    crop_regions,
    crop_tokens,
    vit_crop_tokens,
)
from protoinspect.sdk.stages.mebin import mebin_range
from protoinspect.training.batches import images_to_tensor, load_resized
from protoinspect.training.dataset_layout import Sample
from protoinspect.training.discovery_config import VARIANTS, DiscoveryTrainConfig
from protoinspect.training.image_io import decode_file


@dataclass(frozen=True, eq=False)
class DetectedImages:
    """Detector outputs for a list of samples (model size)."""

    samples: tuple[Sample, ...]
    images: np.ndarray  # N x H x W x 3 uint8 RGB
    maps: np.ndarray  # N x H x W float32
    scores: np.ndarray  # N float32


@dataclass(frozen=True, eq=False)
class DiscoveryImage:
    """One image's crops and their augmented versions.

    Attributes:
        sample: the dataset sample (path, defect type).
        score: detector image score.
        crops: the exact (identity, un-jittered) crops, as the runtime builds them.
        tokens: V x n x C x G x G float16 versions of the n crops (version 0 = ``crops.tokens``).
        regions: V x n x 2 x G x G float16, likewise.
        descriptors: n x D raw region descriptors of the exact crops (NaN rows: no anomalous pixel in
            the crop), shared by every version (flips and small jitters keep the region).
    """

    sample: Sample
    score: float
    crops: CropSet
    tokens: np.ndarray
    regions: np.ndarray
    descriptors: np.ndarray


def _flip(a: np.ndarray, variant: str) -> np.ndarray:
    """Flip the two leading spatial axes ... -> same layout (H, W first for masks; use on H x W [x C])."""
    if variant == "identity":
        return a
    if variant == "hflip":
        return a[:, ::-1]
    if variant == "vflip":
        return a[::-1]
    return a[::-1, ::-1]


def _flip_box(box: CropBox, variant: str, height: int, width: int) -> CropBox:
    x0, y0, x1, y1 = box.x0, box.y0, box.x1, box.y1
    if variant in ("hflip", "rot180"):
        x0, x1 = width - x1, width - x0
    if variant in ("vflip", "rot180"):
        y0, y1 = height - y1, height - y0
    return CropBox(x0, y0, x1, y1)


def _jitter(box: CropBox, rng: np.random.Generator, amount: float, height: int, width: int) -> CropBox:
    side = max(box.width, box.height) * float(np.exp(rng.uniform(-amount, amount)))
    cx = (box.x0 + box.x1) / 2 + rng.uniform(-amount, amount) * box.width
    cy = (box.y0 + box.y1) / 2 + rng.uniform(-amount, amount) * box.height
    side = min(side, width, height)
    x0 = int(round(min(max(cx - side / 2, 0), width - side)))
    y0 = int(round(min(max(cy - side / 2, 0), height - side)))
    return CropBox(x0, y0, max(x0 + 1, min(width, int(round(x0 + side)))), max(y0 + 1, min(height, int(round(y0 + side)))))


@torch.no_grad()
def forward_detector(net: torch.nn.Module, images: np.ndarray, spec: PreprocessSpec, batch: int = 8
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N x H x W x 3 uint8 RGB -> (maps N x H x W, scores N, features N x C x h x w), in batches."""
    maps, scores, feats = [], [], []
    for i in range(0, len(images), batch):
        amap, score, f = net.forward_with_features(images_to_tensor(images[i:i + batch], spec))
        maps.append(amap[:, 0].numpy())
        scores.append(score.numpy())
        feats.append(f.numpy())
    return np.concatenate(maps), np.concatenate(scores), np.concatenate(feats)


def detect(samples: Sequence[Sample], channels: str, net: torch.nn.Module, spec: PreprocessSpec,
           progress: bool = False) -> DetectedImages:
    """Model-size images, maps and scores of ``samples`` (the frozen detector, identity view)."""
    images = load_resized(list(samples), channels, spec, progress)
    maps, scores, _ = forward_detector(net, images, spec)
    return DetectedImages(tuple(samples), images, maps.astype(np.float32), scores.astype(np.float32))


def gt_mask(sample: Sample, spec: PreprocessSpec) -> np.ndarray:
    """The sample's ground-truth mask at model size (all False for a normal image)."""
    h, w = spec.image_size
    if sample.mask_path is None:
        return np.zeros((h, w), bool)
    raw = decode_file(sample.mask_path, "mask")
    raw = raw if raw.ndim == 2 else raw[..., 0]
    return resize_gt_mask(raw, (h, w), threshold=0)


def calibrate_settings(detected: DetectedImages, cfg: DiscoveryTrainConfig) -> DiscoverySettings:
    """Discovery settings with the MEBin range calibrated on these maps (methods.md §3(b).1)."""
    s_min, s_max = mebin_range(list(detected.maps))
    return DiscoverySettings(grid=cfg.classifier.grid, s_min=s_min, s_max=s_max,
                             token_source="vit" if cfg.vit_weights else "detector", vit_input=cfg.vit_input,
                             region_method=cfg.region_method, peak_fraction=cfg.peak_fraction)


def build_discovery_images(detected: DetectedImages, indices: Sequence[int], net: torch.nn.Module,
                           spec: PreprocessSpec, settings: DiscoverySettings, cfg: DiscoveryTrainConfig,
                           object_masks: Sequence[np.ndarray | None] | None = None,
                           progress: bool = False, variants: Sequence[str] = VARIANTS,
                           jitters: int | None = None, vit: torch.nn.Module | None = None,
                           pixel_threshold: float = float("inf")) -> list[DiscoveryImage]:
    """Crops and augmented versions of the images ``indices`` of ``detected``.

    Versions: every flip variant of the image goes through the frozen detector; for each, the crop
    boxes (found once on the identity view) are flipped alike and ``cfg.jitters`` times jittered
    (the first exact). ``variants`` must start with ``identity``; evaluation passes only that and
    ``jitters=1``. With ``vit`` (settings.token_source == "vit") the tokens come from image crops
    through the ViT instead of the detector's features. ``pixel_threshold``: the bundle's calibrated
    pixel threshold (``settings.region_method == "peak"`` takes every pixel above it).
    """
    if variants[0] != "identity":
        raise ValueError("variants must start with 'identity'")
    jitters = cfg.jitters if jitters is None else jitters
    rng = np.random.default_rng(cfg.seed)
    h, w = spec.image_size
    out: list[DiscoveryImage] = []
    it = list(indices)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="discovery crops", unit="img", leave=False)
    for i in it:
        sample = detected.samples[i]
        obj = None if object_masks is None else object_masks[i]
        prior = gt_mask(sample, spec) if cfg.anomaly_prior == "gt" else None
        views = np.stack([np.ascontiguousarray(_flip(detected.images[i], v)) for v in variants])
        _, _, feats = forward_detector(net, views, spec, batch=len(variants))
        token_fn = None if vit is None else partial(_vit_tokens, vit, views[0], settings)
        crops = build_crops(detected.maps[i], feats[0], obj, settings, anomaly_mask=prior, token_fn=token_fn,
                            image=detected.images[i], pixel_threshold=pixel_threshold)
        anomaly = crops.anomaly_mask
        objm = np.ones((h, w), bool) if obj is None else obj
        tokens, regions = [], []
        for vi, variant in enumerate(variants):
            amask, omask = _flip(anomaly, variant), _flip(objm, variant)
            for j in range(jitters):
                boxes = [_flip_box(box, variant, h, w) for box in crops.boxes]
                if j:
                    boxes = [_jitter(b, rng, cfg.box_jitter, h, w) for b in boxes]
                if vit is not None:
                    tokens.append(vit_crop_tokens(vit, views[vi], boxes, settings.grid, settings.vit_input))
                else:
                    tokens.append(np.stack([crop_tokens(feats[vi], b, (h, w), settings.grid) for b in boxes]))
                regions.append(np.stack([crop_regions(amask, omask, b, settings.grid) for b in boxes]))
        out.append(DiscoveryImage(sample=sample, score=float(detected.scores[i]), crops=crops,
                                  tokens=np.stack(tokens).astype(np.float16),
                                  regions=np.stack(regions).astype(np.float16),
                                  descriptors=np.asarray(crops.descriptors, np.float32)))
    return out


def _vit_tokens(vit: torch.nn.Module, image: np.ndarray, settings: DiscoverySettings,
                boxes: Sequence[CropBox]) -> np.ndarray:
    return vit_crop_tokens(vit, image, boxes, settings.grid, settings.vit_input)


def with_reject_threshold(settings: DiscoverySettings, threshold: float) -> DiscoverySettings:
    """``settings`` with a calibrated outlier threshold."""
    return replace(settings, reject_threshold=float(threshold))
