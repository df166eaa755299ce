"""benchmarks/load_triton.py on a tiny exported bundle: 1 and 2 cameras for a second, the report's structure,
nothing lost or reordered, results equal to in-process; the checker catches swapped answers. The triton mode
runs when the PyTriton server venv exists (``bash .ci/triton_env``), else it skips with the reason."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from benchmark_scripts import load_script
from detector_bundles import make_exported_bundle

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--cameras", "1", "2", "--seconds", "1", "--size", "64", "--pool", "8", "--warmup", "1"]


def _module() -> ModuleType:
    return load_script("load_triton")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny (64x64) detector bundle with detector.onnx."""
    return make_exported_bundle(tmp_path_factory.mktemp("load") / "bundle", np.random.default_rng(6))


def _check_runs(report: dict[str, Any], modes: list[str]) -> None:
    assert [(r["mode"], r["cameras"]) for r in report["runs"]] == [(m, n) for n in (1, 2) for m in modes]
    for r in report["runs"]:
        assert r["ok"] and r["first_error"] is None, r
        assert r["inspected"] > 0 and 0 < r["fps"] and 0 < r["fps_total"] and r["elapsed_s"] >= 1.0
        assert r["lost"] == r["reordered"] == r["mismatched"] == r["failed"] == r["dropped"] == 0
        assert r["sent"] == r["received"] == r["inspected"]
        assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"] <= r["latency_ms"]["max"]
        assert 0 < r["service_ms"]["p50"] <= r["latency_ms"]["max"]
        cams = r["per_camera"]
        assert [c["camera"] for c in cams] == list(range(r["cameras"]))
        assert all(c["sent"] == c["received"] > 0 and c["lost"] == c["reordered"] == 0 for c in cams)
        assert sum(c["inspected"] for c in cams) == r["inspected"]


def test_in_process_modes(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    load = _module()
    out = tmp_path / "load.json"
    modes = ["inprocess", "per-core", "per-thread"]
    code = load.main(["--bundle", str(bundle), *QUICK, "--modes", *modes, "--json", str(out)])
    assert code == 0, capsys.readouterr().out
    report = json.loads(out.read_text())
    _check_runs(report, modes)
    assert report["ok"] and report["targets"] == {} and report["machine"]["cpus"] >= 1
    assert report["frames"] == {"source": "random seed 0", "pool": 8, "shape": [64, 64, 3]}
    assert report["settings"]["drop_policy"] == "block" and report["settings"]["seconds"] == 1.0
    by = {(r["mode"], r["cameras"]): r for r in report["runs"]}
    assert by[("inprocess", 2)]["inspectors"] == 1 and by[("per-thread", 2)]["inspectors"] == 2
    assert by[("per-core", 2)]["ort_threads"] == 1
    text = capsys.readouterr().out
    assert "per-thread" in text and "cam fps min-max" in text and "wall" in text


def test_swapped_answers_are_caught(bundle: Path) -> None:
    """An inspector that answers every frame with the previous frame's result: differs and reordered."""
    load = _module()
    cams = load.load_cameras
    pool = cams.random_pool(6, (64, 64, 3), 1)
    with load._inspector(str(bundle), 1) as insp:
        reference = cams.Reference.compute(insp.inspect, pool)
        previous: list[np.ndarray] = []

        def late(frame: np.ndarray) -> Any:
            previous.append(frame)
            return insp.inspect(previous[-2] if len(previous) > 1 else frame)

        settings = cams.StreamSettings(seconds=None, frames_per_camera=5, warmup=0)
        stats, elapsed = cams.run_cameras([late], pool, reference, settings)
    summary = cams.aggregate(stats, elapsed)
    assert summary["sent"] == summary["received"] == 5 and summary["lost"] == 0
    assert summary["mismatched"] == 4 and summary["reordered"] == 4 and not summary["ok"]
    assert "differs from in-process" in summary["first_error"]


def test_bad_arguments(bundle: Path, tmp_path: Path) -> None:
    load = _module()
    assert load.main(["--bundle", str(tmp_path)]) == 2  # no detector.onnx
    assert load.main(["--bundle", str(bundle), "--cameras", "0"]) == 2
    assert load.main(["--bundle", str(bundle), "--parity-run", "--triton-env", str(tmp_path / "none")]) == 2


def test_triton_mode(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    load = _module()
    env = os.environ.get("PROTOINSPECT_TRITON_ENV") or str(ROOT / ".cache" / "triton-venv")
    reason = load.triton_unavailable(env)
    if reason:
        pytest.skip(f"no PyTriton server environment ({reason}); CI: `bash .ci/triton_env`")
    out = tmp_path / "load.json"
    code = load.main(["--bundle", str(bundle), *QUICK, "--modes", "triton", "--instances", "1", "--max-batch", "4",
                      "--triton-env", env, "--json", str(out)])
    assert code == 0, capsys.readouterr().out
    report = json.loads(out.read_text())
    _check_runs(report, ["triton"])
    assert report["server"]["instances"] == 1 and report["server"]["max_batch_size"] == 4
    assert report["skipped"] == {}
    assert all(r["protocol"] == "grpc" and r["url"].startswith("127.0.0.1:") for r in report["runs"])
