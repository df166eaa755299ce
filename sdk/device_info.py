"""Facts about the machine a model runs on, each read defensively ("unknown" when absent; never raises).

Jetson facts come from the L4T release file (``/etc/nv_tegra_release``), the ``nvidia-l4t-core`` /
``nvidia-jetpack`` package versions, ``nvpmodel -q`` and ``jetson_clocks --show``; datacenter GPUs from
``nvidia-smi``. Used by the engine builder (sidecar ``host``) and ``benchmarks/jetson_latency.py``.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from pathlib import Path

UNKNOWN = "unknown"
L4T_RELEASE_FILE = Path("/etc/nv_tegra_release")


def run_text(cmd: list[str], timeout: float = 5.0) -> str | None:
    """stdout of ``cmd`` (stripped), or None when it is not installed, fails or times out."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def l4t_version(release_file: Path = L4T_RELEASE_FILE) -> str:
    """L4T release from ``# R36 (release), REVISION: 4.3, ...`` -> ``"36.4.3"``; "unknown" off Jetson."""
    try:
        text = release_file.read_text(errors="replace")
    except OSError:
        return UNKNOWN
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{m.group(1)}.{m.group(2)}" if m else UNKNOWN


def package_version(name: str) -> str:
    """Debian package version via ``dpkg-query`` (e.g. ``nvidia-jetpack``), or "unknown"."""
    out = run_text(["dpkg-query", "-W", "-f=${Version}", name])
    return out.split("+")[0] if out else UNKNOWN


def jetpack_version() -> str:
    """JetPack version from the ``nvidia-jetpack`` meta-package, or "unknown"."""
    return package_version("nvidia-jetpack")


def nvpmodel_mode() -> str:
    """Active power mode from ``nvpmodel -q`` (e.g. ``"MAXN (0)"``), or "unknown" (off Jetson / no permission)."""
    out = run_text(["nvpmodel", "-q"])
    if not out:
        return UNKNOWN
    name = re.search(r"NV Power Mode:\s*(\S+)", out)
    number = re.search(r"^\s*(\d+)\s*$", out, re.MULTILINE)
    if name:
        return f"{name.group(1)} ({number.group(1)})" if number else name.group(1)
    return out.splitlines()[0]


def jetson_clocks_state(show_output: str | None = None) -> str:
    """``"locked"`` when ``jetson_clocks --show`` reports GPU min = max frequency, ``"dynamic"`` when not,
    "unknown" when it cannot be read (it usually needs root)."""
    out = show_output if show_output is not None else run_text(["jetson_clocks", "--show"])
    if not out:
        return UNKNOWN
    m = re.search(r"GPU\s+MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)", out)
    if not m:
        return UNKNOWN
    return "locked" if m.group(1) == m.group(2) else "dynamic"


def tensorrt_version() -> str:
    """``tensorrt.__version__`` if it imports, else "unknown"."""
    try:
        import tensorrt

        return str(tensorrt.__version__)
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return UNKNOWN


def nvidia_smi_gpus() -> list[dict[str, str]]:
    """Name, driver and memory of each GPU from ``nvidia-smi`` (empty without one)."""
    out = run_text(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                    "--format=csv,noheader"])
    if not out:
        return []
    keys = ("name", "driver", "memory", "compute_capability")
    return [dict(zip(keys, (p.strip() for p in line.split(",")))) for line in out.splitlines() if line.strip()]


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """CPU model name from ``/proc/cpuinfo`` (x86 ``model name``; Arm ``Model`` / ``Hardware``), or "unknown"."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return UNKNOWN
    for key in ("model name", "Model", "Hardware"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", text, re.MULTILINE)
        if m:
            return m.group(1).strip()
    return UNKNOWN


def host_summary() -> dict[str, object]:
    """All of the above plus machine / OS / Python, JSON-safe."""
    return {"machine": platform.machine(), "cpu": cpu_model(), "system": platform.platform(), "python": platform.python_version(),
            "l4t": l4t_version(), "jetpack": jetpack_version(), "nvpmodel": nvpmodel_mode(),
            "jetson_clocks": jetson_clocks_state(), "tensorrt": tensorrt_version(), "gpus": nvidia_smi_gpus()}
