"""Inspector fast-path latency of several bundles measured in one run, interleaved (medians and ratios).

    python benchmarks/compare_latency.py BUNDLE_A BUNDLE_B [...] [--frame 256x256] [--frames 200]
        [--threads 2] [--backend onnxruntime] [--json OUT.json]

Every bundle gets its own Inspector (fast path: ``image_threshold=inf``, so every frame is OK and the
cost is masking + detection, what a good part costs on the line). Frames are seeded random BGR images
of ``--frame`` size; the bundles are called in turn on each frame, so drift of the machine (another
job, thermal state) hits all of them alike. Reports p50 / p95 of ``timings_ms["total"]`` per bundle and
the ratio of each p50 to the first bundle's. No assertion: a measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from protoinspect.sdk import Inspector, InspectorConfig


def _frame_shape(text: str) -> tuple[int, int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--frame must look like 1500x1000 (width x height), got {text!r}") from exc
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError("--frame sides must be >= 16")
    return h, w, 3


def compare(bundles: Sequence[Path], frame_shape: tuple[int, int, int], frames: int, threads: int,
            backend: str, warmup: int = 10) -> list[dict]:
    """Interleaved fast-path timings -> one record per bundle (p50, p95, ratio to the first)."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, frame_shape, dtype=np.uint8) for _ in range(8)]
    config = InspectorConfig(image_threshold=math.inf, threads=threads)
    inspectors = [Inspector.from_bundle(b, backend=backend, config=config) for b in bundles]
    times: list[list[float]] = [[] for _ in bundles]
    try:
        for i in range(warmup + frames):
            for k, insp in enumerate(inspectors):
                result = insp.inspect(images[i % len(images)])
                if i >= warmup:
                    times[k].append(float(result.timings_ms["total"]))
    finally:
        for insp in inspectors:
            insp.close()
    base = float(np.median(times[0]))
    records = []
    for bundle, t, insp in zip(bundles, times, inspectors):
        p50 = float(np.median(t))
        records.append({"bundle": str(bundle), "image_size": list(insp.bundle.manifest.preprocess_spec.image_size),
                        "p50_ms": round(p50, 2), "p95_ms": round(float(np.quantile(t, 0.95)), 2),
                        "ratio_to_first": round(p50 / base, 3), "frames": len(t)})
    return records


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(prog="python benchmarks/compare_latency.py", description=__doc__.split("\n\n")[0])
    p.add_argument("bundles", nargs="+", type=Path, help="bundle folders (the first is the reference)")
    p.add_argument("--frame", type=_frame_shape, default=(256, 256, 3), help="frame size WxH (default 256x256)")
    p.add_argument("--frames", type=int, default=200, help="measured frames per bundle")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "torch"])
    p.add_argument("--json", type=Path, help="write the records here")
    args = p.parse_args(argv)
    if args.frames < 1 or args.threads < 1:
        print("compare_latency.py: --frames and --threads must be >= 1", file=sys.stderr)
        return 2
    records = compare(args.bundles, args.frame, args.frames, args.threads, args.backend)
    print(f"{'bundle':50s} {'model':>9s} {'p50 ms':>8s} {'p95 ms':>8s} {'ratio':>6s}")
    for r in records:
        size = "x".join(str(v) for v in r["image_size"])
        print(f"{r['bundle'][-50:]:50s} {size:>9s} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f} {r['ratio_to_first']:6.3f}")
    if args.json:
        args.json.write_text(json.dumps(records, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
