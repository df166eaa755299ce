"""Per-stage latency of ``protoinspect.sdk.Inspector`` on the machine it runs on: Jetson, datacenter GPU or CPU.

Standalone (no pytest on the device)::

    python benchmarks/jetson_latency.py --bundle B --backend tensorrt --frames 1000 \
        --json runs/orin_trt.json --markdown runs/latency.md
    python benchmarks/jetson_latency.py --bundle B --backend onnxruntime --frames 200   # any CPU

It records the power mode (``nvpmodel -q``), whether ``jetson_clocks`` locked the clocks, JetPack / L4T
and TensorRT versions (each "unknown" when it cannot be read: run with sudo for nvpmodel/jetson_clocks),
runs ``--warmup`` frames, then ``--frames`` random BGR frames through one Inspector, and reports
p50/p90/p99 per stage (``result.timings_ms``: mask, detect, regions, classify, total) and the serial
throughput. While it runs, a background thread samples ``tegrastats`` (GPU load, CPU load, power rails,
temperatures) on a Jetson, ``nvidia-smi`` on a datacenter GPU, or nothing on a CPU-only machine.
Writes a JSON report and appends one markdown table row (header written when the file is new).

``--path fast`` (default) forces verdict OK (``image_threshold=inf``: the good-part path a line sees
most); ``anomalous`` forces region extraction on every frame; ``bundle`` uses the bundle's thresholds.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from protoinspect.sdk import Inspector, InspectorConfig  # noqa: E402
from protoinspect.sdk import device_info  # noqa: E402

STAGES = ("mask", "detect", "regions", "classify", "total")
PATHS = {"fast": math.inf, "anomalous": -math.inf, "bundle": None}
MD_HEADER = ("| date | device | nvpmodel | clocks | JetPack / L4T | TensorRT | backend | input | frames | "
             "detect p50/p90/p99 ms | total p50/p90/p99 ms | frames/s | GPU load / power |\n"
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50 / p90 / p99 / mean / max of ``values`` in ms (NaN when empty)."""
    if not len(values):
        return {k: math.nan for k in ("p50", "p90", "p99", "mean", "max")}
    a = np.asarray(values, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(a.mean()), "max": float(a.max())}


def parse_tegrastats(line: str) -> dict[str, float]:
    """One ``tegrastats`` line -> gpu_load_pct, cpu_load_pct, <rail>_mw (instantaneous), <sensor>_c."""
    out: dict[str, float] = {}
    gpu = re.search(r"GR3D_FREQ (\d+)%", line)
    if gpu:
        out["gpu_load_pct"] = float(gpu.group(1))
    cpu = re.search(r"CPU \[([^\]]*)\]", line)
    if cpu:
        loads = [float(v) for v in re.findall(r"(\d+)%", cpu.group(1))]
        if loads:
            out["cpu_load_pct"] = sum(loads) / len(loads)
    for rail, now in re.findall(r"\b((?:VDD|POM|VIN)_\w+) (\d+)(?:mW)?/\d+", line):
        out[f"{rail.lower()}_mw"] = float(now)
    for sensor, temp in re.findall(r"\b([A-Za-z0-9_]+)@(-?[\d.]+)C\b", line):
        out[f"{sensor.lower()}_c"] = float(temp)
    return out


def parse_nvidia_smi(line: str) -> dict[str, float]:
    """One ``utilization.gpu, power.draw, temperature.gpu, memory.used`` CSV line (no units) -> metrics."""
    keys = ("gpu_load_pct", "gpu_power_w", "gpu_temp_c", "gpu_mem_mib")
    out = {}
    for key, raw in zip(keys, line.split(",")):
        try:
            out[key] = float(raw.strip())
        except ValueError:
            continue
    return out


class Monitor:
    """Samples ``tegrastats`` or ``nvidia-smi`` in a background thread (``tool="none"``: nothing)."""

    def __init__(self, tool: str = "auto", interval_ms: int = 500) -> None:
        if tool == "auto":
            tool = ("tegrastats" if device_info.run_text(["which", "tegrastats"]) else
                    "nvidia-smi" if device_info.run_text(["nvidia-smi", "-L"]) else "none")
        self.tool, self.interval_ms = tool, int(interval_ms)
        self.samples: list[dict[str, float]] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def command(self) -> list[str] | None:
        """The sampling command line (None for ``tool="none"``)."""
        if self.tool == "tegrastats":
            return ["tegrastats", "--interval", str(self.interval_ms)]
        if self.tool == "nvidia-smi":
            return ["nvidia-smi", "--query-gpu=utilization.gpu,power.draw,temperature.gpu,memory.used",
                    "--format=csv,noheader,nounits", "-lms", str(self.interval_ms)]
        return None

    def __enter__(self) -> Monitor:
        cmd = self.command() if self.tool in ("tegrastats", "nvidia-smi") else None
        if cmd is not None:
            try:
                self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            except OSError:
                self.tool, self._proc = f"{self.tool} (failed to start)", None
        if self._proc is not None:
            parse = parse_tegrastats if self.tool == "tegrastats" else parse_nvidia_smi
            self._thread = threading.Thread(target=self._read, args=(parse,), daemon=True)
            self._thread.start()
        return self

    def _read(self, parse: Any) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            sample = parse(line)
            if sample:
                self.samples.append(sample)

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def summary(self) -> dict[str, dict[str, float]]:
        """metric -> {"mean", "max"} over the samples."""
        keys = sorted({k for s in self.samples for k in s})
        return {k: {"mean": float(np.mean([s[k] for s in self.samples if k in s])),
                    "max": float(np.max([s[k] for s in self.samples if k in s]))} for k in keys}


def machine_facts() -> dict[str, Any]:
    """Power mode, clocks, JetPack / L4T, TensorRT, GPUs and host, each read defensively."""
    return device_info.host_summary()


