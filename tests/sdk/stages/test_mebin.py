"""MEBin (sdk/stages/mebin.py): known region counts, equality with a per-threshold reference, strides, errors.

Random inputs are drawn fresh every run; the seed is in every assertion message to replay a failure.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from protoinspect.sdk.errors import ConfigError, InputError
from protoinspect.sdk.stages.mebin import MEBinSettings, _select_interval, mebin, mebin_range, normalize_map


def _seeded() -> tuple[int, np.random.Generator]:
    seed = int(np.random.SeedSequence().entropy % 2**63)
    return seed, np.random.default_rng(seed)


def _blob_map(rng: np.random.Generator, num_blobs: int, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Well separated Gaussian blobs (peaks 0.85..1) on noise below 0.04; returns (map, centres as (y, x))."""
    sigma = rng.uniform(6.0, 10.0, num_blobs)
    centres: list[np.ndarray] = []
    while len(centres) < num_blobs:
        c = rng.uniform(25, size - 25, 2)
        if all(np.hypot(*(c - o)) >= 85 for o in centres):
            centres.append(c)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    out = rng.uniform(0.0, 0.04, (size, size))
    for (cy, cx), s, a in zip(centres, sigma, rng.uniform(0.85, 1.0, num_blobs)):
        out += a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s**2))
    return out.astype(np.float32), np.round(np.array(centres)).astype(int)


def _smooth_map(rng: np.random.Generator) -> np.ndarray:
    h, w = rng.integers(12, 90, 2)
    noise = rng.standard_normal((h, w)).astype(np.float32)
    sigma = float(rng.choice([0.0, 1.0, 2.5, 5.0]))
    return cv2.GaussianBlur(noise, (0, 0), sigma) if sigma else noise


def _reference(norm: np.ndarray, s: MEBinSettings) -> tuple[list[int], int, int]:
    """The spec literally: erode every binary mask, count, then the code's stable-interval loop."""
    kernel = np.ones((s.erode_kernel, s.erode_kernel), np.uint8)

    def binarise(t: int) -> np.ndarray:
        b = (norm > t).astype(np.uint8)
        return cv2.erode(b, kernel, iterations=s.erode_iterations) if s.erode_kernel else b

    seq = [cv2.connectedComponents(binarise(t), connectivity=8)[0] - 1 for t in range(255, 0, -s.sample_rate)]
    intervals: dict[int, list[tuple[int, int]]] = {}
    i = 0
    while i < len(seq):
        start = end = i
        if seq[start] != 0:
            while end < len(seq) - 1 and seq[end] == seq[end + 1]:
                end += 1
                i += 1
            if end - start + 1 >= s.min_interval_len:
                intervals.setdefault(seq[start], []).append((start, end))
        i += 1
    if not intervals:
        return seq, 0, -1
    longest = {c: max(b - a for a, b in v) for c, v in intervals.items()}
    delta = max(longest, key=longest.get)
    k_star = max(reversed(intervals[delta]), key=lambda x: x[1] - x[0])[1]  # == code's sorted(...)[-1]: last on ties
    return seq, delta, k_star


@pytest.mark.parametrize("num_blobs", [1, 2, 3, 4, 5])
def test_known_number_of_blobs(num_blobs: int) -> None:
    seed, rng = _seeded()
    amap, centres = _blob_map(rng, num_blobs)
    result = mebin(amap, 0.05, 1.0)
    assert result.num_regions == num_blobs, f"seed={seed} counts={result.counts}"
    assert result.mask.dtype == bool and result.mask.shape == amap.shape
    assert result.mask[centres[:, 0], centres[:, 1]].all(), f"seed={seed}"
    assert cv2.connectedComponents(result.mask.astype(np.uint8), connectivity=8)[0] - 1 == num_blobs, f"seed={seed}"
    assert 0.05 < result.threshold < 1.0 and len(result.counts) == 64
    assert result.normalized.dtype == np.float32 and 0 <= result.normalized.min() <= result.normalized.max() <= 255


