"""Load a script of ``benchmarks/`` (plain scripts, not a package) as a module, for tests/benchmarks."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` imported under the name ``protoinspect_bench_<name>``."""
    spec = importlib.util.spec_from_file_location(f"protoinspect_bench_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
