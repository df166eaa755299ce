"""Load benchmark: N simulated cameras through a Triton server (client backend) beside in-process Inspectors.

    python benchmarks/load_triton.py --bundle B [--cameras 1 4 16 64] [--seconds 10] [--json OUT.json]
        [--modes inprocess per-core per-thread triton] [--protocol grpc|http] [--instances 2] [--max-batch 8]
        [--queue-delay-us 2000] [--server-threads 1] [--threads CORES] [--max-inspectors 16]
        [--frames DIR] [--pool 64] [--size 256] [--fps 0] [--queue-size 1] [--inflight 1]
        [--drop-policy block] [--frames-per-camera N] [--warmup 2] [--triton-env VENV] [--seed 0]
    python benchmarks/load_triton.py --bundle B --parity-run [--json OUT.json]   # 16 cameras x 625 frames

Each camera is a thread sending its own numbered frames into a LiveInspector (queue ``--queue-size``,
``--drop-policy``, ``--inflight`` requests in flight) over the inspector of the mode, for ``--seconds`` (and/or
``--frames-per-camera``) after a common start; every result is checked for sequence (lost / reordered) and
against the in-process result of the frame sent (benchmarks/load_cameras.py). Modes, all in one run:

- ``inprocess``: ONE in-process Inspector (ONNX Runtime, ``--threads`` intra-op threads, default all cores);
  the cameras are serialised through it with a lock.
- ``per-core``: one Inspector per core (``threads=1`` each; cameras assigned round-robin, a lock each): the
  baseline of the issue's throughput target ("at least that of one in-process Inspector per core").
- ``per-thread``: one Inspector per camera thread (``threads=1`` each), capped at ``--max-inspectors``
  (64 ONNX Runtime sessions on 2 cores only add memory; beyond the cap cameras share round-robin, a lock each).
- ``triton``: the bundle exported with ``protoinspect export-triton`` options (``--instances`` inspector
  instances, dynamic batching up to ``--max-batch`` with ``--queue-delay-us``, each instance's Inspector with
  ``--server-threads`` threads) served by PyTriton's ``tritonserver`` on 127.0.0.1, started and stopped by
  this script; each camera has its own client (``Inspector.from_bundle(backend="triton")``, gRPC or HTTP).

Fairness on a CPU machine: the client threads of the triton mode run on the same cores as the server. Latency
is frame accepted into the camera's queue -> result (queue wait included; time a camera is blocked by a full
``block`` queue is back-pressure and not counted); ``service`` is the inspect call alone (triton: the request
round trip, with the server's queueing and batching). Numbers are
reported, never asserted; exit code 1 when a frame was lost, reordered, failed or differs from in-process,
2 on bad arguments. ``--parity-run``: the issue's target, 16 cameras x 625 frames = 10,000 frames through the
server (triton mode only, no time bound), each compared with the in-process result of its frame.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
import load_cameras
from load_cameras import InspectFn, Reference, StreamSettings

ROOT = Path(__file__).resolve().parents[1]
MODES = ("inprocess", "per-core", "per-thread", "triton")
DEFAULT_ENV = ROOT / ".cache" / "triton-venv"
PARITY_CAMERAS, PARITY_FRAMES = 16, 625
CORES = os.cpu_count() or 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the load benchmark."""
    p = argparse.ArgumentParser(prog="load_triton.py", description=__doc__.split("\n\n")[0])
    a = p.add_argument
    a("--bundle", required=True, help="bundle with detector.onnx (protoinspect export)")
    a("--cameras", type=int, nargs="+", default=[1, 4, 16, 64], help="camera counts (default 1 4 16 64)")
    a("--seconds", type=float, default=10.0, help="sending time per mode and camera count (default 10)")
    a("--frames-per-camera", type=int, default=None, help="stop each camera after N frames (also)")
    a("--modes", nargs="+", choices=MODES, default=list(MODES), help="modes to run (default all)")
    a("--json", default=None, help="write the report here")
    a("--frames", default=None, help="folder of images for the frame pool (default: seeded random frames)")
    a("--pool", type=int, default=64, help="distinct frames cycled by the cameras (default 64)")
    a("--size", type=int, default=256, help="random frame side (default 256: 256x256x3 uint8)")
    a("--seed", type=int, default=0, help="random frame seed")
    a("--fps", type=float, default=0.0, help="frames/s per camera; 0: as fast as accepted (default)")
    a("--queue-size", type=int, default=1, help="frames waiting per camera (default 1)")
    a("--inflight", type=int, default=1, help="inspect calls in flight per camera (LiveInspector workers)")
    a("--drop-policy", choices=("block", "drop_oldest", "drop_newest"), default="block")
    a("--warmup", type=int, default=2, help="frames per camera before the clock starts (default 2)")
    a("--threads", type=int, default=CORES, help=f"ONNX Runtime threads of the inprocess Inspector ({CORES})")
    a("--max-inspectors", type=int, default=16, help="per-thread mode: at most this many Inspectors (16)")
    a("--protocol", choices=("grpc", "http"), default="grpc")
    a("--instances", type=int, default=2, help="triton: inspector model instances (default 2)")
    a("--max-batch", type=int, default=8, help="triton: max_batch_size (default 8)")
    a("--queue-delay-us", type=int, default=2000, help="triton: dynamic batching queue delay (default 2000)")
    a("--server-threads", type=int, default=1, help="triton: ONNX Runtime threads per instance (default 1)")
    a("--triton-env", default=os.environ.get("PROTOINSPECT_TRITON_ENV") or str(DEFAULT_ENV),
      help="server venv (default $PROTOINSPECT_TRITON_ENV or .cache/triton-venv)")
    a("--parity-run", action="store_true", help="16 cameras x 625 frames through the server, all checked")
    return p


