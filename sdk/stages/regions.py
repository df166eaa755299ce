"""The region stage: the anomalous regions of a frame, found ONCE on the model-size map.

Algorithm (:class:`MapRegionFinder`): binarise the model-size anomaly map, keep the object, take the
8-connected components. The binarisation is

* for a bundle with a defect classifier trained with ``region_method="peak"`` (the default since
  issue 13): the component of ``map > peak_fraction * max(map)`` that holds the maximum, with every
  pixel above the pixel threshold (:func:`protoinspect.sdk.stages.discovery_crops.peak_mask`): every
  classified frame has a region centred on its strongest response, also when the detector's map stays
  below the pixel threshold (MEBin left 68 % of MTD's anomalous maps without a region; docs/results.md);
* for an older bundle with a defect classifier (``region_method="mebin"``, a calibrated MEBin range):
  MEBin's mask (methods.md §3(b).1: the eroded binarisation at the most stable threshold ``τ``, or
  the bundle's ``fallback_fraction`` mask), AND the calibrated pixel threshold as a floor
  (``map > pixel_threshold``);
* for a detector-only bundle: ``map > pixel_threshold``.

Why MEBin: the classifier was trained on crops around MEBin's regions (training/discovery_data.py
through :func:`protoinspect.sdk.stages.discovery_crops.build_crops`), so the regions the Inspector reports
and the crops the classifier sees must be the same ones, and MEBin adapts its threshold to each map
(one stable count of regions) where one global threshold over- or under-segments. Why only with a
classifier: MEBin needs a search range calibrated on anomalous maps, which only discovery training
measures; a detector bundle knows the normal-pixel quantile alone. Why the floor: the pixel
threshold is the calibrated level that defect-free pixels (almost) never exceed, so no region may
contain pixels below it, whatever MEBin's stability analysis picks; when the floor removes pixels,
the classifier sees the floored regions (the ones reported), not MEBin's raw mask.

Why the model size: the map is the model's output at its input size; the frame-size map is only its
bilinear upsampling, so searching it costs memory (256 MB at 8000x8000) and finds nothing new. Boxes
are scaled to frame pixels (rounded outwards), areas by the pixel ratio, so ``min_area_px`` keeps
its meaning in frame pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from protoinspect.sdk._imports import require
from protoinspect.sdk.errors import ConfigError, InputError
from protoinspect.sdk.result import Defect
from protoinspect.sdk.stages.discovery_crops import DiscoverySettings, discovery_anomaly_mask, peak_mask
from protoinspect.sdk.stages.mebin import MEBinResult


@dataclass(frozen=True)
class RegionSettings:
    """What the default region stage needs.

    Attributes:
        pixel_threshold: map values must be strictly above it (the bundle's calibrated
            ``thresholds.pixel`` unless the config overrides it); -inf: no floor.
        min_area_px: regions covering fewer FRAME pixels are not reported as defects (they still
            shape the classifier's crops, as in training).
        discovery: the bundle's discovery settings (MEBin range and parameters); None: threshold only.
    """

    pixel_threshold: float
    min_area_px: int = 16
    discovery: DiscoverySettings | None = None

    def __post_init__(self) -> None:
        if isinstance(self.pixel_threshold, bool) or not isinstance(self.pixel_threshold, (int, float)) \
                or math.isnan(self.pixel_threshold):
            raise ConfigError(f"pixel_threshold must be a number (not NaN), got {self.pixel_threshold!r}")
        if isinstance(self.min_area_px, bool) or not isinstance(self.min_area_px, int) or self.min_area_px < 1:
            raise ConfigError(f"min_area_px must be an integer >= 1, got {self.min_area_px!r}")
        if self.discovery is not None and not isinstance(self.discovery, DiscoverySettings):
            raise ConfigError(f"discovery must be DiscoverySettings or None, got {type(self.discovery).__name__}")


@dataclass(frozen=True, eq=False)
class Regions:
    """The anomalous regions of one frame, at model size, and the defects reported for them.

    Attributes:
        mask: H' x W' bool, the anomalous pixels (every region).
        labels: H' x W' int32 8-connected component labels of ``mask`` (0: not anomalous).
        num_regions: how many regions describe the frame (MEBin's stable count ``δ̄``; the number of
            components without MEBin): the classifier merges this many crops (+ its extra ones).
        defects: components of at least ``min_area_px`` frame pixels, in frame pixels, by
            decreasing score (unclassified).
        defect_labels: the component label of each defect (same order).
        threshold: the effective threshold in map units, for reports: ``max(floor, τ)`` (τ: MEBin's
            stable threshold, or the lowest value of its ``fallback_fraction`` mask); ``inf``: no region.
        method: ``"peak"``, ``"mebin"`` or ``"threshold"``.
        binarized: MEBin's result on the map (None without MEBin).
    """

    mask: np.ndarray
    labels: np.ndarray
    num_regions: int
    defects: tuple[Defect, ...]
    defect_labels: tuple[int, ...]
    threshold: float
    method: str
    binarized: MEBinResult | None = None


class MapRegionFinder:
    """The default region stage (see the module docstring for the algorithm and its reasons)."""

    def __init__(self, settings: RegionSettings) -> None:
        """Keep the settings (:class:`RegionSettings`)."""
        if not isinstance(settings, RegionSettings):
            raise ConfigError(f"settings must be RegionSettings, got {type(settings).__name__}")
        self.settings = settings

    def find(self, model_map: np.ndarray, frame_size: tuple[int, int],
             object_mask: np.ndarray | None = None) -> Regions:
        """The regions of one map.

        Args:
            model_map: H' x W' float32 anomaly map at the model's input size.
            frame_size: (H, W) of the frame, for the defects' boxes and areas.
            object_mask: H' x W' bool object mask at model size; None or all False (no object
                found): the whole map is searched.

        Returns:
            The :class:`Regions`.

        Raises:
            InputError: a map that is not 2-D float, or a mask of another shape.
        """
        cv2 = require("cv2")
        amap = np.asarray(model_map)
        if amap.ndim != 2 or amap.dtype.kind != "f":
            raise InputError(f"model_map must be a 2-D float array, got {amap.dtype} {amap.shape}")
        s = self.settings
        binarized, count, tau = None, None, -math.inf
        binary = amap > s.pixel_threshold
        method = "threshold"
        if s.discovery is not None and s.discovery.region_method == "peak":
            binary, method = peak_mask(amap, s.discovery.peak_fraction, s.pixel_threshold), "peak"
            tau = float(amap[binary].min()) if binary.any() else math.inf
        elif s.discovery is not None:
            found = discovery_anomaly_mask(amap, s.discovery)
            assert found.binarized is not None
            binarized, count, method = found.binarized, found.num_regions, "mebin"
            tau = found.binarized.threshold
            if math.isinf(tau) and found.mask.any():  # the fallback_fraction mask: its lowest value
                tau = float(amap[found.mask].min())
            binary &= found.mask
        if object_mask is not None:
            if object_mask.shape != amap.shape:
                raise InputError(f"object mask {object_mask.shape} does not match the map {amap.shape}")
            if object_mask.any():
                binary &= object_mask
        n, labels, stats, _ = cv2.connectedComponentsWithStats(binary.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
        defects, defect_labels = self._defects(amap, labels, stats, n, frame_size)
        threshold = (float(tau) if method == "peak" else max(float(s.pixel_threshold), float(tau))) if n > 1 else math.inf
        return Regions(mask=binary, labels=labels, num_regions=n - 1 if count is None else count, defects=defects,
                       defect_labels=defect_labels, threshold=threshold, method=method, binarized=binarized)

    def _defects(self, amap: np.ndarray, labels: np.ndarray, stats: np.ndarray, n: int,
                 frame_size: tuple[int, int]) -> tuple[tuple[Defect, ...], tuple[int, ...]]:
        cv2 = require("cv2")
        full_h, full_w = (int(v) for v in frame_size)
        sy, sx = full_h / amap.shape[0], full_w / amap.shape[1]
        found: list[tuple[Defect, int]] = []
        for label in range(1, n):
            area = round(int(stats[label, cv2.CC_STAT_AREA]) * sx * sy)
            if area < self.settings.min_area_px:
                continue
            x, y = int(stats[label, cv2.CC_STAT_LEFT]), int(stats[label, cv2.CC_STAT_TOP])
            w, h = int(stats[label, cv2.CC_STAT_WIDTH]), int(stats[label, cv2.CC_STAT_HEIGHT])
            window = labels[y:y + h, x:x + w] == label
            score = float(amap[y:y + h, x:x + w][window].max())
            box = (int(x * sx), int(y * sy), min(full_w, math.ceil((x + w) * sx)), min(full_h, math.ceil((y + h) * sy)))
            found.append((Defect(class_id=None, class_name=None, is_novel=False, score=score, bbox_xyxy=box,
                                 area_px=area), label))
        found.sort(key=lambda d: -d[0].score)
        return tuple(d for d, _ in found), tuple(label for _, label in found)
