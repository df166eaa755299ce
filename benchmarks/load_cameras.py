"""Simulated cameras for benchmarks/load_triton.py: frame pool, in-process reference, per-camera streams and stats.

Each camera is a thread that submits its own numbered frames (``frame_id`` = its sequence number) into a
:class:`~protoinspect.sdk.live_stream.LiveInspector` over the inspect callable of the mode under test and reads
the result stream back. For every item the camera checks:

- sequence: items must come back as 0, 1, 2, ... (a gap is a lost frame, a step back a reordered one);
- identity: the result must equal the in-process reference of *the frame that was sent* (verdict, score and
  map within :data:`RTOL` / :data:`ATOL`, the tolerance of tests/export/test_triton_server.py). Consecutive
  frames of a camera are different pool frames, so a result delivered for the wrong frame (swapped answers)
  fails this check; when it equals the reference of a neighbouring frame it is counted as reordered.

Frames come from a pool of distinct frames (seeded random, or images of a folder) cycled per camera, so the
reference is computed once per pool frame.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: served vs in-process tolerance (tests/export/test_triton_server.py)
RTOL, ATOL = 1e-5, 1e-6
#: a camera's n-th frame is pool frame (camera * STRIDE + n) % pool: cameras start at different frames
STRIDE = 7
#: a mismatching result is compared with the references of frames up to this far away (reorder detection)
NEIGHBOURS = 4

InspectFn = Callable[[np.ndarray], Any]


def random_pool(count: int, shape: tuple[int, int, int], seed: int) -> list[np.ndarray]:
    """``count`` distinct seeded frames (uint8 noise around mid-gray with a bright patch that moves)."""
    rng = np.random.default_rng(seed)
    h, w = shape[:2]
    pool = []
    for i in range(count):
        frame = rng.integers(60, 190, size=shape, dtype=np.uint8)
        y, x = (i * 37) % max(1, h - h // 5), (i * 53) % max(1, w - w // 5)
        frame[y:y + h // 6, x:x + w // 6] = 250
        pool.append(frame)
    return pool


def folder_pool(folder: str | Path, count: int) -> list[np.ndarray]:
    """The first ``count`` images of ``folder`` (sorted; read as BGR uint8, sizes kept)."""
    from protoinspect.sdk.sources import list_images, read_frame

    paths = list_images(Path(folder))[:count]
    if not paths:
        raise ValueError(f"no images in {folder}")
    return [read_frame(p) for p in paths]


@dataclass(frozen=True)
class Reference:
    """In-process results of the pool frames: verdicts, scores and maps, indexed like the pool."""

    verdicts: list[str]
    scores: np.ndarray
    maps: list[np.ndarray]

    @classmethod
    def compute(cls, inspect: InspectFn, pool: Sequence[np.ndarray]) -> Reference:
        """Inspect every pool frame once."""
        results = [inspect(f) for f in pool]
        return cls([r.verdict.value for r in results], np.array([r.anomaly_score for r in results], np.float64),
                   [np.asarray(r.model_map, np.float32) for r in results])

    def matches(self, result: Any, index: int) -> bool:
        """True when ``result`` equals pool frame ``index``'s reference within the tolerance."""
        if result.verdict.value != self.verdicts[index]:
            return False
        ref_score = float(self.scores[index])
        if not abs(float(result.anomaly_score) - ref_score) <= ATOL + RTOL * abs(ref_score):
            return False
        got, ref = np.asarray(result.model_map), self.maps[index]
        return got.shape == ref.shape and bool(np.allclose(got, ref, rtol=RTOL, atol=ATOL))


def pool_index(camera: int, seq: int, pool_size: int) -> int:
    """Which pool frame camera ``camera`` sends as its frame ``seq``."""
    return (camera * STRIDE + seq) % pool_size