def open_inspector(bundle: str, backend: str, device: str, threads: int | None, path: str,
                   cuda_graph: bool) -> Inspector:
    """An Inspector on ``backend``. The TensorRT backend is created directly (InspectorConfig only names
    auto / onnxruntime / torch); it then runs detection and regions, without the defect classifier."""
    cfg = InspectorConfig(color_order="bgr", image_threshold=PATHS[path],
                          threads=None if backend == "tensorrt" else threads)
    if backend == "tensorrt":
        from protoinspect.sdk.backends.registry import create_backend
        from protoinspect.sdk.bundle import load_bundle

        loaded = load_bundle(bundle)
        return Inspector(loaded, create_backend("tensorrt", loaded, device=device, cuda_graph=cuda_graph), cfg)
    return Inspector.from_bundle(bundle, backend=backend, device=device, config=cfg)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Warm up, measure, sample; return the report (also what ``--json`` writes)."""
    rng = np.random.default_rng(args.seed)
    with open_inspector(args.bundle, args.backend, args.device, args.threads, args.path, args.cuda_graph) as insp:
        h, w = args.frame_size or insp.detector.spec.image_size
        pool = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(min(16, args.frames))]
        for i in range(args.warmup):
            insp.inspect(pool[i % len(pool)])
        timings: list[dict[str, float]] = []
        wall: list[float] = []
        with Monitor(args.monitor, args.sample_interval_ms) as monitor:
            start = time.perf_counter()
            for i in range(args.frames):
                t0 = time.perf_counter()
                result = insp.inspect(pool[i % len(pool)])
                wall.append((time.perf_counter() - t0) * 1e3)
                timings.append(dict(result.timings_ms))
            elapsed = time.perf_counter() - start
        described = insp.describe()
    return {
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "machine": machine_facts(),
        "config": {"bundle": str(args.bundle), "backend": args.backend, "device": args.device,
                   "frames": args.frames, "warmup": args.warmup, "frame_size": [h, w], "path": args.path,
                   "threads": args.threads, "cuda_graph": args.cuda_graph,
                   "input_size": described["input_size"], "backend_info": described["backend"]},
        "stages_ms": {s: percentiles([t.get(s, 0.0) for t in timings]) for s in STAGES},
        "wall_ms": percentiles(wall),
        "throughput_fps": args.frames / elapsed if elapsed > 0 else math.nan,
        "monitor": {"tool": monitor.tool, "interval_ms": monitor.interval_ms, "samples": len(monitor.samples),
                    "summary": monitor.summary()},
    }


def markdown_row(report: dict[str, Any]) -> str:
    """One row of :data:`MD_HEADER` for ``report``."""
    m, c = report["machine"], report["config"]
    gpus = m.get("gpus") or []
    device = gpus[0]["name"] if gpus else (c["backend_info"].get("gpu") or f"CPU {m.get('cpu', m['machine'])}")
    d, t = report["stages_ms"]["detect"], report["stages_ms"]["total"]
    mon = report["monitor"]["summary"]
    load = mon.get("gpu_load_pct", {}).get("mean")
    power = next((v["mean"] for k, v in mon.items() if k in ("vdd_gpu_soc_mw", "gpu_power_w")), None)
    gpu_cell = "n/a" if load is None else f"{load:.0f} %" + ("" if power is None else f" / {power:.1f}")
    size = "x".join(str(v) for v in c["input_size"])
    return (f"| {report['date_utc'][:10]} | {device} | {m['nvpmodel']} | {m['jetson_clocks']} | {m['jetpack']} / "
            f"{m['l4t']} | {m['tensorrt']} | {c['backend']} | {size} | {c['frames']} | "
            f"{d['p50']:.2f} / {d['p90']:.2f} / {d['p99']:.2f} | {t['p50']:.2f} / {t['p90']:.2f} / {t['p99']:.2f} | "
            f"{report['throughput_fps']:.1f} | {gpu_cell} |\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--backend", choices=("onnxruntime", "torch", "tensorrt"), default="tensorrt")
    p.add_argument("--device", default=None, help="default: cuda:0 for tensorrt, cpu otherwise")
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--frame-size", type=int, nargs=2, metavar=("H", "W"), help="camera frame size (default: model size)")
    p.add_argument("--path", choices=tuple(PATHS), default="fast")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of onnxruntime / torch")
    p.add_argument("--cuda-graph", action="store_true", help="tensorrt: replay a captured CUDA graph")
    p.add_argument("--monitor", choices=("auto", "tegrastats", "nvidia-smi", "none"), default="auto")
    p.add_argument("--sample-interval-ms", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the report here")
    p.add_argument("--markdown", help="append a table row here (header written when the file is new)")
    args = p.parse_args(argv)
    if args.frames < 1 or args.warmup < 0:
        p.error("--frames must be >= 1 and --warmup >= 0")
    if args.device is None:
        args.device = "cuda:0" if args.backend == "tensorrt" else "cpu"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print a summary, write ``--json`` / ``--markdown``."""
    args = parse_args(argv)
    report = run(args)
    for stage in STAGES:
        s = report["stages_ms"][stage]
        print(f"{stage:<9} p50 {s['p50']:8.3f}  p90 {s['p90']:8.3f}  p99 {s['p99']:8.3f} ms")
    print(f"throughput {report['throughput_fps']:.1f} frames/s ({args.frames} frames, serial); monitor: "
          f"{report['monitor']['tool']} ({report['monitor']['samples']} samples)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    if args.markdown:
        md = Path(args.markdown)
        with md.open("a") as f:
            if not md.exists() or md.stat().st_size == 0:
                f.write(MD_HEADER)
            f.write(markdown_row(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
