"""The README's main command (``protoinspect demo``) end to end, at a CI size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protoinspect.pipelines.demo import main

SMALL = ["crop=32", "steps=4", "batch=4", "checkpoint_every=4", "min_holdout=2", "detector.num_prototypes=16", "detector.embed_dim=32",
         "detector.num_heads=2", "detector.blur_sigma=1.0", "num_threads=1"]


@pytest.mark.slow
def test_demo_trains_exports_evaluates_and_inspects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    args = ["--out", str(out), "--size", "64", "--num-train", "8", "--products", "tile", "washer", "--quiet"]
    assert main([*args, *[a for s in SMALL for a in ("--set", s)]]) == 0
    printed = capsys.readouterr().out
    assert "report:" in printed and "total:" in printed
    assert (out / "bundle" / "detector.onnx").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["datasets"]) == {"tile", "washer"}
    report = out / "inspect" / "report.html"
    assert report.is_file() and str(report) in printed
    lines = (out / "inspect" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 * (12 + 6 * 4)  # every synthetic test frame, in order
    assert [json.loads(line)["frame_index"] for line in lines] == list(range(len(lines)))
