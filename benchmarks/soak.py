"""Soak test: one Inspector over many frames; checks no frame is lost or reordered and reports memory growth.

    python benchmarks/soak.py --bundle B [--frames 10000] [--warmup 200] [--jsonl OUT.jsonl]
                              [--summary OUT.json] [--backend onnxruntime] [--threads 2] [--seed 0]

Frames are generated deterministically from a seeded generator: random BGR uint8, 256x256, and 480x640
on every 10th frame (a mix of sizes exercises the resize path and the per-size allocations). After
``--warmup`` frames (not written), ``--frames`` frames are inspected and one JSON line per frame
(``id``, ``frame_index``, ``verdict``, ``score``) is written and flushed as it goes.

Resident memory: VmRSS from /proc/self/status (Linux), sampled after warm-up and every 1000 frames and
at the end. Where /proc is unavailable the fallback is ``resource.getrusage(RUSAGE_SELF).ru_maxrss``,
which is the *peak* RSS (so it can only grow); the summary names the source used.

At the end the JSONL file is read back and checked: exactly N lines, ``frame_index`` strictly increasing
by 1 and ids in the order they were sent. Exit code 1 if a check fails, 2 on bad arguments or bundle,
0 otherwise; memory growth is reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

RSS_EVERY = 1000
SMALL_SHAPE = (256, 256, 3)
LARGE_SHAPE = (480, 640, 3)


def rss_mb() -> tuple[float, str]:
    """Current resident memory in MiB and its source (``"VmRSS"`` or ``"ru_maxrss (peak)"``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0, "VmRSS"
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return (peak / 2**20 if sys.platform == "darwin" else peak / 1024.0), "ru_maxrss (peak)"


def frames(seed: int, count: int, start: int = 0) -> Iterator[tuple[str, np.ndarray]]:
    """``count`` deterministic (id, frame) pairs numbered from ``start``; every 10th frame is 480x640."""
    rng = np.random.default_rng([seed, start])
    for i in range(start, start + count):
        shape = LARGE_SHAPE if i % 10 == 9 else SMALL_SHAPE
        yield frame_id(i), rng.integers(0, 256, shape, dtype=np.uint8)


def frame_id(i: int) -> str:
    """The id of the i-th measured frame (0-based)."""
    return f"frame-{i:07d}"


def _json_score(value: float) -> float | str:
    value = float(value)
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def verify_jsonl(path: Path, expected: int) -> dict[str, Any]:
    """Read the results back: line count, frame_index strictly +1, ids in the order sent.

    Returns:
        ``{"lines", "count_ok", "order_ok", "ids_ok", "bad_lines", "first_error"}``.
    """
    lines = 0
    bad_lines = 0
    order_ok = ids_ok = True
    first_error: str | None = None
    prev: int | None = None
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f):
            lines += 1
            try:
                rec = json.loads(line)
                index, fid = int(rec["frame_index"]), str(rec["id"])
            except (ValueError, KeyError, TypeError):
                bad_lines += 1
                first_error = first_error or f"line {n + 1}: not a result record"
                continue
            if prev is not None and index != prev + 1:
                order_ok = False
                first_error = first_error or f"line {n + 1}: frame_index {index} after {prev}"
            if fid != frame_id(n):
                ids_ok = False
                first_error = first_error or f"line {n + 1}: id {fid!r}, expected {frame_id(n)!r}"
            prev = index
    count_ok = lines == expected and bad_lines == 0
    if lines != expected:
        first_error = first_error or f"{lines} lines, expected {expected}"
    return {"lines": lines, "count_ok": count_ok, "order_ok": order_ok and bad_lines == 0, "ids_ok": ids_ok,
            "bad_lines": bad_lines, "first_error": first_error}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the soak script."""
    p = argparse.ArgumentParser(prog="soak.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="model bundle directory")
    p.add_argument("--frames", type=int, default=10000, help="measured frames (default 10000)")
    p.add_argument("--warmup", type=int, default=200, help="warm-up frames, not written (default 200)")
    p.add_argument("--jsonl", default=None, help="results file (default: a file in the temp folder)")
    p.add_argument("--summary", default=None, help="write the JSON summary here")
    p.add_argument("--backend", choices=("auto", "onnxruntime", "torch"), default="onnxruntime",
                   help="runtime (default onnxruntime)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("PROTOINSPECT_THREADS", "2")),
                   help="backend CPU threads (default $PROTOINSPECT_THREADS or 2)")
    p.add_argument("--seed", type=int, default=0, help="frame generator seed (default 0)")
    return p


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the soak and return the summary (``ok`` False when a frame was lost or reordered)."""
    from protoinspect.sdk import Inspector, InspectorConfig

    jsonl = Path(args.jsonl) if args.jsonl else Path(tempfile.gettempdir()) / f"protoinspect-soak-{os.getpid()}.jsonl"
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    config = InspectorConfig(threads=args.threads)
    samples: list[dict[str, Any]] = []
    verdicts: Counter[str] = Counter()
    with Inspector.from_bundle(args.bundle, backend=args.backend, config=config) as insp:
        for _, frame in frames(args.seed + 1, args.warmup):  # a stream of its own, not the measured frames
            insp.inspect(frame)
        rss0, source = rss_mb()
        samples.append({"frame": 0, "rss_mb": round(rss0, 2)})
        t0 = time.perf_counter()
        with open(jsonl, "w", encoding="utf-8") as out:
            for i, (fid, frame) in enumerate(frames(args.seed, args.frames)):
                result = insp.inspect(frame)
                verdicts[result.verdict.value] += 1
                out.write(json.dumps({"id": fid, "frame_index": result.frame_index, "verdict": result.verdict.value,
                                      "score": _json_score(result.anomaly_score)}) + "\n")
                out.flush()
                if (i + 1) % RSS_EVERY == 0:
                    samples.append({"frame": i + 1, "rss_mb": round(rss_mb()[0], 2)})
        elapsed = time.perf_counter() - t0
        backend = insp.backend.name
    rss1 = rss_mb()[0]
    if samples[-1]["frame"] != args.frames:
        samples.append({"frame": args.frames, "rss_mb": round(rss1, 2)})
    check = verify_jsonl(jsonl, args.frames)
    ok = check["count_ok"] and check["order_ok"] and check["ids_ok"]
    return {
        "bundle": str(args.bundle), "backend": backend, "threads": args.threads, "seed": args.seed,
        "frames": args.frames, "warmup": args.warmup, "jsonl": str(jsonl),
        "elapsed_s": round(elapsed, 3), "fps": round(args.frames / elapsed, 2) if elapsed > 0 else None,
        "verdicts": dict(verdicts),
        "rss_source": source, "rss_after_warmup_mb": round(rss0, 2), "rss_final_mb": round(rss1, 2),
        "rss_growth_pct": round(100.0 * (rss1 - rss0) / rss0, 3) if rss0 > 0 else None,
        "rss_samples": samples,
        "lines": check["lines"], "no_loss": check["count_ok"], "indices_increasing": check["order_ok"],
        "ids_in_order": check["ids_ok"], "first_error": check["first_error"], "ok": ok,
    }


