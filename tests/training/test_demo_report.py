"""The demo's summary.html: the line engineer's table, histograms with the threshold, missed defects and
false alarms as inline thumbnails, no external assets."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from protoinspect.sdk.errors import InputError
from protoinspect.training.datasets import load_dataset
from protoinspect.training.demo_report import (
    CONTOUR_BGR,
    score_histogram_svg,
    thumbnail_with_outline,
    write_demo_summary,
)
from protoinspect.training.evaluate_detector import at_threshold

THRESHOLD = 0.5


def _report(dirs: list[Path], wrong: dict[str, set[str]]) -> dict[str, Any]:
    """An evaluation report of ``dirs`` whose scores are right (0.9 defects, 0.1 good) except for the image
    names in ``wrong[dataset]`` (scored 0.3 when anomalous: missed; 0.7 when good: false alarm)."""
    records: list[dict[str, Any]] = []
    rows: dict[str, Any] = {}
    for d in dirs:
        ds = load_dataset(d)
        recs = []
        for s in ds.test:
            key = f"{s.defect_type}/{s.image_path.name}"
            bad = s.label == 1
            score = (0.3 if bad else 0.7) if key in wrong.get(ds.name, set()) else (0.9 if bad else 0.1)
            recs.append({"path": str(s.image_path), "dataset": ds.name, "label": s.label, "score": score,
                         "defect_type": s.defect_type, "mask": None if s.mask_path is None else str(s.mask_path)})
        labels = np.array([r["label"] for r in recs])
        scores = np.array([r["score"] for r in recs])
        rows[ds.name] = {"image_auroc": 0.9, "aupro": 0.8, "num_test": len(recs), "num_anomalous": int(labels.sum()),
                         "num_normal": int((labels == 0).sum()), **at_threshold(labels, scores, THRESHOLD),
                         "trust": "calibrated on 6 normal images: the true false-alarm rate is below 39 % "
                                  "with 95 % confidence (target 1 %)"}
        records += recs
    return {"bundle_id": "b-123", "image_threshold": THRESHOLD, "datasets": rows, "images": records}


def _thumbnails(page: str) -> list[np.ndarray]:
    uris = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    return [cv2.imdecode(np.frombuffer(base64.b64decode(u), np.uint8), cv2.IMREAD_COLOR) for u in uris]


def test_summary_shows_the_table_histograms_missed_defects_and_false_alarms(tiny_products: list[Path],
                                                                            tmp_path: Path) -> None:
    tile_defect = next(s for s in load_dataset(tiny_products[0]).test if s.label == 1)
    wrong = {"tile": {f"{tile_defect.defect_type}/{tile_defect.image_path.name}", "good/000.png"},
             "washer": {"good/001.png", "good/002.png"}}
    report = _report(tiny_products, wrong)
    path = write_demo_summary(tmp_path / "out", report, links={"inspection": "inspect/report.html"})
    assert path == tmp_path / "out" / "summary.html"
    page = path.read_text(encoding="utf-8")

    # self-contained: nothing fetched from elsewhere
    assert "http" not in page and "<link" not in page and "<script" not in page
    assert not re.search(r"src='(?!data:image/png;base64,)", page)
    # first what the line needs: threshold, trust, then the per-product table with the rates and counts
    assert page.index("Image threshold") < page.index("<table") < page.index("<svg")
    assert "below 39 %" in page
    assert "50.0 % (2/4)" in page  # washer: 2 of 4 good images are false alarms
    assert "83.3 % (5/6)" in page and "25.0 % (1/4)" in page  # tile: one defect of six missed, one alarm
    # one histogram per product, each with the threshold line
    assert page.count("<svg") == 2 and page.count("class='threshold'") == 2
    # exactly the wrong images, as thumbnails with their scores
    assert "tile: 1 missed defect, 1 false alarm" in page and "washer: 0 missed defects, 2 false alarms" in page
    thumbs = _thumbnails(page)
    assert len(thumbs) == 4 and all(t is not None and t.shape[:2] == (64, 64) for t in thumbs)
    assert page.count("score 0.3") == 1 and page.count("score 0.7") == 3
    assert tile_defect.image_path.name in page
    # the missed defect (first thumbnail) has its ground-truth outline drawn in, a good image has none
    outline = np.all(thumbs[0] == CONTOUR_BGR, axis=2)
    assert outline.any()
    mask = cv2.imread(str(tile_defect.mask_path), cv2.IMREAD_GRAYSCALE) > 127
    ys, xs = np.nonzero(outline)
    assert mask[ys, xs].mean() > 0.9  # the outline runs along the defect
    assert "inspect/report.html" in page


def test_summary_caps_thumbnails_per_group(tiny_products: list[Path], tmp_path: Path) -> None:
    goods = {f"good/{i:03d}.png" for i in range(4)}
    report = _report(tiny_products[1:], {"washer": goods})
    page = write_demo_summary(tmp_path, report, per_group=3).read_text(encoding="utf-8")
    assert len(_thumbnails(page)) == 3 and "and 1 more" in page
    assert page.count("score 0.7") == 3


def test_summary_needs_per_image_records(tiny_products: list[Path], tmp_path: Path) -> None:
    report = _report(tiny_products, {})
    with pytest.raises(InputError, match="per_image=True"):
        write_demo_summary(tmp_path, {k: v for k, v in report.items() if k != "images"})
    bad = {**report, "images": [{**report["images"][0], "dataset": "elsewhere"}]}
    with pytest.raises(InputError, match="dataset"):
        write_demo_summary(tmp_path, bad)
    assert not (tmp_path / "summary.html").exists()


def test_histogram_bars_and_threshold_position() -> None:
    svg = score_histogram_svg([0.0, 0.1, 0.1, 0.2], [0.8, 1.0], 0.5, bins=10, width=220)
    heights = [float(h) for h in re.findall(r"<rect class='bar'[^>]*height='([0-9.]+)'", svg)]
    assert len(heights) == 5  # 3 good bins (0.0, 0.1 twice, 0.2) and 2 anomalous bins
    assert max(heights) == pytest.approx(2 * min(heights), rel=1e-3)  # the two 0.1 scores share a bar
    x = float(re.search(r"class='threshold' x1='([0-9.]+)'", svg).group(1))
    # plot 8..212 px over [-0.05, 1.05]: 0.5 sits at 8 + 0.55 / 1.1 * 204
    assert x == pytest.approx(8 + 0.55 / 1.1 * 204, abs=0.1)
    with pytest.raises(InputError):
        score_histogram_svg([], [], 0.5)
    with pytest.raises(InputError):
        score_histogram_svg([0.1, float("nan")], [], 0.5)


def test_thumbnail_of_a_gray_image_gets_colour_and_outline(tmp_path: Path) -> None:
    img = np.full((40, 60), 90, np.uint8)
    mask = np.zeros((40, 60), np.uint8)
    mask[10:20, 30:45] = 255
    cv2.imwrite(str(tmp_path / "a.png"), img)
    cv2.imwrite(str(tmp_path / "a_mask.png"), mask)
    t = thumbnail_with_outline(tmp_path / "a.png", tmp_path / "a_mask.png", max_side=30)
    assert t.shape == (20, 30, 3) and np.all(t == CONTOUR_BGR, axis=2).any()
    plain = thumbnail_with_outline(tmp_path / "a.png", None)
    assert plain.shape == (40, 60, 3) and not np.all(plain == CONTOUR_BGR, axis=2).any()


@pytest.mark.slow
def test_demo_writes_the_summary_and_prints_its_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from protoinspect.pipelines.demo import main

    tiny = ["crop=32", "steps=4", "batch=2", "checkpoint_every=4", "min_holdout=2", "detector.num_prototypes=16",
            "detector.embed_dim=32", "detector.num_heads=2", "detector.blur_sigma=1.0", "num_threads=1",
            "device=cpu"]
    out = tmp_path / "demo"
    args = ["--out", str(out), "--size", "64", "--num-train", "6", "--products", "washer", "--no-inspect", "--quiet"]
    assert main([*args, *[a for s in tiny for a in ("--set", s)]]) == 0
    summary = out / "summary.html"
    assert f"summary: {summary}" in capsys.readouterr().out
    page = summary.read_text(encoding="utf-8")
    metrics = json.loads((out / "metrics.json").read_text())
    assert "images" not in metrics  # the per-image scores feed the page, not metrics.json
    row = metrics["datasets"]["washer"]
    assert f"({row['num_defects_caught']}/{row['num_anomalous']})" in page
    assert f"({row['num_false_alarms']}/{row['num_normal']})" in page
    assert row["trust"] and row["trust"] in page.replace("&#x27;", "'")
    wrong = (row["num_anomalous"] - row["num_defects_caught"]) + row["num_false_alarms"]
    detector_part, discovery_part = page.split("<h2>Discovered defect types</h2>")
    assert len(_thumbnails(detector_part)) == wrong  # at most 24 missed and 12 false alarms: under the cap
    assert page.count("<svg") == 1
    # the demo discovers the product's defect types by default: every defect image in a class gallery
    assert len(_thumbnails(discovery_part)) == row["num_anomalous"] == metrics["discovery"]["products"]["washer"]["num_images"]


def test_discovery_section_has_a_gallery_per_class_captioned_with_the_true_type(tiny_products: list[Path]) -> None:
    from protoinspect.training.demo_discovery_report import discovery_section_html, format_discovery_table

    ds = load_dataset(tiny_products[0])
    defects = [s for s in ds.test if s.label == 1]
    recs = [{"path": str(s.image_path), "mask": str(s.mask_path), "defect_type": s.defect_type,
             "class_id": i % 2, "class_name": f"novel-{i % 2 + 1}", "score": 0.5} for i, s in enumerate(defects)]
    result = {"nmi": 0.5, "ari": 0.25, "f1": 0.5, "k_novel_estimated": 2, "k_estimated": 2, "k_true": 6,
              "num_images": len(recs), "seconds": 1.0}
    discovery = {"products": {ds.name: result}, "mean": {"nmi": 0.5, "ari": 0.25, "f1": 0.5}}
    html_ = discovery_section_html(discovery, {ds.name: recs})
    assert html_.startswith("<h2>Discovered defect types</h2>") and f"<h3>{ds.name}: K 2/6" in html_
    assert html_.count("<h4>novel-") == 2 and len(_thumbnails(html_)) == len(recs)
    assert all(f"<figcaption>{s.defect_type}<br>" in html_ for s in defects)
    table = format_discovery_table(discovery)
    assert f"{ds.name}" in table and "2/6" in table and "0.500" in table and "mean" in table
    with pytest.raises(InputError, match="class_id"):
        discovery_section_html(discovery, {ds.name: [{"path": recs[0]["path"], "defect_type": "crack"}]})
