"""benchmarks/bench_classification.py on the tiny discovery bundle: every anomalous frame is classified and
the stage timings are reported as medians."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("protoinspect_bench_cls", ROOT / "benchmarks" / "bench_classification.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reports_stage_medians(discovery_bundle: tuple[Path, Path], discovery_tile: Path, tmp_path: Path) -> None:
    bench = _module()
    frames = bench.anomalous_frames(discovery_tile, 3)
    assert len(frames) == 3 and all(f.ndim == 3 for f in frames)
    out = tmp_path / "cls.json"
    assert bench.main(["--bundle", str(discovery_bundle[1]), "--data", str(discovery_tile), "--limit", "2",
                       "--rounds", "1", "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["frames"] == 2 and report["classify"]["p50"] > 0
    assert report["classification"]["p50"] >= report["classify"]["p50"]
    with pytest.raises(SystemExit, match="no anomalous"):
        bench.anomalous_frames(tmp_path, 3)
