"""benchmarks/soak.py on a tiny exported bundle: 30 frames, the summary says nothing was lost or reordered."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from benchmark_scripts import load_script
from detector_bundles import make_exported_bundle



def _soak_module() -> ModuleType:
    return load_script("soak")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny (64x64) detector bundle with detector.onnx."""
    return make_exported_bundle(tmp_path_factory.mktemp("soak") / "bundle", np.random.default_rng(5))


def test_soak_script_30_frames(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    soak = _soak_module()
    summary_path, jsonl = tmp_path / "summary.json", tmp_path / "results.jsonl"
    code = soak.main(["--bundle", str(bundle), "--frames", "30", "--warmup", "3", "--threads", "1",
                      "--jsonl", str(jsonl), "--summary", str(summary_path)])
    assert code == 0, capsys.readouterr().out
    summary = json.loads(summary_path.read_text())
    assert summary["frames"] == 30 and summary["lines"] == 30 and summary["warmup"] == 3
    assert summary["no_loss"] and summary["indices_increasing"] and summary["ids_in_order"] and summary["ok"]
    assert summary["first_error"] is None and summary["backend"] == "onnxruntime"
    assert summary["rss_after_warmup_mb"] > 0 and summary["rss_final_mb"] > 0
    assert isinstance(summary["rss_growth_pct"], float)
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["frame_index"] for r in records] == list(range(3, 33))  # warm-up frames counted by the Inspector
    assert [r["id"] for r in records] == [soak.frame_id(i) for i in range(30)]
    assert sum(summary["verdicts"].values()) == 30
    out = capsys.readouterr().out
    assert "check no frame lost (30/30 lines): PASS" in out and "growth" in out


def test_soak_verify_detects_loss_and_reorder(tmp_path: Path) -> None:
    soak = _soak_module()
    path = tmp_path / "r.jsonl"
    rows = [{"id": soak.frame_id(i), "frame_index": i} for i in range(5)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert soak.verify_jsonl(path, 5)["count_ok"] and soak.verify_jsonl(path, 5)["order_ok"]
    assert not soak.verify_jsonl(path, 6)["count_ok"]  # a frame lost
    swapped = [rows[0], rows[2], rows[1], rows[3], rows[4]]
    path.write_text("".join(json.dumps(r) + "\n" for r in swapped))
    check = soak.verify_jsonl(path, 5)
    assert not check["order_ok"] and not check["ids_ok"] and check["first_error"]
