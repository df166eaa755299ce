"""Region merging of per-crop classifier outputs into one image-level class and vMF score (§3(b).7)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from protoinspect.sdk.stages.crops import merge_region_probabilities


@dataclass(frozen=True)
class MergedPrediction:
    """Image-level result of the crops of one image.

    Attributes:
        probabilities: K merged class probabilities (area-weighted mean of the crops' softmax).
        cosines: K merged cosine similarities to the class prototypes (same weights).
        class_id: argmax of ``probabilities``.
        score: the vMF score, ``cosines[class_id]``: how close the image is to its class's prototype
            (in [-1, 1]); low scores are outliers.
    """

    probabilities: np.ndarray
    cosines: np.ndarray
    class_id: int
    score: float


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax (float64)."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def area_weights(areas: np.ndarray, temperature: float) -> np.ndarray:
    """The region-merging weights ``softmax(sqrt(area) / T)`` of n crops (n,), as merging applies them."""
    areas = np.asarray(areas, np.float64)
    return merge_region_probabilities(np.eye(len(areas)), areas, temperature)


def merge_crops(logits: np.ndarray, areas: np.ndarray, kappa: float, temperature: float) -> MergedPrediction:
    """Merge n crops' vMF logits (n x K, ``kappa * cos``) with weights ``softmax(sqrt(area) / T)``."""
    logits = np.asarray(logits, np.float64)
    probs = merge_region_probabilities(softmax(logits), np.asarray(areas, np.float64), temperature)
    cosines = area_weights(areas, temperature) @ (logits / kappa)
    class_id = int(np.argmax(probs))
    return MergedPrediction(probabilities=probs, cosines=cosines, class_id=class_id, score=float(cosines[class_id]))
