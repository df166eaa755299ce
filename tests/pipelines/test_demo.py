"""The README's main command (``protoinspect demo``) end to end, at a CI size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from protoinspect.pipelines.demo import main, run_demo
from protoinspect.sdk.errors import ConfigError

from tiny_configs import TINY_DISCOVERY  # noqa: E402

SMALL = ["crop=32", "steps=4", "batch=4", "checkpoint_every=4", "min_holdout=2", "detector.num_prototypes=16", "detector.embed_dim=32",
         "detector.num_heads=2", "detector.blur_sigma=1.0", "num_threads=1"]


@pytest.mark.slow
def test_demo_trains_exports_evaluates_and_inspects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    args = ["--out", str(out), "--size", "64", "--num-train", "8", "--products", "tile", "washer", "--quiet",
            "--no-discover"]
    assert main([*args, *[a for s in SMALL for a in ("--set", s)]]) == 0
    printed = capsys.readouterr().out
    assert "report:" in printed and "total:" in printed
    assert "discovery" not in printed and not (out / "discovery").exists()
    assert "Discovered defect types" not in (out / "summary.html").read_text()
    assert (out / "bundle" / "detector.onnx").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["datasets"]) == {"tile", "washer"} and "discovery" not in metrics
    report = out / "inspect" / "report.html"
    assert report.is_file() and str(report) in printed
    lines = (out / "inspect" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 * (12 + 6 * 4)  # every synthetic test frame, in order
    assert [json.loads(line)["frame_index"] for line in lines] == list(range(len(lines)))


@pytest.mark.slow
def test_demo_discovers_defect_types_without_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    args = ["--out", str(out), "--size", "64", "--num-train", "8", "--products", "tile", "washer",
            "--discover-products", "washer", "--no-inspect", "--quiet"]
    sets = [a for s in SMALL for a in ("--set", s)] + [a for s in TINY_DISCOVERY for a in ("--discovery-set", s)]
    assert main([*args, *sets]) == 0
    printed = capsys.readouterr().out
    assert "defect-type discovery" in printed and "K est/true" in printed
    assert any(line.startswith("washer") and "/6" in line for line in printed.splitlines())
    assert any(line.startswith("mean") for line in printed.splitlines())
    disc = json.loads((out / "metrics.json").read_text())["discovery"]
    assert list(disc["products"]) == ["washer"]  # only the product asked for
    r = disc["products"]["washer"]
    assert r["k_true"] == 6 and r["num_images"] == 6 * 4 and r["k_novel_estimated"] == r["k_estimated"] >= 2
    assert all(-1.0 <= r[k] <= 1.0 for k in ("nmi", "ari", "f1")) and r["seconds"] >= r["train_seconds"] > 0
    assert disc["mean"]["nmi"] == pytest.approx(r["nmi"])
    assert "contrastive_steps=6" in disc["overrides"] and "num_threads=1" in disc["overrides"]
    assert (out / "discovery" / "washer" / "classifier.safetensors").is_file()
    page = (out / "summary.html").read_text()
    section = page[page.index("<h2>Discovered defect types</h2>"):]
    assert "<h3>washer: K " in section
    # one gallery per discovered class; every anomalous test image once, captioned with its true type
    assert section.count("<h4>novel-") == len({name for row in r["confusion"].values() for name in row})
    assert section.count("<figure>") == 24 and section.count("<figcaption>crack<br>") == 4


def test_demo_refuses_unknown_discover_products(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "d"), "--products", "tile", "--discover-products", "tile", "gear"])
    err = capsys.readouterr().err
    assert "gear" in err and "['tile']" in err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "d"), "--no-discover", "--discover-products", "tile"])
    with pytest.raises(ConfigError, match=r"washer.*not among the demo's products \['tile'\]"):
        run_demo(tmp_path / "d", products=["tile"], discover_products=["washer"], progress=False)
    with pytest.raises(ConfigError, match="jitters"):
        run_demo(tmp_path / "d", products=["tile"], discovery_overrides=["jitters=0"], progress=False)
    assert not (tmp_path / "d").exists()  # refused before any work
