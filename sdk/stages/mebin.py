"""MEBin: main-element binarisation of an anomaly map by its most stable threshold (methods.md §3(b).1).

The map is normalised into ``[0, 255]`` with a range calibrated on a set of maps (:func:`mebin_range`:
the min and max of the per-image maxima), swept from high to low thresholds ``t_k = 255 - k r``
(``k = 0 .. ceil(255 / r) - 1``, i.e. ``range(255, 0, -r)``), and every binarisation is eroded and its
8-connected components counted. The longest run of equal non-zero counts (at least ``min_interval_len``
thresholds long) gives the number of regions and, at its lowest threshold, the final mask.

Fast path (same output as eroding every binary mask, tested): erosion is a min-filter, so it commutes with
thresholding and with any non-decreasing map of the values; Â is quantised ONCE into levels
``Q = #{k : t_k < Â}`` (uint8), eroded once, and eroded ``1[Â > t_k]`` is ``erode(Q) >= n - k``. A level set
that did not change reuses the previous count; components are counted inside each level set's bounding box.

Mapping to the raw map: the spec thresholds the raw uint8 map with ``floor(t (s_max - s_min) / 255 + s_min)``;
for integer maps ``A > floor(x)`` equals ``A > x``, so thresholding ``Â > t_{k*}`` is the same rule. Here the
final mask is ``erode(1[Â > t_{k*}])`` and :attr:`MEBinResult.threshold` reports
``τ = s_min + t_{k*} (s_max - s_min) / 255`` (no floor: our maps are float), i.e. ``A > τ`` up to float
rounding at values exactly on ``τ``. Â is clipped at 255, so values above the calibrated ``s_max`` never
exceed ``t_0 = 255`` -- exactly the code's behaviour on its own calibration set, where ``Â <= 255``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from protoinspect.sdk import config_codec
from protoinspect.sdk._imports import require
from protoinspect.sdk.errors import ConfigError, InputError

__all__ = ["MEBinResult", "MEBinSettings", "mebin", "mebin_range", "normalize_map"]


@dataclass(frozen=True)
class MEBinSettings:
    """MEBin parameters (stored in the bundle manifest).

    Attributes:
        sample_rate: threshold step ``r`` on the 0..255 scale (4 -> 64 thresholds 255, 251, ..., 3).
        min_interval_len: shortest run of equal counts that counts as stable (``L_min``).
        erode_kernel: side of the square erosion kernel; 0 disables erosion.
        erode_iterations: erosion iterations (ignored when ``erode_kernel`` is 0).
    """

    sample_rate: int = 4
    min_interval_len: int = 4
    erode_kernel: int = 6
    erode_iterations: int = 1

    def __post_init__(self) -> None:
        """Validate every field; raise :class:`ConfigError` naming the bad one."""
        limits = {"sample_rate": (1, 255), "min_interval_len": (1, 256), "erode_kernel": (0, 255),
                  "erode_iterations": (1, 64)}
        for name, (lo, hi) in limits.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
                msg = f"MEBinSettings.{name} must be an int in [{lo}, {hi}], got {value!r}"
                raise ConfigError(msg)

    @property
    def num_thresholds(self) -> int:
        """Number of thresholds ``n = len(range(255, 0, -sample_rate))``."""
        return -(-255 // int(self.sample_rate))

    def to_dict(self) -> dict[str, int]:
        """JSON-ready dict of the settings (:func:`protoinspect.sdk.config_codec.to_dict`)."""
        return config_codec.to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MEBinSettings:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError` (:mod:`protoinspect.sdk.config_codec`)."""
        return config_codec.from_dict(cls, data)


@dataclass(frozen=True)
class MEBinResult:
    """Outcome of :func:`mebin` on one map.

    Attributes:
        mask: H x W bool, the eroded binarisation at the selected threshold (all False when none).
        num_regions: estimated number of anomaly regions ``δ̄`` (0 when no stable interval exists).
        threshold: ``τ`` in the map's own units; ``+inf`` when no stable interval exists.
        normalized: H x W float32 ``Â`` in [0, 255].
        counts: component count at every threshold ``t_k`` (high to low), for inspection and plots.
    """

    mask: np.ndarray
    num_regions: int
    threshold: float
    normalized: np.ndarray
    counts: tuple[int, ...] = ()