def test_empty_flat_and_degenerate_maps() -> None:
    for amap, lo, hi in [(np.zeros((32, 48), np.float32), 0.0, 1.0),  # flat at s_min
                         (np.full((32, 48), 0.3), 0.5, 1.0),  # everything below s_min
                         (np.full((32, 48), 0.7, np.float32), 0.7, 0.7)]:  # degenerate range
        result = mebin(amap, lo, hi)
        assert result.num_regions == 0 and not result.mask.any() and result.threshold == math.inf
        assert not result.normalized.any() and result.counts == (0,) * 64


def test_no_stable_interval_gives_nothing() -> None:
    amap = np.zeros((64, 64), np.float32)
    amap[20:40, 20:40] = 1.0  # a plateau: present at every threshold, count 1 everywhere
    assert mebin(amap, 0.0, 1.0).num_regions == 1
    short = MEBinSettings(min_interval_len=65)  # longer than the 64 thresholds
    result = mebin(amap, 0.0, 1.0, short)
    assert result.num_regions == 0 and not result.mask.any() and result.threshold == math.inf


@pytest.mark.parametrize("trial", range(4))
def test_fast_path_equals_per_threshold_reference(trial: int) -> None:
    seed, rng = _seeded()
    for _ in range(12):
        settings = MEBinSettings(sample_rate=int(rng.choice([1, 2, 3, 4, 5, 7, 16])),
                                 min_interval_len=int(rng.integers(1, 7)),
                                 erode_kernel=int(rng.choice([0, 1, 3, 6])), erode_iterations=int(rng.integers(1, 3)))
        if rng.random() < 0.3:  # integer-valued map with s_min=0, s_max=255: Â == A, ties on every threshold
            amap = np.round(cv2.GaussianBlur(rng.uniform(0, 255, (40, 56)), (0, 0), 2.0) * 2 % 256)
            lo, hi = 0.0, 255.0
        else:
            amap = _smooth_map(rng).astype(rng.choice([np.float32, np.float64]))
            lo, hi = sorted(np.quantile(amap, rng.uniform(0.3, 1.0, 2)).tolist())
        result = mebin(amap, lo, hi, settings)
        info = f"seed={seed} settings={settings} range=({lo}, {hi})"
        expected_norm = np.clip(np.where(amap < lo, 0, (amap - lo) / max(hi - lo, 1e-300) * 255), 0, 255)
        np.testing.assert_allclose(result.normalized, expected_norm, rtol=1e-5, atol=1e-4, err_msg=info)
        seq, delta, k_star = _reference(result.normalized, settings)
        assert list(result.counts) == seq, info
        assert result.num_regions == delta, info
        if k_star < 0:
            assert result.threshold == math.inf and not result.mask.any(), info
            continue
        t_star = 255 - k_star * settings.sample_rate
        assert result.threshold == pytest.approx(lo + t_star * (hi - lo) / 255, rel=1e-12), info
        kernel = np.ones((settings.erode_kernel,) * 2, np.uint8)
        ref_mask = (result.normalized > t_star).astype(np.uint8)
        if settings.erode_kernel:
            ref_mask = cv2.erode(ref_mask, kernel, iterations=settings.erode_iterations)
        np.testing.assert_array_equal(result.mask, ref_mask.astype(bool), err_msg=info)
        if (lo, hi) == (0.0, 255.0):  # the raw-map rule of the spec, erode(1[A > tau]), holds exactly here
            raw = (amap > result.threshold).astype(np.uint8)
            raw = cv2.erode(raw, kernel, iterations=settings.erode_iterations) if settings.erode_kernel else raw
            np.testing.assert_array_equal(result.mask, raw.astype(bool), err_msg=info)


