"""Where synthetic anomalies go: object masks of the training images (Otsu foreground, the SDK's masker).

Real defects lie on the product, not on the conveyor. For objects on a background the trainer keeps
synthetic anomalies on the object; for textures and surfaces that fill the frame it uses the whole
image. ``auto`` decides per data set from its training images only.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from protoinspect.sdk.errors import ConfigError
from protoinspect.sdk.stages.masker import OtsuMasker

# one object on a background: it covers 3-85 % of the frame, at most 2 % of the frame border, and its
# largest connected component holds at least 80 % of it (a texture's Otsu classes do not)
MIN_OBJECT, MAX_OBJECT, MAX_BORDER, MIN_LARGEST = 0.03, 0.85, 0.02, 0.8


def _border_share(mask: np.ndarray) -> float:
    return float(np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]]).mean())


def _largest_share(mask: np.ndarray) -> float:
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return 0.0
    areas = stats[1:, cv2.CC_STAT_AREA]
    return float(areas.max() / areas.sum())


def object_masks(pool: np.ndarray, placement: str) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Object masks for N x H x W x 3 uint8 RGB training images, or None for "anywhere".

    Args:
        pool: the data set's training images at model size.
        placement: ``object``, ``anywhere`` or ``auto`` (object when, in at least 80 % of the images,
            the Otsu foreground is one dominant component covering 3-85 % of the frame and at most 2 %
            of its border).

    Returns:
        (N x H x W bool masks or None, a record of the decision for the manifest).

    Raises:
        ConfigError: ``object`` was asked for but no image has a usable foreground.
    """
    if placement == "anywhere":
        return None, {"anomaly_placement": "anywhere"}
    masker = OtsuMasker(color_order="rgb")
    masks = np.stack([masker.mask(im) for im in pool])
    area = masks.reshape(len(masks), -1).mean(axis=1)
    border = np.array([_border_share(m) for m in masks])
    largest = np.array([_largest_share(m) for m in masks])
    usable = (area >= MIN_OBJECT) & (area <= MAX_OBJECT) & (border <= MAX_BORDER) & (largest >= MIN_LARGEST)
    record = {"object_images": int(usable.sum()), "images": len(pool), "median_object_area": float(np.median(area))}
    if placement == "auto" and usable.mean() < 0.8:
        return None, {"anomaly_placement": "anywhere", "decided": "auto", **record}
    if not usable.any():
        msg = ("anomaly_placement=object: no training image has a usable object mask (Otsu foreground of "
               f"{MIN_OBJECT:.0%}-{MAX_OBJECT:.0%} of the frame); use anomaly_placement=anywhere")
        raise ConfigError(msg)
    masks[~usable] = True  # images without a usable mask: anywhere
    return masks, {"anomaly_placement": "object", "decided": placement, **record}