@dataclass
class CameraStats:
    """What one camera sent and got back. Seconds: ``latencies`` from the frame's acceptance into the camera's
    queue (``submit`` returned; time blocked in a full ``block`` queue is back-pressure, not latency) to its result;
    ``service`` the inspect call alone (for triton: the request round trip, server queue and batching included)."""

    camera: int
    sent: int = 0
    received: int = 0
    inspected: int = 0
    failed: int = 0
    dropped: int = 0
    lost: int = 0
    reordered: int = 0
    mismatched: int = 0
    latencies: list[float] = field(default_factory=list, repr=False)
    service: list[float] = field(default_factory=list, repr=False)
    done: list[float] = field(default_factory=list, repr=False)  # results' times after the common start
    last_result_at: float = 0.0
    t0: float = 0.0
    first_error: str | None = None

    def summary(self) -> dict[str, Any]:
        """The JSON record of this camera (counts only)."""
        return {k: getattr(self, k) for k in ("camera", "sent", "received", "inspected", "failed", "dropped", "lost",
                                               "reordered", "mismatched", "first_error")}


@dataclass
class StreamSettings:
    """How cameras send: time bound and/or frame bound, pacing, queue and drop policy, parity checks."""

    seconds: float | None = 10.0
    frames_per_camera: int | None = None
    fps: float = 0.0               # per camera; 0: as fast as the stream takes frames
    warmup: int = 2                # frames per camera before the clock starts (not counted)
    queue_size: int = 1
    inflight: int = 1              # LiveInspector workers per camera (requests in flight)
    drop_policy: str = "block"
    parity: bool = True


class Clock:
    """The common start: every camera waits at the barrier after warm-up, the last one starts the clock."""

    def __init__(self, cameras: int, seconds: float | None) -> None:
        self.t0 = 0.0
        self.seconds = seconds
        self.barrier = threading.Barrier(cameras, action=self._start)

    def _start(self) -> None:
        """Barrier action: the clock starts when the last camera is ready."""
        self.t0 = time.monotonic()

    def running(self) -> bool:
        """True while the sending window lasts (always, without a time bound)."""
        return self.seconds is None or time.monotonic() - self.t0 < self.seconds


def _check(stats: CameraStats, item: Any, expected: int, offset: int, pool_size: int,
           reference: Reference | None, accepted: dict[int, float]) -> int:
    """Account one stream item; returns the next expected sequence number."""
    seq = item.frame_id - offset
    accepted_at = accepted.pop(seq, item.submitted_at)
    stats.received += 1
    if seq != expected:
        if seq < expected:
            stats.reordered += 1
        else:
            stats.lost += seq - expected  # provisional: recomputed from sent/received at the end
        stats.first_error = stats.first_error or f"item {seq} after {expected - 1}"
    if item.dropped:
        stats.dropped += 1
        return max(expected, seq + 1)
    if item.error is not None:
        stats.failed += 1
        stats.first_error = stats.first_error or f"frame {seq}: {type(item.error).__name__}: {item.error}"
        return max(expected, seq + 1)
    stats.inspected += 1
    stats.latencies.append(item.finished_at - min(accepted_at, item.started_at or accepted_at))
    stats.service.append(item.finished_at - (item.started_at or item.submitted_at))
    stats.last_result_at = item.finished_at
    stats.done.append(item.finished_at - stats.t0)
    if reference is not None:
        index = pool_index(stats.camera, seq, pool_size)
        if not reference.matches(item.result, index):
            stats.mismatched += 1
            near = [pool_index(stats.camera, seq + d, pool_size) for d in range(-NEIGHBOURS, NEIGHBOURS + 1) if d]
            if any(reference.matches(item.result, j) for j in near if j != index):
                stats.reordered += 1
            stats.first_error = stats.first_error or f"frame {seq}: result differs from in-process (pool {index})"
    return max(expected, seq + 1)


