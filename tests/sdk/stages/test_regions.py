"""sdk/stages/regions.py: one region pass on the model-size map; boxes and areas in frame pixels; the pixel
threshold as a floor under MEBin; the object mask."""

from __future__ import annotations

import math

import numpy as np
import pytest

from protoinspect.sdk.errors import ConfigError, InputError
from protoinspect.sdk.stages.discovery_crops import DiscoverySettings, discovery_anomaly_mask
from protoinspect.sdk.stages.mebin import MEBinSettings
from protoinspect.sdk.stages.regions import MapRegionFinder, RegionSettings


def _map(*blobs: tuple[int, int, int, int, float], size: tuple[int, int] = (64, 64)) -> np.ndarray:
    """Float32 map with flat rectangles (x, y, w, h, value) on 0."""
    m = np.zeros(size, np.float32)
    for x, y, w, h, v in blobs:
        m[y:y + h, x:x + w] = v
    return m


def _finder(threshold: float = 0.5, min_area: int = 1, discovery: DiscoverySettings | None = None) -> MapRegionFinder:
    return MapRegionFinder(RegionSettings(pixel_threshold=threshold, min_area_px=min_area, discovery=discovery))


def test_boxes_and_areas_are_scaled_to_frame_pixels() -> None:
    amap = _map((10, 20, 8, 4, 1.0), (40, 40, 2, 2, 0.8))
    regions = _finder().find(amap, (640, 320))  # frame 10x taller, 5x wider than the model map
    assert regions.method == "threshold" and regions.num_regions == 2 and regions.threshold == 0.5
    (a, b) = regions.defects
    assert a.score == 1.0 and a.bbox_xyxy == (50, 200, 90, 240) and a.area_px == 32 * 50
    assert b.score == pytest.approx(0.8) and b.bbox_xyxy == (200, 400, 210, 420) and b.area_px == 4 * 50
    assert regions.mask.shape == (64, 64) and regions.mask.sum() == 36
    assert [int(regions.labels[21, 11]), int(regions.labels[41, 41])] == list(regions.defect_labels)


def test_min_area_counts_frame_pixels() -> None:
    amap = _map((10, 20, 2, 2, 1.0))  # 4 model pixels
    assert _finder(min_area=4).find(amap, (64, 64)).defects  # 4 frame pixels
    assert not _finder(min_area=5).find(amap, (64, 64)).defects
    assert _finder(min_area=16).find(amap, (128, 128)).defects  # 4 model pixels = 16 frame pixels
    small = _finder(min_area=5).find(amap, (64, 64))
    assert small.num_regions == 1 and small.mask.any()  # still a region (it shapes the classifier's crops)


def test_object_mask_restricts_and_empty_mask_searches_everything() -> None:
    amap = _map((0, 0, 64, 64, 1.0))
    obj = np.zeros((64, 64), bool)
    obj[8:24, 16:48] = True
    (d,) = _finder().find(amap, (64, 64), obj).defects
    assert d.bbox_xyxy == (16, 8, 48, 24)
    (everything,) = _finder().find(amap, (64, 64), np.zeros((64, 64), bool)).defects
    assert everything.bbox_xyxy == (0, 0, 64, 64)
    with pytest.raises(InputError, match="does not match"):
        _finder().find(amap, (64, 64), np.ones((32, 32), bool))


def test_no_floor_infinite_floor_and_bad_input() -> None:
    amap = _map((5, 5, 3, 3, 1.0))
    (whole,) = _finder(-math.inf).find(amap, (64, 64)).defects
    assert whole.bbox_xyxy == (0, 0, 64, 64)
    nothing = _finder(math.inf).find(amap, (64, 64))
    assert nothing.defects == () and nothing.threshold == math.inf
    with pytest.raises(InputError, match="2-D float"):
        _finder().find(amap.astype(np.uint8), (64, 64))
    with pytest.raises(ConfigError):
        RegionSettings(pixel_threshold=float("nan"))
    with pytest.raises(ConfigError):
        RegionSettings(pixel_threshold=0.5, min_area_px=0)