def _inspector(bundle: str, threads: int) -> Any:
    """An in-process ONNX Runtime Inspector with ``threads`` intra-op threads."""
    from protoinspect.sdk import Inspector, InspectorConfig

    return Inspector.from_bundle(bundle, backend="onnxruntime", config=InspectorConfig(threads=threads))


def _locked(inspector: Any) -> InspectFn:
    """``inspector.inspect`` behind a lock of its own (cameras sharing one Inspector take turns)."""
    lock = threading.Lock()

    def inspect(frame: Any) -> Any:
        with lock:
            return inspector.inspect(frame)
    return inspect


@contextmanager
def mode_inspectors(mode: str, cameras: int, args: argparse.Namespace, server: Any
                    ) -> Iterator[tuple[list[InspectFn], dict[str, Any]]]:
    """(one inspect callable per camera, what the mode ran) for ``mode``; everything is closed on exit."""
    with ExitStack() as stack:
        if mode == "triton":
            from protoinspect.sdk import Inspector

            url = server.grpc_url if args.protocol == "grpc" else server.http_url
            clients = [stack.enter_context(Inspector.from_bundle(args.bundle, backend="triton", url=url,
                                                                 protocol=args.protocol)) for _ in range(cameras)]
            yield [c.inspect for c in clients], {"clients": cameras, "protocol": args.protocol, "url": url}
            return
        if mode == "inprocess":
            count, threads = 1, args.threads
        else:
            count, threads = min(cameras, CORES if mode == "per-core" else args.max_inspectors), 1
        fns = [_locked(stack.enter_context(_inspector(args.bundle, threads))) for _ in range(count)]
        yield [fns[i % count] for i in range(cameras)], {"inspectors": count, "ort_threads": threads}


