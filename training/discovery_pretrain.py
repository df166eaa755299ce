"""Pre-training of the defect classifier on a taxonomy of synthetic anomalies of the product itself.

Before it learns from the real, unlabelled anomalies, the classifier's token embedding is taught to
separate *kinds* of defect: each of :data:`protoinspect.training.pseudo_anomalies.KINDS` (Perlin
texture, flat colour, shuffled blocks, Poisson patch, scar, crack, intensity change) is pasted onto the
data set's own defect-free training images, the frozen detector gives the map and features as it would
for a real defect, and the crops (the runtime's crops, :func:`build_discovery_images`) carry the kind
as a label for the supervised-contrastive term. Only defect-free images are used: no label of a real
defect, no test image. The synthetic line's painters (:mod:`protoinspect.training.synthetic_line_defects`)
are not used, so the development line stays an independent check.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from protoinspect.sdk.errors import DatasetError
from protoinspect.sdk.preprocess import PreprocessSpec
from protoinspect.sdk.stages.discovery_crops import DiscoverySettings
from protoinspect.training.batches import load_resized
from protoinspect.training.dataset_files import Sample
from protoinspect.training.discovery_config import DiscoveryTrainConfig
from protoinspect.training.discovery_data import DetectedImages, DiscoveryImage, build_discovery_images, forward_detector
from protoinspect.training.pseudo_anomalies import KINDS, synthesize_anomaly

#: at most this many defect-free training images are read as canvases
MAX_CANVASES = 64


def synthetic_taxonomy_images(train: Sequence[Sample], channels: str, net: torch.nn.Module, spec: PreprocessSpec,
                              settings: DiscoverySettings, cfg: DiscoveryTrainConfig, pixel_threshold: float,
                              progress: bool = False, vit: torch.nn.Module | None = None
                              ) -> tuple[list[DiscoveryImage], list[int]]:
    """``cfg.pretrain_per_kind`` synthetic anomalies of every kind on the training images, as discovery
    images (identity and horizontal-flip versions, ``cfg.jitters`` jitters) with their kind index;
    ``vit``: the ViT token source, as for the real anomalies.

    Raises:
        DatasetError: no defect-free training image.
    """
    if not train:
        raise DatasetError("pre-training on synthetic anomalies needs defect-free training images (train/good)")
    rng = np.random.default_rng(cfg.seed + 11)
    pick = sorted(rng.choice(len(train), size=min(len(train), MAX_CANVASES), replace=False).tolist())
    canvases = load_resized([train[i] for i in pick], channels, spec, progress)
    images, labels, samples = [], [], []
    for k, kind in enumerate(KINDS):
        for j in range(cfg.pretrain_per_kind):
            a, b = rng.choice(len(canvases), size=2, replace=len(canvases) < 2)
            out, _ = synthesize_anomaly(canvases[a], canvases[b], rng, kind=kind)
            images.append(out)
            labels.append(k)
            samples.append(Sample(train[pick[a]].image_path, 1, f"synthetic-{kind}", None))
    stack = np.stack(images)
    maps, scores, _ = forward_detector(net, stack, spec)
    detected = DetectedImages(tuple(samples), stack, maps.astype(np.float32), scores.astype(np.float32))
    crops = build_discovery_images(detected, range(len(samples)), net, spec, settings, cfg, None, progress,
                                   variants=("identity", "hflip"), pixel_threshold=pixel_threshold, vit=vit)
    return crops, labels
