"""End-to-end ``Inspector.inspect`` latency per backend and per stage (pytest-benchmark; medians, no time assertions).

    PROTOINSPECT_BUNDLE=B python -m pytest benchmarks/bench_inspector.py --benchmark-only

One 256x256 BGR frame (seeded random), for backend onnxruntime and backend torch in the same run, with
$PROTOINSPECT_THREADS threads (default 2, the target machine):

* fast path: ``InspectorConfig(image_threshold=inf)`` forces every frame OK, so region extraction is
  skipped (the cost of a good part on the line, whatever the bundle's calibrated threshold);
* anomalous path: ``image_threshold=-inf`` forces ANOMALOUS, so regions run on every frame.

Per-stage p50/p95 (ms) of ``result.timings_ms`` over the measured benchmark rounds (calibration and
warm-up calls excluded) go into ``benchmark.extra_info``; the last test prints a table of them and the
onnxruntime/torch ratio of the total p50, from the numbers gathered in this session.

Skipped when $PROTOINSPECT_BUNDLE is unset; the onnxruntime cases need ``detector.onnx`` in the bundle.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from bench_settings import bench_threads

from protoinspect.sdk import Inspector, InspectorConfig

FRAME_SHAPE = (256, 256, 3)
STAGES = ("mask", "detect", "regions", "classify", "total")
BACKENDS = ("onnxruntime", "torch")
PATHS = {"fast": math.inf, "anomalous": -math.inf}  # image_threshold forcing OK / ANOMALOUS

# (path, backend) -> stage -> {"p50": ms, "p95": ms}; filled by the benchmarks, read by the report.
STAGE_STATS: dict[tuple[str, str], dict[str, dict[str, float]]] = {}




@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """One seeded random 256x256 BGR uint8 frame."""
    return np.random.default_rng(0).integers(0, 256, FRAME_SHAPE, dtype=np.uint8)


def _open(bundle_path: Path, backend: str, image_threshold: float) -> Inspector:
    if backend == "onnxruntime" and not (bundle_path / "detector.onnx").is_file():
        pytest.skip(f"{bundle_path} has no detector.onnx: run protoinspect export")
    config = InspectorConfig(image_threshold=image_threshold, threads=bench_threads())
    return Inspector.from_bundle(bundle_path, backend=backend, config=config)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend under test."""
    return str(request.param)


def _percentiles(timings: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Stage -> {"p50", "p95"} in ms."""
    out: dict[str, dict[str, float]] = {}
    for stage in STAGES:
        values = np.array([t.get(stage, 0.0) for t in timings], dtype=np.float64)
        p50, p95 = np.percentile(values, [50, 95])
        out[stage] = {"p50": float(p50), "p95": float(p95)}
    return out


def _measured(benchmark: object, calls: list[dict[str, float]]) -> list[dict[str, float]]:
    """The calls of the measured rounds: the last rounds x iterations (calibration/warm-up come first)."""
    meta = getattr(benchmark, "stats", None)
    if meta is None:  # --benchmark-disable: the function ran once
        return calls
    n = len(meta.stats.data) * int(meta.iterations)
    return calls[-n:] if 0 < n <= len(calls) else calls


def _run(benchmark: object, bundle_path: Path, frame: np.ndarray, backend: str, path: str) -> None:
    """Benchmark ``inspect(frame)`` and record per-stage p50/p95 in extra_info and STAGE_STATS."""
    calls: list[dict[str, float]] = []
    with _open(bundle_path, backend, PATHS[path]) as insp:
        expected = "OK" if path == "fast" else "ANOMALOUS"
        for _ in range(5):  # first-call allocations
            insp.inspect(frame)

        def once() -> str:
            result = insp.inspect(frame)
            calls.append(dict(result.timings_ms))
            return result.verdict.value

        verdict = benchmark(once)  # type: ignore[operator]
        assert verdict == expected  # the path really taken (not a timing assertion)
        stats = _percentiles(_measured(benchmark, calls))
        STAGE_STATS[(path, backend)] = stats
        extra = benchmark.extra_info  # type: ignore[attr-defined]
        extra.update({"backend": insp.backend.name, "path": path, "threads": bench_threads(),
                      "frame": list(FRAME_SHAPE), "input": list(insp.detector.spec.image_size)})
        for stage, p in stats.items():
            extra[f"{stage}_p50_ms"] = round(p["p50"], 4)
            extra[f"{stage}_p95_ms"] = round(p["p95"], 4)


def test_inspect_fast_path(benchmark: object, bundle_path: Path, frame: np.ndarray, backend: str) -> None:
    """A good frame (image_threshold=inf forces OK): mask + detect only, region extraction skipped."""
    _run(benchmark, bundle_path, frame, backend, "fast")


def test_inspect_anomalous_path(benchmark: object, bundle_path: Path, frame: np.ndarray, backend: str) -> None:
    """A bad frame (image_threshold=-inf forces ANOMALOUS): mask + detect + region extraction."""
    _run(benchmark, bundle_path, frame, backend, "anomalous")


def format_report(stats: dict[tuple[str, str], dict[str, dict[str, float]]]) -> str:
    """A text table: p50/p95 per stage per (path, backend), then the onnxruntime/torch total-p50 ratio per path."""
    head = f"{'path':<10} {'backend':<12}" + "".join(f" {s + ' p50/p95 ms':>22}" for s in STAGES)
    lines = ["", f"Inspector.inspect on a {FRAME_SHAPE[0]}x{FRAME_SHAPE[1]} BGR frame, threads={bench_threads()}",
             head, "-" * len(head)]
    for path in PATHS:
        for backend in BACKENDS:
            s = stats.get((path, backend))
            if s is None:
                lines.append(f"{path:<10} {backend:<12} (benchmark did not run)")
                continue
            cells = "".join(f" {s[st]['p50']:>10.3f} / {s[st]['p95']:>9.3f}" for st in STAGES)
            lines.append(f"{path:<10} {backend:<12}{cells}")
    lines.append("")
    for path in PATHS:
        ort, pt = stats.get((path, "onnxruntime")), stats.get((path, "torch"))
        if ort is None or pt is None:
            missing = " and ".join(b for b, s in (("onnxruntime", ort), ("torch", pt)) if s is None)
            lines.append(f"{path}: no onnxruntime/torch ratio ({missing} benchmark did not run)")
        else:
            ratio = ort["total"]["p50"] / pt["total"]["p50"] if pt["total"]["p50"] > 0 else math.nan
            lines.append(f"{path}: total p50 onnxruntime/torch = {ratio:.3f} "
                         f"({ort['total']['p50']:.3f} ms / {pt['total']['p50']:.3f} ms)")
    return "\n".join(lines)


def test_zz_report(benchmark: object, bundle_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Print the per-stage table and the ratio (runs last; uses the benchmark fixture so --benchmark-only keeps it).

    The fixture times only the table formatting (one round), which keeps pytest-benchmark from warning
    about an unused fixture; its number means nothing.
    """
    report: Callable[[], str] = lambda: format_report(dict(STAGE_STATS))
    text = benchmark.pedantic(report, rounds=1, iterations=1)  # type: ignore[attr-defined]
    with capsys.disabled():
        print(text)

