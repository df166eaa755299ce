"""The threshold a line runs on: defects caught / false alarms in the evaluation, and a user-set operating
point written by ``recalibrate --false-alarm-rate`` into a new bundle with its trust statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from detector_bundles import make_detector_bundle

from protoinspect.sdk.bundle import load_bundle, sha256_file
from protoinspect.sdk.errors import ConfigError, InputError
from protoinspect.training.config import load_train_config
from protoinspect.training.evaluate_detector import at_threshold, evaluate_detector, format_table
from protoinspect.training.evaluate_detector import main as evaluate_main
from protoinspect.training.recalibrate import main as recalibrate_main
from protoinspect.training.recalibrate import recalibrate_bundle
from protoinspect.training.threshold_trust import false_alarm_trust

TINY = [
    "image_size=64", "crop=32", "steps=4", "batch=2", "checkpoint_every=4", "min_holdout=3",
    "detector.num_prototypes=16", "detector.embed_dim=32", "detector.num_heads=2", "detector.blur_sigma=1.0",
    "num_threads=1", "device=cpu",
]


def test_at_threshold_counts_flagged_images_at_or_above_it() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.5, 0.7, 0.2, 0.5, 0.9, 0.3])
    r = at_threshold(labels, scores, 0.5)
    assert r["num_defects_caught"] == 2 and r["defects_caught"] == pytest.approx(2 / 3)  # 0.5 counts
    assert r["num_false_alarms"] == 2 and r["false_alarm_rate"] == pytest.approx(2 / 4)
    assert r["accuracy_at_threshold"] == pytest.approx(4 / 7)
    only_good = at_threshold(np.zeros(3, int), np.array([0.1, 0.2, 0.9]), 0.5)
    assert only_good["defects_caught"] is None and only_good["false_alarm_rate"] == pytest.approx(1 / 3)
    with pytest.raises(InputError):
        at_threshold(labels, scores[:-1], 0.5)
    with pytest.raises(InputError):
        at_threshold(labels + 1, scores, 0.5)


def test_evaluation_reports_caught_and_false_alarms_and_optional_per_image_scores(
        tiny_products: list[Path], tmp_path: Path, rng: np.random.Generator,
        capsys: pytest.CaptureFixture[str]) -> None:
    bundle = make_detector_bundle(tmp_path / "b", rng)
    report = evaluate_detector(tiny_products, bundle, progress=False, per_image=True)
    records = report["images"]
    assert len(records) == sum(r["num_test"] for r in report["datasets"].values()) == 20
    thr = report["image_threshold"]
    for name, row in report["datasets"].items():
        mine = [r for r in records if r["dataset"] == name]
        bad = [r for r in mine if r["label"] == 1]
        good = [r for r in mine if r["label"] == 0]
        assert all(r["mask"] is not None and r["defect_type"] != "good" for r in bad)
        assert all(r["mask"] is None and r["defect_type"] == "good" for r in good)
        caught = sum(r["score"] >= thr for r in bad)
        alarms = sum(r["score"] >= thr for r in good)
        assert row["num_defects_caught"] == caught and row["defects_caught"] == pytest.approx(caught / len(bad))
        assert row["num_false_alarms"] == alarms and row["false_alarm_rate"] == pytest.approx(alarms / len(good))
        assert row["accuracy_at_threshold"] == pytest.approx((caught + len(good) - alarms) / len(mine))
        assert row["trust"] is None  # this hand-made bundle records no calibration
        assert {"image_auroc", "aupro", "num_test", "num_anomalous", "num_normal"} <= row.keys()

    # the CLI's JSON stays per dataset unless asked for every image
    plain, full = tmp_path / "plain.json", tmp_path / "full.json"
    data_args = [a for d in tiny_products for a in ("--data", str(d))]
    assert evaluate_main([*data_args, "--bundle", str(bundle), "--json", str(plain), "--quiet"]) == 0
    assert evaluate_main([*data_args, "--bundle", str(bundle), "--json", str(full), "--quiet", "--per-image"]) == 0
    assert "images" not in json.loads(plain.read_text())
    assert [r["score"] for r in json.loads(full.read_text())["images"]] == pytest.approx([r["score"] for r in records])
    table = capsys.readouterr().out
    assert "caught" in table and "false alarms" in table
    tile = report["datasets"]["tile"]
    assert f"({tile['num_defects_caught']}/{tile['num_anomalous']})" in format_table(report)


@pytest.mark.slow
def test_recalibrate_sets_the_operating_point_with_its_trust(tiny_products: list[Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from protoinspect.training.train_detector import train_detector

    old = train_detector(tiny_products, tmp_path / "old", load_train_config(overrides=TINY), progress=False)
    old_m = load_bundle(old).manifest
    old_cal = old_m.thresholds["calibration"]
    n = sum(d["num_holdout"] for d in old_m.datasets)
    assert old_cal["num_images"] == n == 6 and old_cal["target_false_alarm_rate"] == pytest.approx(0.01)
    assert old_cal["trust"].startswith("calibrated on 6 normal images")
    before = {p.name: sha256_file(p) for p in old.iterdir()}

    new = tmp_path / "new"
    assert recalibrate_main(["--bundle", str(old), "--out", str(new), "--false-alarm-rate", "0.3", "--quiet"]) == 0
    assert {p.name: sha256_file(p) for p in old.iterdir()} == before
    new_m = load_bundle(new).manifest
    assert new_m.sealed  # recalibrate is a legitimate writer: its new thresholds are covered by the digest
    cal = new_m.thresholds["calibration"]
    assert cal["target_false_alarm_rate"] == pytest.approx(0.3) and cal["image_quantile"] == pytest.approx(0.7)
    assert new_m.thresholds["image"] < old_m.thresholds["image"]  # a looser operating point, a lower threshold
    # 6 scores, quantile 0.7 interpolates between the 4th and 5th: two images lie above it
    assert cal["num_false_alarms"] == 2 and cal["false_alarm_rate"] == pytest.approx(2 / 6)
    expected = false_alarm_trust(6, 2, 0.3)
    for key in ("false_alarm_rate_upper", "min_images_for_target", "target_confirmed", "trust"):
        assert cal[key] == expected[key]
    assert new_m.extra["recalibrated_from"] == old_m.bundle_id
    assert cal["trust"] in capsys.readouterr().out

    # re-calibrating the new bundle without a rate keeps its operating point
    again = recalibrate_bundle(new, tmp_path / "again", progress=False)
    assert load_bundle(again).manifest.thresholds["image"] == pytest.approx(new_m.thresholds["image"], rel=1e-6)

    # the evaluation repeats the bundle's trust sentence next to what the line catches
    report = evaluate_detector(tiny_products, new, progress=False)
    assert all(row["trust"] == cal["trust"] for row in report["datasets"].values())
    assert cal["trust"] in format_table(report)


@pytest.mark.parametrize("rate", ["0", "1", "-0.1", "1.5", "nan", "inf"])
def test_recalibrate_refuses_a_false_alarm_rate_outside_0_1(rate: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code = recalibrate_main(["--bundle", str(tmp_path / "missing"), "--out", str(tmp_path / "new"),
                             f"--false-alarm-rate={rate}", "--quiet"])
    assert code == 2
    assert "strictly between 0 and 1" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    with pytest.raises(ConfigError, match="false-alarm rate"):
        recalibrate_bundle(tmp_path / "missing", tmp_path / "new", false_alarm_rate=float(rate))
