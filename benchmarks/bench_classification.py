"""Latency of the classification stage per anomalous frame: regions + classifier, through ``Inspector``.

    python benchmarks/bench_classification.py --bundle DISCOVERY_BUNDLE --data DIR [--backend onnxruntime]
        [--threads 2] [--rounds 3] [--limit 100] [--json OUT]

The anomalous test images of DIR (real frames: their maps and regions are what the classifier sees in
the field) go through ``Inspector.inspect`` with ``image_threshold=-inf`` (every frame is classified);
the first round warms up, the next ``rounds`` are measured. Reported: p50 / p95 (ms) of
``timings_ms["regions"]``, ``["classify"]`` and their sum per frame (the classification stage), and of
``["total"]``, and the mean number of defects per frame. Medians only; no assertion on time.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from pathlib import Path

import cv2
import numpy as np

from protoinspect.sdk import Inspector, InspectorConfig


def _stats(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, float)
    return {"p50": round(float(np.percentile(arr, 50)), 3), "p95": round(float(np.percentile(arr, 95)), 3)}


def anomalous_frames(data: Path, limit: int) -> list[np.ndarray]:
    """BGR frames of ``data``'s anomalous test images (MVTec layout or MTD), evenly spaced, at most ``limit``."""
    paths = sorted(p for p in data.glob("test/*/*") if p.parent.name != "good" and p.suffix.lower() in (".png", ".jpg", ".bmp"))
    if not paths:  # MTD: MT_<Type>/Imgs/*.jpg, masks are the .png files
        paths = sorted(p for p in data.glob("MT_*/Imgs/*.jpg") if not p.parent.parent.name.endswith("Free"))
    if not paths:
        raise SystemExit(f"{data}: no anomalous test images found")
    idx = np.unique(np.linspace(0, len(paths) - 1, min(limit, len(paths))).round().astype(int))
    return [cv2.imread(str(paths[i]), cv2.IMREAD_COLOR) for i in idx]


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json")
    args = p.parse_args(argv)
    frames = anomalous_frames(Path(args.data), args.limit)
    cfg = InspectorConfig(image_threshold=-math.inf, threads=args.threads)
    rows: dict[str, list[float]] = {"regions": [], "classify": [], "classification": [], "total": []}
    defects: list[int] = []
    with Inspector.from_bundle(args.bundle, backend=args.backend, config=cfg) as insp:
        for f in frames:
            insp.inspect(f)
        for _ in range(args.rounds):
            for f in frames:
                result = insp.inspect(f)
                t = result.timings_ms
                rows["regions"].append(t["regions"])
                rows["classify"].append(t["classify"])
                rows["classification"].append(t["regions"] + t["classify"])
                rows["total"].append(t["total"])
                defects.append(len(result.defects))
    report = {"bundle": args.bundle, "data": args.data, "backend": args.backend, "threads": args.threads,
              "frames": len(frames), "rounds": args.rounds, "machine": platform.processor() or platform.machine(),
              "defects_per_frame_mean": round(float(np.mean(defects)), 2), **{k: _stats(v) for k, v in rows.items()}}
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