@contextmanager
def triton_server(args: argparse.Namespace) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Export the bundle to a temporary repository and serve its inspector on 127.0.0.1 (stopped on exit)."""
    from protoinspect.export.triton_repository import export_triton_repository
    from protoinspect.export.triton_server import start_server
    from protoinspect.sdk import InspectorConfig

    with tempfile.TemporaryDirectory(prefix="protoinspect-load-") as tmp:
        t0 = time.monotonic()
        record = export_triton_repository(args.bundle, Path(tmp) / "models", instances=args.instances,
                                          max_batch_size=args.max_batch, max_queue_delay_us=args.queue_delay_us,
                                          inspector_config=InspectorConfig(threads=args.server_threads))
        with start_server(Path(tmp) / "models", python_env=args.triton_env, timeout_s=180) as server:
            info = {"instances": args.instances, "max_batch_size": args.max_batch,
                    "queue_delay_us": args.queue_delay_us, "server_threads": args.server_threads,
                    "model_version": record.get("version"), "start_s": round(time.monotonic() - t0, 1)}
            yield server, info


def triton_unavailable(env: str) -> str | None:
    """Why the triton mode cannot run here (None: it can)."""
    try:
        import tritonclient.grpc  # noqa: F401
        from protoinspect.export.triton_server import find_tritonserver

        find_tritonserver(env)
    except Exception as exc:  # noqa: BLE001 - MissingDependencyError, ImportError: the reason is reported
        return f"{type(exc).__name__}: {exc}"
    return None


def _git_commit() -> str | None:
    """``git rev-parse --short HEAD`` (+``+dirty`` with uncommitted changes); None outside a checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True,
                               timeout=10, check=False).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict[str, Any]:
    """CPU count, platform, load average (a shared machine shows here)."""
    import onnxruntime

    return {"cpus": CORES, "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def targets(runs: Sequence[dict[str, Any]], parity_run: bool) -> dict[str, Any]:
    """The issue's targets from the runs: throughput at 16 cameras vs one Inspector per core; the parity run."""
    out: dict[str, Any] = {}
    by = {(r["mode"], r["cameras"]): r for r in runs if "fps" in r}
    if ("triton", 16) in by and ("per-core", 16) in by:
        t, base = by[("triton", 16)], by[("per-core", 16)]
        out["throughput_16"] = {"triton_fps": t["fps"], "per_core_fps": base["fps"],
                                "ratio": round(t["fps"] / base["fps"], 3) if base["fps"] else None,
                                "met": t["fps"] >= base["fps"], "triton_p99_ms": t["latency_ms"]["p99"]}
    if parity_run and ("triton", PARITY_CAMERAS) in by:
        r = by[("triton", PARITY_CAMERAS)]
        out["parity_10000"] = {"frames": r["inspected"], "sent": r["sent"], "lost": r["lost"],
                               "reordered": r["reordered"], "mismatched": r["mismatched"], "failed": r["failed"],
                               "met": r["ok"] and r["inspected"] == PARITY_CAMERAS * PARITY_FRAMES}
    return out


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every mode at every camera count; returns the report (``runs``, ``targets``, ``ok``)."""
    from protoinspect.sdk import InspectorConfig  # noqa: F401 - import errors surface before any work

    t_start = time.monotonic()
    size = (args.size, args.size, 3)
    pool = (load_cameras.folder_pool(args.frames, args.pool) if args.frames
            else load_cameras.random_pool(args.pool, size, args.seed))
    settings = StreamSettings(seconds=args.seconds, frames_per_camera=args.frames_per_camera, fps=args.fps,
                              warmup=args.warmup, queue_size=args.queue_size, inflight=args.inflight,
                              drop_policy=args.drop_policy)
    report: dict[str, Any] = {
        "command": "python benchmarks/load_triton.py " + " ".join(args.argv), "commit": _git_commit(),
        "machine": machine(), "bundle": str(args.bundle),
        "frames": {"source": args.frames or f"random seed {args.seed}", "pool": len(pool),
                   "shape": list(pool[0].shape)},
        "settings": {k: getattr(settings, k) for k in ("seconds", "frames_per_camera", "fps", "warmup", "queue_size",
                                                        "inflight", "drop_policy")},
        "runs": [], "skipped": {}}
    with _inspector(args.bundle, args.server_threads) as ref_insp:  # the server instances' settings
        reference = Reference.compute(ref_insp.inspect, pool)
    logging.getLogger("protoinspect.sdk.bundle").setLevel(logging.ERROR)  # the unsealed-bundle warning: said once
    modes = list(args.modes)
    with ExitStack() as stack:
        server = None
        if "triton" in modes:
            reason = triton_unavailable(args.triton_env)
            if reason:
                report["skipped"]["triton"] = reason
                modes.remove("triton")
                log(f"triton mode skipped: {reason}")
            else:
                server, report["server"] = stack.enter_context(triton_server(args))
                log(f"tritonserver ready in {report['server']['start_s']} s ({args.instances} instances, "
                    f"max batch {args.max_batch}, {args.server_threads} ORT thread(s) each)")
        for cameras in args.cameras:
            for mode in modes:
                with mode_inspectors(mode, cameras, args, server) as (fns, info):
                    stats, elapsed = load_cameras.run_cameras(fns, pool, reference, settings)
                record = {"mode": mode, **info, **load_cameras.aggregate(stats, elapsed, settings.seconds)}
                report["runs"].append(record)
                log(table_row(record))
    report["targets"] = targets(report["runs"], args.parity_run)
    report["ok"] = all(r["ok"] for r in report["runs"])
    report["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    report["wall_s"] = round(time.monotonic() - t_start, 1)
    return report


HEADER = (f"{'mode':<11}{'cams':>5}{'frames':>8}{'fps':>8}{'p50 ms':>9}{'p99 ms':>9}{'svc p50':>9}"
          f"{'cam fps min-max':>17}{'lost':>6}{'reord':>6}{'drop':>6}{'fail':>6}{'differ':>7}")


def table_row(r: dict[str, Any]) -> str:
    """One line of the results table."""
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"
    cam = f"{r['camera_fps_min']:.1f}-{r['camera_fps_max']:.1f}"
    return (f"{r['mode']:<11}{r['cameras']:>5}{r['inspected']:>8}{r['fps']:>8.1f}{ms(r['latency_ms']['p50']):>9}"
            f"{ms(r['latency_ms']['p99']):>9}{ms(r['service_ms']['p50']):>9}{cam:>17}{r['lost']:>6}"
            f"{r['reordered']:>6}{r['dropped']:>6}{r['failed']:>6}{r['mismatched']:>7}")


def print_report(report: dict[str, Any]) -> None:
    """The table, the targets and where the report went."""
    print(HEADER)
    for r in report["runs"]:
        print(table_row(r))
    for mode, reason in report["skipped"].items():
        print(f"{mode}: skipped ({reason})")
    t = report["targets"]
    if "throughput_16" in t:
        x = t["throughput_16"]
        print(f"target throughput, 16 cameras: triton {x['triton_fps']} frames/s vs one Inspector per core "
              f"{x['per_core_fps']} frames/s (x{x['ratio']}): {'MET' if x['met'] else 'NOT MET'}; triton p99 "
              f"{x['triton_p99_ms']} ms")
    if "parity_10000" in t:
        x = t["parity_10000"]
        print(f"target parity: {x['frames']}/{PARITY_CAMERAS * PARITY_FRAMES} frames, lost {x['lost']}, reordered "
              f"{x['reordered']}, differ {x['mismatched']}, failed {x['failed']}: {'MET' if x['met'] else 'NOT MET'}")
    first = next((r["first_error"] for r in report["runs"] if r["first_error"]), None)
    if first:
        print(f"first problem: {first}")
    print(f"machine: {report['machine']['cpus']} CPUs, load {report['machine']['loadavg']} -> "
          f"{report['machine']['loadavg_after']}; commit {report['commit']}; wall {report['wall_s']} s")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 all frames accounted for and equal to in-process, 1 otherwise, 2 bad arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.parity_run:
        args.modes, args.cameras, args.frames_per_camera, args.seconds = ["triton"], [PARITY_CAMERAS], PARITY_FRAMES, None
        reason = triton_unavailable(args.triton_env)
        if reason:
            print(f"load_triton.py: --parity-run needs the server: {reason}", file=sys.stderr)
            return 2
    bad = [n for n in ("pool", "size", "queue_size", "inflight", "threads", "max_inspectors", "instances",
                       "max_batch", "server_threads") if getattr(args, n) < 1]
    if (bad or min(args.cameras) < 1 or args.warmup < 0 or args.fps < 0
            or (args.seconds is not None and args.seconds <= 0)
            or (args.frames_per_camera is not None and args.frames_per_camera < 1)):
        print(f"load_triton.py: bad arguments {bad or ''} (counts >= 1, --seconds > 0, --warmup/--fps >= 0)",
              file=sys.stderr)
        return 2
    if not (Path(args.bundle) / "detector.onnx").is_file():
        print(f"load_triton.py: {args.bundle} has no detector.onnx: run `protoinspect export {args.bundle}`",
              file=sys.stderr)
        return 2
    from protoinspect.sdk.errors import ProtoInspectError

    print(HEADER)
    try:
        report = run(args)
    except (ProtoInspectError, ValueError) as exc:
        print(f"load_triton.py: {exc}", file=sys.stderr)
        return 2
    print()
    print_report(report)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"report: {args.json}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