def _discovery(**mebin: int) -> DiscoverySettings:
    return DiscoverySettings(s_min=0.0, s_max=1.0, mebin=MEBinSettings(**{"erode_kernel": 0, **mebin}))


def test_mebin_regions_are_the_classifier_mask_and_the_floor_cuts_them() -> None:
    amap = _map((4, 4, 12, 12, 0.9), (40, 40, 10, 10, 0.6))
    settings = _discovery()
    regions = _finder(-math.inf, discovery=settings).find(amap, (64, 64))
    found = discovery_anomaly_mask(amap, settings)  # what training's build_crops uses
    assert regions.method == "mebin" and regions.binarized is not None
    np.testing.assert_array_equal(regions.mask, found.mask)
    assert regions.num_regions == found.num_regions == 2 and len(regions.defects) == 2
    floored = _finder(0.7, discovery=settings).find(amap, (64, 64))  # the floor removes the 0.6 blob
    assert [d.bbox_xyxy for d in floored.defects] == [(4, 4, 16, 16)]
    assert floored.threshold == pytest.approx(max(0.7, found.binarized.threshold))
    assert floored.num_regions == 2  # MEBin's count still sets how many crops make the frame's class


def test_mebin_without_stable_region_finds_none() -> None:
    flat = np.full((64, 64), 0.5, np.float32)
    regions = _finder(-math.inf, discovery=_discovery(min_interval_len=256)).find(flat, (64, 64))
    assert regions.defects == () and regions.num_regions == 0 and regions.threshold == math.inf


def test_peak_regions_hold_the_maximum_and_everything_above_the_floor() -> None:
    # a strong blob (peak 2.0, its shoulder at 1.2 > 0.5 * 2.0), a weaker one above the floor 0.9, and a
    # bump below both the floor and half the peak: peak component + floor component, never the bump
    amap = _map((10, 10, 6, 6, 1.2), (40, 40, 4, 4, 0.95), (50, 5, 3, 3, 0.6))
    amap[12, 12] = 2.0
    disc = DiscoverySettings(region_method="peak", peak_fraction=0.5)
    regions = _finder(threshold=0.9, discovery=disc).find(amap, (64, 64))
    assert regions.method == "peak" and regions.binarized is None
    assert regions.num_regions == 2 and regions.mask.sum() == 36 + 16
    assert not regions.mask[5:8, 50:53].any()
    assert regions.threshold == pytest.approx(0.95)
    # a map that stays below the floor still gets its peak component (the classifier needs a region)
    weak = _map((20, 20, 5, 5, 0.4))
    weak[22, 22] = 0.6
    found = _finder(threshold=0.9, discovery=disc).find(weak, (64, 64))
    assert found.num_regions == 1 and found.mask.sum() == 25 and found.defects[0].score == pytest.approx(0.6)
    # no floor (-inf) means no floor component, not every pixel
    assert _finder(threshold=-math.inf, discovery=disc).find(weak, (64, 64)).mask.sum() == 25
    # an all-zero map has no region
    assert _finder(threshold=0.9, discovery=disc).find(np.zeros((8, 8), np.float32), (8, 8)).num_regions == 0


def test_peak_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="region_method"):
        DiscoverySettings(region_method="otsu")
    with pytest.raises(ConfigError, match="peak_fraction"):
        DiscoverySettings(peak_fraction=1.0)
    with pytest.raises(ConfigError, match="descriptor_mean"):
        DiscoverySettings(descriptor_mean=(0.0,) * 12, descriptor_scale=(1.0,) * 11)
    with pytest.raises(ConfigError, match="descriptor_mean"):
        DiscoverySettings(descriptor_mean=(0.0,) * 12, descriptor_scale=(0.0,) * 12)
    assert not DiscoverySettings().uses_descriptors
    assert DiscoverySettings(descriptor_mean=(0.0,) * 12, descriptor_scale=(1.0,) * 12).uses_descriptors
    # bundles written before the field load as MEBin
    assert DiscoverySettings.from_dict({"grid": 4, "s_min": 0.0, "s_max": 1.0}).region_method == "mebin"
