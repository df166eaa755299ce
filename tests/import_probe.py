"""Which heavy modules a snippet of code imports, run in a fresh interpreter outside the repository.

The probe runs with the working directory outside the checkout, so the only ``protoinspect`` it can
import is the installed one (the repository root's folders are not importable as top-level names).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

#: module-name prefixes the torch-free runtime must not load
RUNTIME_FORBIDDEN = ("torch", "onnxruntime", "protoinspect.export", "protoinspect.training")


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code`` in a fresh interpreter whose working directory is a temporary folder."""
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, check=False)


def loaded_after(code: str, prefixes: tuple[str, ...]) -> list[str]:
    """Sorted names of the modules matching ``prefixes`` (a name or a dotted parent) loaded after ``code``."""
    probe = (
        f"import sys, json\n{code}\n"
        f"prefixes = {prefixes!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if any(m == p or m.startswith(p + '.') for p in prefixes))))\n"
    )
    proc = run_python(probe)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])