def test_select_interval_tie_rules() -> None:
    assert _select_interval([0, 0, 2, 2, 2, 2, 3, 3, 3, 3, 3, 1], 4) == (3, 10)
    assert _select_interval([2, 2, 2, 2, 3, 3, 3, 3], 4) == (2, 3)  # equal lengths: first count
    # count 1 is stable first (len 4), count 2 reaches 5 before 1 does: the code still picks 1 (dict order)
    assert _select_interval([1, 1, 1, 1, 0, 2, 2, 2, 2, 2, 0, 1, 1, 1, 1, 1], 4) == (1, 15)
    assert _select_interval([1, 1, 1, 1, 0, 1, 1, 1, 1], 4) == (1, 8)  # same count, equal runs: the later one
    assert _select_interval([0] * 10, 1) == (0, -1)
    assert _select_interval([1, 2, 1, 2], 2) == (0, -1)


def test_strided_and_flipped_views_match_contiguous() -> None:
    seed, rng = _seeded()
    base, _ = _blob_map(rng, 3, size=200)
    big = np.zeros((400, 400), np.float64)
    big[::2, ::2] = base
    views = [big[::2, ::2], base[::-1, :], base[:, ::-1], base.T, np.asfortranarray(base)]
    for view in views:
        expected = mebin(np.ascontiguousarray(view), 0.05, 1.0)
        got = mebin(view, 0.05, 1.0)
        assert got.num_regions == expected.num_regions == 3, f"seed={seed}"
        np.testing.assert_array_equal(got.mask, expected.mask)
        assert got.threshold == pytest.approx(expected.threshold)


def test_mebin_range_is_min_and_max_of_the_maxima() -> None:
    maps = [np.array([[0.1, 0.5]]), np.array([[0.9, -3.0]]), np.array([[0.2, 0.3]])]
    assert mebin_range(maps) == (0.3, 0.9)
    assert mebin_range(np.stack([np.full((4, 4), 2.0, np.float32)])) == (2.0, 2.0)
    for bad in ([], [np.zeros((0, 3))], [np.array([[np.nan, 1.0]])], [np.array([[np.inf]])]):
        with pytest.raises(InputError):
            mebin_range(bad)


@pytest.mark.parametrize("amap", [np.zeros((4, 4, 1), np.float32), np.zeros((4, 4), np.uint8), np.zeros((0, 4)),
                                  np.array([[0.0, np.nan]]), np.array([[0.0, -np.inf]])])
def test_bad_maps_raise_input_error(amap) -> None:
    with pytest.raises(InputError):
        mebin(amap, 0.0, 1.0)


def test_bad_ranges_and_settings() -> None:
    amap = np.zeros((8, 8), np.float32)
    for lo, hi in [(0.0, float("nan")), (float("-inf"), 1.0), (1.0, 0.5), ("a", 1.0)]:
        with pytest.raises(InputError):
            mebin(amap, lo, hi)
    with pytest.raises(ConfigError):
        mebin(amap, 0.0, 1.0, {"sample_rate": 4})  # type: ignore[arg-type]
    with pytest.raises(InputError):
        normalize_map(amap, 1.0, 0.0)


def test_settings_round_trip_and_validation() -> None:
    s = MEBinSettings(sample_rate=2, min_interval_len=5, erode_kernel=0, erode_iterations=3)
    assert MEBinSettings.from_dict(s.to_dict()) == s
    assert MEBinSettings().to_dict() == {"sample_rate": 4, "min_interval_len": 4, "erode_kernel": 6,
                                         "erode_iterations": 1}
    assert MEBinSettings().num_thresholds == 64 and MEBinSettings(sample_rate=5).num_thresholds == 51
    for bad in [{"sample_rate": 0}, {"sample_rate": 256}, {"sample_rate": True}, {"sample_rate": 2.5},
                {"min_interval_len": 0}, {"erode_kernel": -1}, {"erode_iterations": 0}]:
        with pytest.raises(ConfigError):
            MEBinSettings(**bad)
    with pytest.raises(ConfigError, match="unknown"):
        MEBinSettings.from_dict({"sample_rate": 4, "erode": True})
    with pytest.raises(ConfigError):
        MEBinSettings.from_dict([("sample_rate", 4)])  # type: ignore[arg-type]
