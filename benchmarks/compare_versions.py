"""Two installed ProtoInspect versions measured in one run: fast-path latency (interleaved) and one huge frame.

    python benchmarks/compare_versions.py --python-a OLD_VENV/bin/python --bundle-a BUNDLE \\
        --python-b NEW_VENV/bin/python --bundle-b BUNDLE [--frame 256x256] [--rounds 20] [--block 10]
        [--threads 2] [--huge 8000x8000] [--json OUT.json]

Each version runs in its own interpreter (``--python-a`` / ``--python-b``, e.g. a virtual environment
with the older release installed), so both can be measured on one machine in one run:

- **fast path** (every frame OK: ``image_threshold=inf``; masking + detection, what a good part costs on
  the line): one long-lived worker per version loads its Inspector (ONNX Runtime, ``--threads``), then
  the workers are asked in turn for blocks of ``--block`` frames, ``--rounds`` times, so machine drift hits
  both alike. Reported: p50 / p95 of ``timings_ms["total"]`` and the ratio of the p50s (b / a).
- **huge frame** (``--huge``, default 8000x8000): per version and per path (``ok``: fast path;
  ``anomalous``: ``image_threshold=-inf``, the region path), a fresh interpreter loads the Inspector,
  makes the frame, then inspects it twice; reported are the wall time of the second call and the peak
  resident memory of the process above what it held before the first call (``ru_maxrss``, Linux KiB).

No assertion: a measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

WORKER = r'''
import json, sys
import numpy as np
from protoinspect.sdk import Inspector, InspectorConfig
bundle, h, w, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cfg = InspectorConfig(image_threshold=float("inf"), threads=threads)
insp = Inspector.from_bundle(bundle, backend="onnxruntime", config=cfg)
rng = np.random.default_rng(0)
frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(8)]
for f in frames:
    insp.inspect(f)
print("ready", flush=True)
i = 0
for line in sys.stdin:
    n = int(line)
    out = []
    for _ in range(n):
        out.append(insp.inspect(frames[i % len(frames)]).timings_ms["total"])
        i += 1
    print(json.dumps(out), flush=True)
'''

HUGE = r'''
import json, resource, sys, time
import numpy as np
from protoinspect.sdk import Inspector, InspectorConfig
bundle, h, w, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
threshold = float("inf") if path == "ok" else float("-inf")
cfg = InspectorConfig(image_threshold=threshold, pixel_threshold=threshold, threads=2)
insp = Inspector.from_bundle(bundle, backend="onnxruntime", config=cfg)
frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
insp.inspect(frame[:256, :256])  # warm the session on a small frame
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
insp.inspect(frame)
t0 = time.perf_counter()
r = insp.inspect(frame)
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_rss_mib": peak / 1024, "peak_above_start_mib": (peak - before) / 1024,
                  "verdict": str(r.verdict), "defects": len(r.defects)}))
'''


def _shape(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return h, w


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def fast_path(versions: dict[str, tuple[str, str]], shape: tuple[int, int], rounds: int, block: int,
              threads: int) -> dict[str, dict[str, float]]:
    """Interleaved blocks of fast-path frames from one worker per version -> p50/p95 per version."""
    workers = {}
    for name, (python, bundle) in versions.items():
        proc = subprocess.Popen([python, "-c", WORKER, bundle, str(shape[0]), str(shape[1]), str(threads)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/")
        if proc.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
            raise SystemExit(f"worker {name} ({python}) failed to start")
        workers[name] = proc
    times: dict[str, list[float]] = {name: [] for name in versions}
    try:
        for _ in range(rounds):
            for name, proc in workers.items():
                proc.stdin.write(f"{block}\n")  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
                times[name] += json.loads(proc.stdout.readline())  # type: ignore[union-attr]
    finally:
        for proc in workers.values():
            proc.stdin.close()  # type: ignore[union-attr]
            proc.wait(timeout=60)
    return {name: {"p50_ms": statistics.median(t), "p95_ms": _pct(t, 0.95), "frames": len(t)} for name, t in times.items()}


def huge_frame(versions: dict[str, tuple[str, str]], shape: tuple[int, int]) -> dict[str, dict[str, dict]]:
    """One huge frame per version and path (ok / anomalous), each in a fresh interpreter."""
    out: dict[str, dict[str, dict]] = {}
    for path in ("ok", "anomalous"):
        for name, (python, bundle) in versions.items():
            proc = subprocess.run([python, "-c", HUGE, bundle, str(shape[0]), str(shape[1]), path],
                                  capture_output=True, text=True, cwd="/", timeout=900, check=False)
            if proc.returncode != 0:
                raise SystemExit(f"{name} on the huge frame failed:\n{proc.stderr[-2000:]}")
            out.setdefault(name, {})[path] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--python-a", required=True)
    p.add_argument("--bundle-a", required=True)
    p.add_argument("--python-b", required=True)
    p.add_argument("--bundle-b", required=True)
    p.add_argument("--frame", default="256x256", help="fast-path frame, WIDTHxHEIGHT")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--block", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--huge", default="8000x8000", help="huge frame, WIDTHxHEIGHT ('none' to skip)")
    p.add_argument("--json", help="also write the report here")
    args = p.parse_args(argv)
    versions = {"a": (args.python_a, args.bundle_a), "b": (args.python_b, args.bundle_b)}
    report: dict = {"fast_path": fast_path(versions, _shape(args.frame), args.rounds, args.block, args.threads)}
    fp = report["fast_path"]
    report["fast_path_ratio_b_over_a"] = fp["b"]["p50_ms"] / fp["a"]["p50_ms"]
    print(f"fast path {args.frame}, {args.threads} threads, onnxruntime: "
          + "; ".join(f"{k}: p50 {v['p50_ms']:.2f} ms, p95 {v['p95_ms']:.2f} ms ({v['frames']} frames)" for k, v in fp.items())
          + f"; ratio b/a {report['fast_path_ratio_b_over_a']:.3f}")
    if args.huge != "none":
        report["huge_frame"] = huge_frame(versions, _shape(args.huge))
        for name, paths in report["huge_frame"].items():
            for path, r in paths.items():
                print(f"{args.huge} {path:9s} {name}: {r['seconds'] * 1e3:8.1f} ms, peak RSS {r['peak_rss_mib']:.0f} MiB "
                      f"({r['peak_above_start_mib']:.0f} MiB above start), {r['verdict']}, {r['defects']} defects")
    report["args"] = vars(args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
