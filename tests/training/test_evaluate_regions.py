"""evaluate_regions: report structure and ranges on the tiny synthetic product, and the GT-descriptor
baseline on a constructed easy case (thin lines vs round blobs)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from protoinspect.sdk.errors import ConfigError, DatasetError
from protoinspect.training.evaluate_regions import evaluate_regions, main, subset

QUALITY_RATES = ("image_iou_mean", "image_iou_median", "miss_rate", "false_region_rate", "empty_prediction_rate")


def _check_quality(q: dict, n: int) -> None:
    assert q["num_images"] == n and q["miss_iou"] == 0.1
    for key in QUALITY_RATES + ("region_iou_mean", "region_coverage_mean"):
        assert q[key] is None or 0.0 <= q[key] <= 1.0, key
    assert q["num_gt_regions"] >= 1 and q["pred_regions_per_image"] >= 0


@pytest.mark.parametrize("which", [0, 1], ids=["detector-threshold", "discovery-mebin"])
def test_report_structure(discovery_bundle: tuple[Path, Path], discovery_tile: Path, tmp_path: Path,
                          which: int) -> None:
    out = tmp_path / "r.json"
    assert main(["--data", str(discovery_tile), "--bundle", str(discovery_bundle[which]), "--json", str(out),
                 "--seeds", "2", "--quiet"]) == 0
    r = json.loads(out.read_text())
    assert r["region_method"] == ("threshold", "peak")[which]
    n = r["num_images"]
    assert n == sum(r["types"].values()) and n >= 4 and 0 <= r["flagged_by_detector"] <= n
    for key in ("region_quality", "region_quality_all_components", "runtime_quality"):
        _check_quality(r[key], n)
    q, every = r["region_quality"], r["region_quality_all_components"]
    assert every["num_pred_regions"] >= q["num_pred_regions"]  # the area filter only removes regions
    assert r["runtime_quality"]["num_pred_regions"] <= q["num_pred_regions"]
    assert set(r["region_quality_by_type"]) == set(r["types"])
    base = r["baseline"]
    assert base["k"] == len(r["types"]) and base["gt"]["seeds"] == 2 and base["gt_shape"]["k"] == base["k"]
    for name in ("nmi", "ari", "f1"):
        assert -1.0 <= base["gt"][name] <= 1.0
    assert 0 <= base["num_images_with_region"] <= n
    assert r["seconds"]["regions_ms_per_image"] >= 0


def _easy_dataset(root: Path, n: int, rng: np.random.Generator) -> Path:
    """MVTec layout, 64 px: ``scratch`` (thin dark lines) vs ``spot`` (round dark blobs)."""
    size = 64
    for split, kind in (("train", "good"), ("test", "good")):
        (root / split / kind).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(root / split / kind / f"{i:03d}.png"), rng.integers(100, 140, (size, size), dtype=np.uint8))
    for kind in ("scratch", "spot"):
        (root / "test" / kind).mkdir(parents=True)
        (root / "ground_truth" / kind).mkdir(parents=True)
        for i in range(n):
            img = rng.integers(100, 140, (size, size), dtype=np.uint8)
            mask = np.zeros((size, size), np.uint8)
            if kind == "scratch":
                x0, y0 = (int(v) for v in rng.integers(5, 20, 2))
                x1, y1 = (int(v) for v in rng.integers(40, 59, 2))
                cv2.line(mask, (x0, y0), (x1, y1), 255, 1)
                img[mask > 0] = 40
            else:
                c = tuple(int(v) for v in rng.integers(16, 48, 2))
                cv2.circle(mask, c, int(rng.integers(4, 9)), 255, -1)
                img[mask > 0] = 40  # as dark as the scratches: the shape must separate them
            cv2.imwrite(str(root / "test" / kind / f"{i:03d}.png"), img)
            cv2.imwrite(str(root / "ground_truth" / kind / f"{i:03d}_mask.png"), mask)
    return root


def test_gt_descriptors_cluster_an_easy_case(discovery_bundle: tuple[Path, Path], tmp_path: Path,
                                             rng: np.random.Generator) -> None:
    data = _easy_dataset(tmp_path / "easy", 8, rng)
    r = evaluate_regions(data, discovery_bundle[0], seeds=3, progress=False)
    gt = r["baseline"]["gt"]
    assert r["types"] == {"scratch": 8, "spot": 8} and gt["num_images"] == 16 and gt["k"] == 2
    assert gt["nmi"] > 0.6 and gt["f1"] > 0.9  # chance: NMI ~0, F1 ~0.5-0.6
    limited = evaluate_regions(data, discovery_bundle[0], limit=4, seeds=1, progress=False)
    assert limited["types"] == {"scratch": 2, "spot": 2}


def test_subset_and_errors(discovery_bundle: tuple[Path, Path], tmp_path: Path) -> None:
    assert subset(10, None) == list(range(10)) and subset(10, 3) == [0, 4, 9] and subset(3, 5) == [0, 1, 2]
    with pytest.raises(DatasetError):
        subset(10, 0)
    root = tmp_path / "nodefects"
    for split in ("train", "test"):
        (root / split / "good").mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(root / split / "good" / f"{i}.png"), np.full((32, 32), 100, np.uint8))
    assert main(["--data", str(root), "--bundle", str(discovery_bundle[0]), "--quiet"]) != 0


def test_region_method_override_on_a_detector_bundle(discovery_bundle: tuple[Path, Path], discovery_tile: Path) -> None:
    runtime = evaluate_regions(discovery_tile, discovery_bundle[0], seeds=1, progress=False)
    peak = evaluate_regions(discovery_tile, discovery_bundle[0], seeds=1, progress=False, region_method="peak")
    assert runtime["region_method"] == "threshold" and peak["region_method"] == "peak"
    # the peak component gives every anomalous map with a positive maximum a region
    assert peak["baseline"]["num_images_with_region"] >= runtime["baseline"]["num_images_with_region"]
    assert peak["baseline"]["num_images_with_region"] == peak["num_images"]
    with pytest.raises(ConfigError, match="region method"):
        evaluate_regions(discovery_tile, discovery_bundle[0], progress=False, region_method="otsu")
