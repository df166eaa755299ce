"""benchmarks/jetson_latency.py on this CPU (onnxruntime, tiny bundle) and its parsers; sdk/device_info.py."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from detector_bundles import make_exported_bundle

from protoinspect.sdk import device_info

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import jetson_latency as jl  # noqa: E402

TEGRASTATS_ORIN = (
    "11-22-2026 21:00:00 RAM 2448/30536MB (lfb 6x4MB) SWAP 0/15268MB (cached 0MB) "
    "CPU [2%@729,1%@729,0%@729,5%@729,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 45%@[305,305] VIC_FREQ 729 APE 174 "
    "CPU@46.281C Tboard@35C GPU@43.781C tj@46.281C VDD_GPU_SOC 2394mW/2390mW VDD_CPU_CV 399mW/399mW "
    "VIN_SYS_5V0 3133mW/3133mW"
)
TEGRASTATS_XAVIER = "RAM 1500/7772MB CPU [10%@1190,20%@1190] GR3D_FREQ 7%@114 GPU@38C POM_5V_GPU 123/456 POM_5V_IN 2000/2100"
CLOCKS_LOCKED = "SOC family:tegra234  Machine:Jetson AGX Orin\nGPU MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000\n"
CLOCKS_DYNAMIC = "GPU MinFreq=306000000 MaxFreq=1300500000 CurrentFreq=306000000\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_exported_bundle(tmp_path_factory.mktemp("jl") / "bundle", np.random.default_rng())


def test_script_runs_on_cpu_with_onnxruntime(tiny: Path, tmp_path: Path) -> None:
    out, md = tmp_path / "r.json", tmp_path / "latency.md"
    cmd = [sys.executable, "benchmarks/jetson_latency.py", "--bundle", str(tiny), "--backend", "onnxruntime",
           "--frames", "20", "--warmup", "2", "--threads", "1", "--frame-size", "96", "128", "--json", str(out),
           "--markdown", str(md)]
    for _ in range(2):
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert "throughput" in proc.stdout and "detect" in proc.stdout
    report = json.loads(out.read_text())
    for stage in jl.STAGES:
        s = report["stages_ms"][stage]
        assert 0 <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"]
    assert report["stages_ms"]["detect"]["p50"] > 0 and report["stages_ms"]["regions"]["max"] == 0  # fast path
    assert report["throughput_fps"] > 0 and report["config"]["frame_size"] == [96, 128]
    assert report["config"]["input_size"] == [64, 64] and report["config"]["backend_info"]["backend"] == "onnxruntime"
    machine = report["machine"]
    for key in ("nvpmodel", "jetson_clocks", "jetpack", "l4t", "tensorrt"):
        assert isinstance(machine[key], str) and machine[key]  # "unknown" here, never missing
    assert report["monitor"]["tool"] in ("none", "nvidia-smi", "tegrastats")
    lines = md.read_text().splitlines()
    assert lines[0].startswith("| date | device") and len(lines) == 4  # header (2 lines) + one row per run
    assert "| onnxruntime | 64x64 | 20 |" in lines[2]


def test_parse_tegrastats_orin_and_xavier() -> None:
    s = jl.parse_tegrastats(TEGRASTATS_ORIN)
    assert s["gpu_load_pct"] == 45 and s["cpu_load_pct"] == pytest.approx(2.0)
    assert s["vdd_gpu_soc_mw"] == 2394 and s["vin_sys_5v0_mw"] == 3133 and s["gpu_c"] == pytest.approx(43.781)
    x = jl.parse_tegrastats(TEGRASTATS_XAVIER)
    assert x["gpu_load_pct"] == 7 and x["pom_5v_gpu_mw"] == 123 and x["cpu_load_pct"] == 15 and x["gpu_c"] == 38
    assert jl.parse_tegrastats("garbage") == {}


def test_parse_nvidia_smi() -> None:
    assert jl.parse_nvidia_smi("45, 123.45, 50, 1234") == {"gpu_load_pct": 45, "gpu_power_w": 123.45,
                                                           "gpu_temp_c": 50, "gpu_mem_mib": 1234}
    assert jl.parse_nvidia_smi("45, [N/A], 50, 1234") == {"gpu_load_pct": 45, "gpu_temp_c": 50, "gpu_mem_mib": 1234}


def test_monitor_samples_in_a_background_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    with jl.Monitor("none") as quiet:
        pass
    assert quiet.samples == [] and quiet.summary() == {} and quiet.command() is None
    assert jl.Monitor("nvidia-smi", 250).command()[-2:] == ["-lms", "250"]
    script = f"import time\nfor _ in range(3):\n    print({TEGRASTATS_ORIN!r}, flush=True)\n    time.sleep(0.05)\n"
    monkeypatch.setattr(jl.Monitor, "command", lambda self: [sys.executable, "-c", script])
    with jl.Monitor("tegrastats", 50) as mon:
        for _ in range(100):
            if len(mon.samples) == 3:
                break
            time.sleep(0.05)
    assert len(mon.samples) == 3 and mon.summary()["gpu_load_pct"] == {"mean": 45.0, "max": 45.0}


def test_percentiles_and_markdown_row() -> None:
    p = jl.percentiles(list(range(1, 101)))
    assert p["p50"] == pytest.approx(50.5) and p["p99"] == pytest.approx(99.01) and p["max"] == 100
    assert math.isnan(jl.percentiles([])["p50"])
    stages = {s: {"p50": 1.0, "p90": 2.0, "p99": 3.0, "mean": 1.5, "max": 4.0} for s in jl.STAGES}
    report = {"date_utc": "2026-11-22T00:00:00Z", "throughput_fps": 250.0, "stages_ms": stages,
              "machine": {"gpus": [], "machine": "aarch64", "cpu": "ARMv8", "nvpmodel": "MAXN (0)",
                          "jetson_clocks": "locked", "jetpack": "6.2", "l4t": "36.4.3", "tensorrt": "10.3.0"},
              "config": {"backend": "tensorrt", "input_size": [256, 256], "frames": 1000,
                         "backend_info": {"gpu": "Orin"}},
              "monitor": {"summary": {"gpu_load_pct": {"mean": 61.0, "max": 80.0},
                                      "vdd_gpu_soc_mw": {"mean": 5321.0, "max": 6000.0}}}}
    assert jl.markdown_row(report) == (
        "| 2026-11-22 | Orin | MAXN (0) | locked | 6.2 / 36.4.3 | 10.3.0 | tensorrt | 256x256 | 1000 | "
        "1.00 / 2.00 / 3.00 | 1.00 / 2.00 / 3.00 | 250.0 | 61 % / 5321.0 |\n")


def test_device_info_readers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n")
    assert device_info.l4t_version(release) == "36.4.3"
    assert device_info.l4t_version(tmp_path / "missing") == "unknown"
    assert device_info.jetson_clocks_state(CLOCKS_LOCKED) == "locked"
    assert device_info.jetson_clocks_state(CLOCKS_DYNAMIC) == "dynamic"
    assert device_info.jetson_clocks_state("") == "unknown"
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: ARMv8 Processor rev 1 (v8l)\n")
    assert device_info.cpu_model(cpuinfo) == "ARMv8 Processor rev 1 (v8l)"
    monkeypatch.setattr(device_info, "run_text", lambda cmd, timeout=5.0: "NV Power Mode: MAXN\n0")
    assert device_info.nvpmodel_mode() == "MAXN (0)"
    monkeypatch.setattr(device_info, "run_text", lambda cmd, timeout=5.0: None)
    assert device_info.nvpmodel_mode() == device_info.jetpack_version() == "unknown"
    assert device_info.nvidia_smi_gpus() == []
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert device_info.tensorrt_version() == "unknown"
    assert device_info.run_text(["surely-not-a-command-xyz"]) is None
