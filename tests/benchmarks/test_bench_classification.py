"""benchmarks/bench_classification.py on the tiny discovery bundle: every anomalous frame is classified and
the stage timings are reported as medians."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("onnxruntime")

from benchmark_scripts import load_script



def _module() -> ModuleType:
    return load_script("bench_classification")


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