def _check_map(anomaly_map: Any, name: str = "anomaly_map") -> np.ndarray:
    """Return ``anomaly_map`` as a 2-D float32/float64 ndarray of finite values, else :class:`InputError`."""
    arr = np.asarray(anomaly_map)
    if arr.ndim != 2 or arr.dtype not in (np.float32, np.float64):
        msg = f"{name} must be a 2-D float32/float64 array, got shape {arr.shape} dtype {arr.dtype}"
        raise InputError(msg)
    if arr.size == 0:
        msg = f"{name} is empty (shape {arr.shape})"
        raise InputError(msg)
    if not (math.isfinite(float(arr.min())) and math.isfinite(float(arr.max()))):
        msg = f"{name} contains NaN or infinite values"
        raise InputError(msg)
    return arr


def mebin_range(maps: Iterable[np.ndarray]) -> tuple[float, float]:
    """Search range ``(s_min, s_max)`` = (min, max) of the per-image maxima of ``maps`` (the code's rule).

    Raises:
        InputError: no map, an empty map, or a NaN/inf value.
    """
    maxima = []
    for i, m in enumerate(maps):
        arr = np.asarray(m)
        if arr.size == 0 or arr.dtype.kind not in "biuf" or not math.isfinite(float(arr.min()) + float(arr.max())):
            msg = f"map {i} is empty, not numeric or not finite (shape {arr.shape}, dtype {arr.dtype})"
            raise InputError(msg)
        maxima.append(float(arr.max()))
    if not maxima:
        msg = "mebin_range needs at least one map"
        raise InputError(msg)
    return min(maxima), max(maxima)


def normalize_map(anomaly_map: np.ndarray, s_min: float, s_max: float) -> np.ndarray:
    """``Â = clip(255 (A - s_min) / (s_max - s_min), 0, 255)`` as float32 (values below ``s_min`` -> 0).

    ``s_max == s_min`` (no range: constant maxima) gives an all-zero map.
    """
    arr = _check_map(anomaly_map)
    s_min, s_max = _check_range(s_min, s_max)
    if s_max == s_min:
        return np.zeros(arr.shape, np.float32)
    scale = 255.0 / (s_max - s_min)
    norm = np.asarray((arr - arr.dtype.type(s_min)) * arr.dtype.type(scale), dtype=np.float32)
    return np.clip(norm, 0.0, 255.0, out=norm)


def _check_range(s_min: float, s_max: float) -> tuple[float, float]:
    """Validate a search range: finite numbers with ``s_max >= s_min``."""
    try:
        lo, hi = float(s_min), float(s_max)
    except (TypeError, ValueError) as exc:
        msg = f"s_min/s_max must be numbers, got {s_min!r}, {s_max!r}"
        raise InputError(msg) from exc
    if not (math.isfinite(lo) and math.isfinite(hi)):
        msg = f"s_min/s_max must be finite, got {lo}, {hi}"
        raise InputError(msg)
    if hi < lo:
        msg = f"s_max ({hi}) < s_min ({lo}): swapped search range?"
        raise InputError(msg)
    return lo, hi


def _select_interval(counts: list[int], min_len: int) -> tuple[int, int]:
    """``(δ̄, k*)`` from the counts per threshold, exactly the reference code's rule; ``(0, -1)`` if none.

    Maximal runs of equal non-zero counts at least ``min_len`` long are stable. Per count its longest
    run; ``δ̄`` = the count with the longest one (ties: the count whose first stable run comes first);
    ``k*`` = end of that count's longest run (ties between its runs: the later run, as the code's stable
    sort then ``[-1]`` picks).
    """
    runs: dict[int, list[tuple[int, int]]] = {}
    start = 0
    for k in range(1, len(counts) + 1):
        if k == len(counts) or counts[k] != counts[start]:
            if counts[start] != 0 and k - start >= min_len:
                runs.setdefault(counts[start], []).append((start, k - 1))
            start = k
    if not runs:
        return 0, -1
    best = {c: max(b - a for a, b in rs) for c, rs in runs.items()}
    delta = max(best, key=best.__getitem__)  # first key on ties (dict order = first stable run)
    k_star = [b for a, b in runs[delta] if b - a == best[delta]][-1]
    return delta, k_star


