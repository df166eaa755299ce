"""MEBin latency on one 256x256 float32 anomaly map (pytest-benchmark; medians, no assertions on time).

    python -m pytest benchmarks/bench_mebin.py --benchmark-only -p no:cacheprovider --benchmark-columns=median,iqr,ops

Each round binarises a different map from a fixed set of 50 smooth maps (1-5 Gaussian blobs of random size
and height on low smooth noise, the shape of a detector's map). Range "calibrated": :func:`mebin_range` on that
set; "wide": s_min lowered to the smallest map value, so the whole background is above s_min (slower).
Target: median <= 5 ms on the 2-core CPU. OpenCV threads: $PROTOINSPECT_THREADS (default 2, the target machine).
"""

from __future__ import annotations

import itertools
import os

import cv2
import numpy as np
import pytest

from protoinspect.sdk.stages.mebin import mebin, mebin_range


def _maps(count: int = 50, size: int = 256) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    maps = []
    for _ in range(count):
        m = 0.2 * cv2.GaussianBlur(rng.random((size, size), dtype=np.float32), (0, 0), 4)
        for _ in range(int(rng.integers(1, 6))):
            cy, cx = rng.uniform(16, size - 16, 2)
            s = rng.uniform(4, 20)
            m += rng.uniform(0.4, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        maps.append(m.astype(np.float32))
    return maps


@pytest.mark.parametrize(("layout", "search_range"),
                         [("contiguous", "calibrated"), ("flipped_view", "calibrated"), ("contiguous", "wide")])
def test_mebin_256(benchmark, layout: str, search_range: str) -> None:
    cv2.setNumThreads(int(os.environ.get("PROTOINSPECT_THREADS", "2")))
    maps = _maps()
    if layout == "flipped_view":
        maps = [m[::-1] for m in maps]
    s_min, s_max = mebin_range(maps)
    if search_range == "wide":
        s_min = min(float(m.min()) for m in maps)
    cycle = itertools.cycle(maps)
    for m in maps[:5]:
        mebin(m, s_min, s_max)  # warm-up
    result = benchmark.pedantic(mebin, setup=lambda: ((next(cycle), s_min, s_max), {}), rounds=len(maps),
                                iterations=1)
    benchmark.extra_info["shape"] = list(maps[0].shape)
    benchmark.extra_info["threads"] = cv2.getNumThreads()
    assert result.mask.shape == maps[0].shape