def _print_summary(s: dict[str, Any]) -> None:
    def verdict(flag: bool) -> str:
        return "PASS" if flag else "FAIL"

    print(f"soak: {s['frames']} frames (+{s['warmup']} warm-up), backend {s['backend']}, {s['threads']} threads, "
          f"{s['elapsed_s']} s ({s['fps']} frames/s); verdicts {s['verdicts']}")
    print(f"RSS ({s['rss_source']}): after warm-up {s['rss_after_warmup_mb']:.1f} MiB, "
          f"final {s['rss_final_mb']:.1f} MiB, growth {s['rss_growth_pct']}%")
    print(f"check no frame lost ({s['lines']}/{s['frames']} lines): {verdict(s['no_loss'])}")
    print(f"check order (frame_index +1, ids in order): {verdict(s['indices_increasing'] and s['ids_in_order'])}")
    if s["first_error"]:
        print(f"first error: {s['first_error']}")
    print(f"results: {s['jsonl']}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 lost/reordered frames, 2 bad arguments or bundle)."""
    args = build_parser().parse_args(argv)
    if args.frames < 1 or args.warmup < 0 or args.threads < 1:
        print("soak.py: --frames must be >= 1, --warmup >= 0, --threads >= 1", file=sys.stderr)
        return 2
    from protoinspect.sdk.errors import ProtoInspectError

    try:
        summary = run(args)
    except ProtoInspectError as exc:
        print(f"soak.py: {exc}", file=sys.stderr)
        return 2
    _print_summary(summary)
    if args.summary:
        Path(args.summary).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