def _count_levels(level: np.ndarray, n: int) -> list[int]:
    """8-connected component counts of ``level >= n - k`` for ``k = 0..n-1`` (uint8 ``level`` in 0..n).

    Levels with no pixel reuse the previous count (same set); each count is taken inside the bounding
    box of its set only (boxes from the row/column maxima: the sets are nested).
    """
    cv2 = require("cv2")
    occupancy = np.bincount(level.ravel(), minlength=n + 1).tolist()
    levels = np.arange(n, 0, -1)[:, None]  # level of k = 0, 1, ...
    bounds = []
    for line in (level.max(axis=1), level.max(axis=0)):
        above = line[None, :] >= levels  # n x len(line): rows (cols) touched by each set
        bounds.append((above.argmax(axis=1).tolist(), (line.size - above[:, ::-1].argmax(axis=1)).tolist()))
    (r0, r1), (c0, c1) = bounds
    counts: list[int] = []
    count = 0
    for k in range(n):
        lvl = n - k
        if occupancy[lvl]:  # the set grew (else it is the previous one, possibly empty)
            h, w = r1[k] - r0[k], c1[k] - c0[k]
            binary = cv2.threshold(level[r0[k]:r1[k], c0[k]:c1[k]], lvl - 1, 1, cv2.THRESH_BINARY)[1]
            ltype = cv2.CV_16U if ((h + 1) // 2) * ((w + 1) // 2) < 65535 else cv2.CV_32S
            count = int(cv2.connectedComponents(binary, connectivity=8, ltype=ltype)[0]) - 1
        counts.append(count)
    return counts


def mebin(anomaly_map: np.ndarray, s_min: float, s_max: float,
          settings: MEBinSettings = MEBinSettings()) -> MEBinResult:
    """Binarise one anomaly map with MEBin (methods.md §3(b).1); see the module docstring.

    Args:
        anomaly_map: H x W float32/float64 map (any strides), finite.
        s_min, s_max: search range from :func:`mebin_range` on the calibration maps. ``s_max == s_min``
            (constant maxima) is degenerate: empty mask, 0 regions, ``Â`` all zero.
        settings: sample rate, minimum stable length and erosion.

    Returns:
        :class:`MEBinResult` (mask, number of regions, threshold in map units, ``Â``, counts).

    Raises:
        InputError: a map that is not 2-D float, is empty or non-finite; a non-finite or swapped range.
    """
    cv2 = require("cv2")
    if not isinstance(settings, MEBinSettings):
        msg = f"settings must be MEBinSettings, got {type(settings).__name__}"
        raise ConfigError(msg)
    norm = normalize_map(anomaly_map, s_min, s_max)
    lo, hi = _check_range(s_min, s_max)
    n = settings.num_thresholds
    r = int(settings.sample_rate)
    t_low = 255 - (n - 1) * r  # lowest threshold; thresholds ascending: t_low + j r, j = 0..n-1
    # level Q = #{k : t_k < Â} = clip(ceil((Â - t_low) / r), 0, n); exact in float64 (Â == t_k is not above)
    q = np.ceil((norm.astype(np.float64) - t_low) / r)
    level = np.clip(q, 0, n, out=q).astype(np.uint8)
    if settings.erode_kernel > 0:
        kernel = np.ones((settings.erode_kernel, settings.erode_kernel), np.uint8)
        level = cv2.erode(level, kernel, iterations=int(settings.erode_iterations))
    counts = _count_levels(level, n)
    delta, k_star = _select_interval(counts, int(settings.min_interval_len))
    if k_star < 0 or hi == lo:  # no stable interval (always so for a degenerate range: Â == 0)
        return MEBinResult(np.zeros(norm.shape, bool), 0, math.inf, norm, tuple(counts))
    t_star = 255 - k_star * r
    tau = lo + t_star * (hi - lo) / 255.0
    return MEBinResult(level >= n - k_star, int(delta), float(tau), norm, tuple(counts))
