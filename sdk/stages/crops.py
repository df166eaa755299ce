"""Anomaly-centred square crops from a MEBin mask (methods.md §3(b).2) and region merging (§3(b).7).

Boxes are pixel boxes ``[x0, x1) x [y0, y1)`` in the mask's frame. Choices where the spec leaves room:

* The merge threshold in pixels is ``floor(merge_distance * S)``, as the reference code computes it
  (``int(max(image_shape) * max_merge_dist)``); boxes merge when their Euclidean rectangle gap is strictly
  below it (0 when they touch or overlap).
* A merged box (union, short side grown symmetrically to the long one) is shifted inside the image; merging
  repeats until no two boxes are close (each round merges whole groups of close boxes: order-free).
* Non-square images: a square side ``2ρ`` can exceed the short side (``ρ <= floor(S / 2)`` with ``S`` the
  LONG side); the box is then clamped to the image, i.e. it spans the whole short side and is not square.
* Boxes are sorted by decreasing area, ties by ``(y0, x0)``; at least one box is always returned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

from protoinspect.sdk import config_codec
from protoinspect.sdk._imports import require
from protoinspect.sdk.errors import ConfigError, InputError

__all__ = ["CropBox", "CropSettings", "RegionCrop", "anomaly_crop_boxes", "crop_areas", "crop_scores", "kept_crop_count",
           "merge_region_probabilities", "region_crops"]


@dataclass(frozen=True)
class CropSettings:
    """Crop and merge parameters (fractions are of ``S = max(H, W)``).

    Attributes:
        padding: ``p``, relative margin around a contour's bounding box.
        min_size: ``m``, the half side is at least ``floor(m S)`` (side >= 2 m S).
        merge_distance: ``d``, boxes closer than ``floor(d S)`` pixels are merged.
        extra_crops: boxes kept beyond the MEBin region count (the code keeps one more).
        merge_temperature: ``T`` of the area weights ``softmax(sqrt(a) / T)`` (§3(b).7; 50, or 100 for MVTec).
    """

    padding: float = 0.1
    min_size: float = 0.1
    merge_distance: float = 0.01
    extra_crops: int = 1
    merge_temperature: float = 50.0

    def __post_init__(self) -> None:
        """Validate every field; raise :class:`ConfigError` naming the bad one."""
        ranges = {"padding": (0.0, 10.0), "min_size": (0.0, 1.0), "merge_distance": (0.0, 1.0),
                  "extra_crops": (0, 1000), "merge_temperature": (1e-12, 1e12)}
        for name, (lo, hi) in ranges.items():
            value = getattr(self, name)
            kinds = Integral if name == "extra_crops" else Real
            if isinstance(value, bool) or not isinstance(value, kinds) or not lo <= value <= hi:
                kind = "an int" if name == "extra_crops" else "a number"
                msg = f"CropSettings.{name} must be {kind} in [{lo}, {hi}], got {value!r}"
                raise ConfigError(msg)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the settings (:func:`protoinspect.sdk.config_codec.to_dict`)."""
        return config_codec.to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CropSettings:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError` (:mod:`protoinspect.sdk.config_codec`)."""
        return config_codec.from_dict(cls, data)


@dataclass(frozen=True)
class CropBox:
    """Pixel box ``[x0, x1) x [y0, y1)`` (exclusive ends), non-empty."""

    x0: int
    y0: int
    x1: int
    y1: int

    def __post_init__(self) -> None:
        """Coordinates must be ints with ``x1 > x0 >= 0`` and ``y1 > y0 >= 0``."""
        coords = (self.x0, self.y0, self.x1, self.y1)
        if any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) for c in coords) or not (
                0 <= self.x0 < self.x1 and 0 <= self.y0 < self.y1):
            msg = f"invalid crop box {coords}: need ints with 0 <= x0 < x1 and 0 <= y0 < y1"
            raise InputError(msg)

    @property
    def width(self) -> int:
        """``x1 - x0``."""
        return int(self.x1 - self.x0)

    @property
    def height(self) -> int:
        """``y1 - y0``."""
        return int(self.y1 - self.y0)

    @property
    def area(self) -> int:
        """``width * height`` in pixels."""
        return self.width * self.height

    def to_list(self) -> list[int]:
        """``[x0, y0, x1, y1]`` as plain ints."""
        return [int(self.x0), int(self.y0), int(self.x1), int(self.y1)]


def _place(lo: int, hi: int, size: int) -> tuple[int, int]:
    """Shift ``[lo, hi)`` inside ``[0, size)`` keeping its length; clamp to ``[0, size)`` if longer."""
    if hi - lo >= size:
        return 0, size
    if lo < 0:
        return 0, hi - lo
    if hi > size:
        return size - (hi - lo), size
    return lo, hi


def _square(x0: int, y0: int, x1: int, y1: int, height: int, width: int) -> CropBox:
    """Grow the short side of a box symmetrically to the long one, then place it inside the image."""
    grow_y = (x1 - x0) - (y1 - y0)  # > 0: grow the height, < 0: grow the width by -grow_y
    if grow_y > 0:
        y0, y1 = y0 - grow_y // 2, y1 + grow_y - grow_y // 2
    elif grow_y < 0:
        x0, x1 = x0 - (-grow_y) // 2, x1 + (-grow_y) - (-grow_y) // 2
    (xa, xb), (ya, yb) = _place(x0, x1, width), _place(y0, y1, height)
    return CropBox(xa, ya, xb, yb)


def _groups(close: np.ndarray) -> list[list[int]]:
    """Connected components (lists of indices, in first-index order) of a symmetric bool adjacency matrix."""
    parent = list(range(close.shape[0]))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(close, 1))):
        parent[root(int(i))] = root(int(j))
    groups: dict[int, list[int]] = {}
    for i in range(close.shape[0]):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def _merge_close(boxes: list[CropBox], members: list[frozenset[int]], threshold: int, height: int,
                 width: int) -> tuple[list[CropBox], list[frozenset[int]]]:
    """Merge groups of boxes whose pairwise gaps are ``< threshold`` (transitively) until none are close;
    ``members`` (one set per box) are united alike."""
    while len(boxes) > 1:
        b = np.array([box.to_list() for box in boxes], dtype=np.int64)
        gx = np.maximum(0, np.maximum(b[:, None, 0], b[None, :, 0]) - np.minimum(b[:, None, 2], b[None, :, 2]))
        gy = np.maximum(0, np.maximum(b[:, None, 1], b[None, :, 1]) - np.minimum(b[:, None, 3], b[None, :, 3]))
        groups = _groups(np.hypot(gx, gy) < threshold)
        if len(groups) == len(boxes):
            break
        boxes = [_square(int(b[g, 0].min()), int(b[g, 1].min()), int(b[g, 2].max()), int(b[g, 3].max()),
                         height, width) for g in groups]
        members = [frozenset().union(*(members[i] for i in g)) for g in groups]
    return boxes, members


def _check_2d(array: Any, name: str, kinds: str) -> np.ndarray:
    """``array`` as a non-empty 2-D ndarray whose dtype kind is in ``kinds``, else :class:`InputError`."""
    arr = np.asarray(array)
    if arr.ndim != 2 or arr.size == 0 or arr.dtype.kind not in kinds:
        msg = f"{name} must be a non-empty 2-D array of kind {kinds!r}, got shape {arr.shape} dtype {arr.dtype}"
        raise InputError(msg)
    return arr


@dataclass(frozen=True)
class RegionCrop:
    """One anomaly-centred crop and the regions it was built from.

    Attributes:
        box: the crop box (model pixels).
        labels: component labels (of ``cv2.connectedComponents(mask, connectivity=8)``) of the
            regions inside it: those whose outer contour made or was merged into the box, and
            regions nested in their holes.
    """

    box: CropBox
    labels: frozenset[int]


def region_crops(mask: np.ndarray, settings: CropSettings = CropSettings(),
                 labels: np.ndarray | None = None) -> list[RegionCrop]:
    """Every crop of :func:`anomaly_crop_boxes` (before it keeps the largest), with the regions it covers.

    Per external contour with bounding box ``(x, y, w, h)``: centre ``(floor(x + w/2), floor(y + h/2))``,
    half side ``ρ = min(max(floor(max(w, h)(1 + p) / 2), floor(m S)), floor(S / 2))``, shifted inside the
    image; close boxes are merged (their regions united). Sorted by decreasing area, ties by ``(y0, x0)``.
    An empty mask gives no crop.

    Args:
        mask: H x W bool (or integer, non-zero = foreground) anomaly mask.
        settings: padding, minimum size and merge distance.
        labels: H x W int component labels of ``mask`` (8-connectivity); None: every crop's
            ``labels`` is empty (only the boxes are wanted).
    """
    cv2 = require("cv2")
    if not isinstance(settings, CropSettings):
        msg = f"settings must be CropSettings, got {type(settings).__name__}"
        raise ConfigError(msg)
    m = _check_2d(mask, "mask", "biu")
    height, width = m.shape
    size = max(height, width)
    contours, hierarchy = cv2.findContours((m != 0).astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return []
    parents = hierarchy[0][:, 3]
    roots: dict[int, int] = {}  # contour -> its top-level contour (an external border)
    depth = np.zeros(len(contours), int)
    for i in range(len(contours)):
        j = i
        while parents[j] >= 0:
            j = int(parents[j])
            depth[i] += 1
        roots[i] = j
    tops = [i for i in range(len(contours)) if parents[i] < 0]
    members: dict[int, set[int]] = {t: set() for t in tops}
    if labels is not None:
        for i, contour in enumerate(contours):
            if depth[i] % 2 == 0:  # an outer border (odd depths are holes): its pixels are its component's
                x, y = contour[0, 0]
                members[roots[i]].add(int(labels[y, x]))
    boxes = []
    for t in tops:
        x, y, w, h = cv2.boundingRect(contours[t])
        cx, cy = (2 * x + w) // 2, (2 * y + h) // 2
        rho = min(max(int(max(w, h) * (1 + settings.padding) * 0.5), int(size * settings.min_size)), size // 2)
        (x0, x1), (y0, y1) = _place(cx - rho, cx + rho, width), _place(cy - rho, cy + rho, height)
        boxes.append(CropBox(x0, y0, x1, y1))
    merged, sets = _merge_close(boxes, [frozenset(members[t]) for t in tops], int(size * settings.merge_distance),
                                height, width)
    crops = [RegionCrop(box, labels_) for box, labels_ in zip(merged, sets)]
    crops.sort(key=lambda c: (-c.box.area, c.box.y0, c.box.x0))
    return crops


def kept_crop_count(num_regions: int, settings: CropSettings) -> int:
    """How many of the largest crops describe an image: ``max(1, num_regions + extra_crops)`` (the reference code)."""
    if not isinstance(settings, CropSettings):
        msg = f"settings must be CropSettings, got {type(settings).__name__}"
        raise ConfigError(msg)
    if isinstance(num_regions, bool) or not isinstance(num_regions, (int, np.integer)) or num_regions < 0:
        msg = f"num_regions must be an int >= 0, got {num_regions!r}"
        raise InputError(msg)
    return max(1, int(num_regions) + settings.extra_crops)


def anomaly_crop_boxes(mask: np.ndarray, num_regions: int, settings: CropSettings = CropSettings()) -> list[CropBox]:
    """Square boxes centred on the mask's external contours, merged, largest ``num_regions + extra`` first.

    The boxes of :func:`region_crops`, of which the largest :func:`kept_crop_count` are kept. An
    empty mask gives one box, the whole image.

    Args:
        mask: H x W bool (or integer, non-zero = foreground) anomaly mask, e.g. :attr:`MEBinResult.mask`.
        num_regions: MEBin's region count ``δ̄`` (>= 0); ``max(1, δ̄ + extra_crops)`` boxes are kept at most.
        settings: padding, minimum size, merge distance and extra crops.
    """
    keep = kept_crop_count(num_regions, settings)
    crops = region_crops(mask, settings)
    if not crops:
        height, width = np.asarray(mask).shape
        return [CropBox(0, 0, width, height)]
    return [c.box for c in crops[:keep]]


def _check_boxes(boxes: Sequence[CropBox], shape: tuple[int, ...]) -> None:
    """Every box must be a :class:`CropBox` inside an image of ``shape``, else :class:`InputError`."""
    for box in boxes:
        if not isinstance(box, CropBox) or box.x1 > shape[1] or box.y1 > shape[0]:
            msg = f"box {box!r} is not a CropBox inside an image of shape {shape}"
            raise InputError(msg)


def crop_scores(normalized_map: np.ndarray, boxes: Sequence[CropBox]) -> np.ndarray:
    """Per-box anomaly score ``max(Â inside the box) / 255`` as float32 in [0, 1] (``Â`` from MEBin)."""
    amap = _check_2d(normalized_map, "normalized_map", "f")
    if not np.isfinite(amap).all():
        msg = "normalized_map contains NaN or infinite values"
        raise InputError(msg)
    _check_boxes(boxes, amap.shape)
    scores = [float(amap[b.y0:b.y1, b.x0:b.x1].max()) / 255.0 for b in boxes]
    return np.clip(np.asarray(scores, dtype=np.float32), 0.0, 1.0)


def crop_areas(mask: np.ndarray, boxes: Sequence[CropBox]) -> np.ndarray:
    """Foreground pixel count of ``mask`` inside each box (int64), the ``a_k`` of region merging."""
    m = _check_2d(mask, "mask", "biu")
    _check_boxes(boxes, m.shape)
    return np.asarray([np.count_nonzero(m[b.y0:b.y1, b.x0:b.x1]) for b in boxes], dtype=np.int64)


def merge_region_probabilities(probs: np.ndarray, areas: np.ndarray, temperature: float) -> np.ndarray:
    """Image-level class probabilities ``sum_k α_k p_k`` with ``α = softmax(sqrt(a) / T)`` (§3(b).7).

    Args:
        probs: (n, K) per-crop probabilities (n >= 1 crops, K >= 1 classes).
        areas: (n,) foreground pixels per crop mask (>= 0), e.g. from :func:`crop_areas`.
        temperature: ``T`` > 0.

    Returns:
        (K,) float64; one crop returns its own row. The predicted class is its argmax.
    """
    p = np.asarray(probs, dtype=np.float64)
    a = np.asarray(areas, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 1:
        msg = f"probs must be (n, K) with n, K >= 1, got shape {p.shape}"
        raise InputError(msg)
    if a.shape != (p.shape[0],):
        msg = f"areas must have shape ({p.shape[0]},) to match probs, got {a.shape}"
        raise InputError(msg)
    if not (np.isfinite(p).all() and np.isfinite(a).all()) or (a < 0).any():
        msg = "probs and areas must be finite and areas >= 0"
        raise InputError(msg)
    if isinstance(temperature, bool) or not isinstance(temperature, Real) or not 0 < temperature < math.inf:
        msg = f"temperature must be a finite number > 0, got {temperature!r}"
        raise InputError(msg)
    if p.shape[0] == 1:
        return p[0].copy()
    z = np.sqrt(a) / float(temperature)
    weights = np.exp(z - z.max())
    return (weights / weights.sum()) @ p
