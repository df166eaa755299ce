"""Runs tests/kernels on CPU in a separate pytest process under the Triton interpreter, plus import-time checks.

TRITON_INTERPRET is read when ``@triton.jit`` decorates (at import), so it cannot be switched on inside this
process; CI gets the kernel tests through this file.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from import_probe import loaded_after

ROOT = Path(__file__).resolve().parents[2]
HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (pip install 'protoinspect[triton]')")


def _python(code: str, **env: str | None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key, value in env.items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=120, check=False)


@needs_triton
def test_kernel_tests_pass_under_the_interpreter() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/kernels",
           "--ignore", "tests/kernels/test_interpreted_run.py"]  # not itself: it starts this very process
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, f"TRITON_INTERPRET=1 {' '.join(cmd[1:])} failed:\n{proc.stdout}\n{proc.stderr}"


def test_importing_kernels_imports_neither_triton_nor_torch() -> None:
    assert loaded_after("import protoinspect.kernels", ("triton", "torch")) == []


def test_missing_triton_names_the_extra() -> None:
    """The kernels raise their own ImportError subclass; the models surface it as MissingDependencyError."""
    proc = _python("import sys, torch\nsys.modules['triton'] = None  # as if not installed\n"
                   "from protoinspect.kernels.errors import TritonNotInstalledError\n"
                   "try:\n    from protoinspect.kernels import prototype_attention\n"
                   "except TritonNotInstalledError as exc:\n    print('kernels:', isinstance(exc, ImportError), exc)\n"
                   "from protoinspect.sdk.errors import MissingDependencyError\n"
                   "from protoinspect.sdk.models.prototype_detector import DetectorConfig, PrototypeDetectorNet\n"
                   "cfg = DetectorConfig(embed_dim=32, num_heads=2, num_prototypes=8, num_layers=1,\n"
                   "                     attention_impl='triton')\n"
                   "net = PrototypeDetectorNet(cfg).eval()\n"
                   "try:\n    net(torch.zeros(1, 3, 32, 32))\n"
                   "except MissingDependencyError as exc:\n    print('sdk:', exc)\n",
                   TRITON_INTERPRET="1")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("kernels: True") and lines[1].startswith("sdk:"), proc.stdout
    for line in lines:
        assert 'pip install "protoinspect[triton]"' in line, line


@needs_triton
def test_cpu_launch_without_interpreter_says_what_to_do() -> None:
    """Without TRITON_INTERPRET the kernels reject CPU tensors with a clear message (not '0 active drivers')."""
    code = ("import torch\nfrom protoinspect.kernels import prototype_attention, region_guided_attention\n"
            "import protoinspect.kernels.region_guided_attention_kernel\n"
            "assert protoinspect.kernels.region_guided_attention is region_guided_attention  # the launcher\n"
            "x = torch.randn(1, 1, 4, 16)\n"
            "for call in (lambda: prototype_attention(x, x[0], x[0]),\n"
            "             lambda: region_guided_attention(x, x, x, torch.zeros(1, 1, 4))):\n"
            "    try:\n        call()\n    except ValueError as exc:\n        print(type(exc).__name__, exc)\n")
    proc = _python(code, TRITON_INTERPRET=None)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2, proc.stdout
    for line in lines:
        assert line.startswith("KernelInputError") and "need CUDA tensors" in line and "TRITON_INTERPRET=1" in line, line