def run_camera(camera: int, inspect: InspectFn, pool: Sequence[np.ndarray], reference: Reference | None,
               settings: StreamSettings, clock: Clock) -> CameraStats:
    """One camera: warm up, wait for the common start, send until the bound, drain, check every item."""
    from protoinspect.sdk.live_stream import LiveInspector

    stats = CameraStats(camera)
    offset = settings.warmup
    accepted: dict[int, float] = {}
    live = LiveInspector(inspect, drop_policy=settings.drop_policy, queue_size=settings.queue_size,
                         workers=settings.inflight)
    try:
        for i in range(settings.warmup):
            live.submit(pool[pool_index(camera, i, len(pool))], frame_id=i)
            live.get()
        clock.barrier.wait()
        stats.t0 = clock.t0
        expected, period = 0, (1.0 / settings.fps if settings.fps > 0 else 0.0)
        while clock.running() and (settings.frames_per_camera is None or stats.sent < settings.frames_per_camera):
            seq = stats.sent
            live.submit(pool[pool_index(camera, seq, len(pool))], frame_id=seq + offset)
            accepted[seq] = time.monotonic()  # in the queue: the latency clock starts (not while blocked)
            stats.sent += 1
            for item in live.ready():
                expected = _check(stats, item, expected, offset, len(pool), reference, accepted)
            if period:
                time.sleep(max(0.0, clock.t0 + stats.sent * period - time.monotonic()))
        live.close(drain=True)
        for item in live.results():
            expected = _check(stats, item, expected, offset, len(pool), reference, accepted)
    except BaseException as exc:  # noqa: BLE001 - reported in the camera's record, the run goes on
        stats.first_error = stats.first_error or f"{type(exc).__name__}: {exc}"
        live.close(drain=False)
        clock.barrier.abort()
    stats.lost = stats.sent - stats.received
    return stats


def run_cameras(inspect_fns: Sequence[InspectFn], pool: Sequence[np.ndarray], reference: Reference | None,
                settings: StreamSettings) -> tuple[list[CameraStats], float]:
    """Run one camera thread per callable; returns the cameras' stats and the elapsed seconds (start to the
    last result)."""
    clock = Clock(len(inspect_fns), settings.seconds)
    out: list[CameraStats | None] = [None] * len(inspect_fns)

    def body(i: int) -> None:
        out[i] = run_camera(i, inspect_fns[i], pool, reference, settings, clock)

    threads = [threading.Thread(target=body, args=(i,), name=f"camera-{i}", daemon=True)
               for i in range(len(inspect_fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = [s if s is not None else CameraStats(i, first_error="camera thread died") for i, s in enumerate(out)]
    end = max((s.last_result_at for s in stats), default=clock.t0)
    return stats, max(end - clock.t0, 1e-9)


def aggregate(stats: Sequence[CameraStats], elapsed: float, window: float | None = None) -> dict[str, Any]:
    """Totals, throughput and latency percentiles (ms) of one mode at one camera count.

    ``fps``: results within the sending window (``window`` seconds after the common start) per second, the
    steady state; without a window (frame-bounded runs) every result over ``elapsed``. ``fps_total``: every
    result, the drain after the window included, over ``elapsed`` (start to the last result).
    """
    lat = np.array([x for s in stats for x in s.latencies]) * 1e3
    svc = np.array([x for s in stats for x in s.service]) * 1e3
    inspected = sum(s.inspected for s in stats)

    def pct(a: np.ndarray, q: float) -> float | None:
        return round(float(np.percentile(a, q)), 2) if a.size else None

    span = elapsed if window is None else min(window, elapsed)
    in_window = [sum(1 for t in s.done if t <= span) for s in stats]
    per_cam = [n / span for n in in_window]
    totals = {k: sum(getattr(s, k) for s in stats)
              for k in ("sent", "received", "inspected", "failed", "dropped", "lost", "reordered", "mismatched")}
    return {"cameras": len(stats), "elapsed_s": round(elapsed, 3), **totals,
            "fps": round(sum(in_window) / span, 2), "fps_total": round(inspected / elapsed, 2),
            "camera_fps_min": round(min(per_cam), 2),
            "camera_fps_max": round(max(per_cam), 2),
            "latency_ms": {"p50": pct(lat, 50), "p99": pct(lat, 99), "max": pct(lat, 100)},
            "service_ms": {"p50": pct(svc, 50), "p99": pct(svc, 99)},
            "ok": totals["lost"] == 0 and totals["reordered"] == 0 and totals["mismatched"] == 0
            and totals["failed"] == 0,
            "first_error": next((s.first_error for s in stats if s.first_error), None),
            "per_camera": [s.summary() for s in stats]}
