"""End to end: train a tiny multi-product detector, resume after an interruption, evaluate it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import protoinspect.training.train_detector as td
from protoinspect.sdk.bundle import load_bundle
from protoinspect.sdk.errors import BundleError
from protoinspect.training.config import load_train_config
from protoinspect.training.evaluate_detector import main as evaluate_main
from protoinspect.training.train_detector import main as train_main
from protoinspect.training.train_detector import train_detector

TINY = [
    "image_size=64", "crop=32", "steps=6", "batch=4", "checkpoint_every=3", "min_holdout=2", "detector.num_prototypes=16",
    "detector.embed_dim=32", "detector.num_heads=2", "detector.blur_sigma=1.0",
]


def _weights(bundle: Path) -> dict[str, np.ndarray]:
    return load_file(str(bundle / "detector.safetensors"))


def test_train_writes_a_complete_bundle(tiny_products: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    assert train_main([*[a for d in tiny_products for a in ("--data", str(d))], "--out", str(out), "--quiet",
                       *[a for s in TINY for a in ("--set", s)]]) == 0
    manifest = load_bundle(out).manifest
    assert manifest.preprocess_spec.image_size == (64, 64)
    assert [d["name"] for d in manifest.datasets] == ["tile", "washer"]
    assert all(d["num_holdout"] >= 2 for d in manifest.datasets)
    assert np.isfinite(manifest.thresholds["image"]) and np.isfinite(manifest.thresholds["pixel"])
    assert manifest.thresholds["calibration"]["num_images"] == sum(d["num_holdout"] for d in manifest.datasets)
    assert manifest.model["pretrained"] is None
    assert not (tmp_path / "bundle.work" / "checkpoint.pt").exists()
    # an existing bundle is never replaced silently
    with pytest.raises(BundleError, match="already exists"):
        train_detector(tiny_products, out, load_train_config(overrides=TINY), progress=False)

    report_path = tmp_path / "metrics.json"
    assert evaluate_main(["--bundle", str(out), "--json", str(report_path), "--quiet",
                          *[a for d in tiny_products for a in ("--data", str(d))]]) == 0
    report = json.loads(report_path.read_text())
    for name in ("tile", "washer"):
        row = report["datasets"][name]
        for key in ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "aupro"):
            assert 0.0 <= row[key] <= 1.0
        assert row["num_test"] == row["num_anomalous"] + row["num_normal"] == 4 + 6

    # `protoinspect export` (pipelines) gives the parity check real frames of the recorded training data
    from protoinspect.pipelines.commands import export_main
    from protoinspect.training.dataset_frames import training_data_frames

    frames, paths = training_data_frames(out, per_dataset=2)
    assert len(frames) == len(paths) == 4 and all(f.dtype == np.uint8 and f.shape[0] == 64 for f in frames)
    assert sum("/good/" in p for p in paths) == 2
    assert export_main([str(out), "--num-random", "1"]) == 0
    info = load_bundle(out).manifest.extra["onnx"]
    assert info["parity"]["num_real"] == 4 and info["parity"]["num_random"] == 1


class _Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted(tiny_products, tmp_path, monkeypatch) -> None:
    cfg = load_train_config(overrides=TINY)
    straight = train_detector(tiny_products, tmp_path / "straight", cfg, progress=False)

    real_loss = td.reconstruction_loss
    calls = {"n": 0}

    def failing_loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # after the decoder checkpoint at step 3
            raise _Interrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(td, "reconstruction_loss", failing_loss)
    with pytest.raises(_Interrupt):
        train_detector(tiny_products, tmp_path / "resumed", cfg, progress=False)
    assert (tmp_path / "resumed.work" / "checkpoint.pt").is_file()
    monkeypatch.setattr(td, "reconstruction_loss", real_loss)

    resumed = train_detector(tiny_products, tmp_path / "resumed", cfg, progress=False)
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)

    # a checkpoint from another configuration is refused, not silently mixed in
    monkeypatch.setattr(td, "reconstruction_loss", failing_loss)
    calls["n"] = 0
    with pytest.raises(_Interrupt):
        train_detector(tiny_products, tmp_path / "third", cfg, progress=False)
    other = load_train_config(overrides=[*TINY, "steps=7"])
    from protoinspect.sdk.errors import ConfigError

    with pytest.raises(ConfigError, match="different configuration"):
        train_detector(tiny_products, tmp_path / "third", other, progress=False)


def test_train_cli_reports_a_wrong_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "not_a_dataset" / "images").mkdir(parents=True)
    code = train_main(["--data", str(tmp_path / "not_a_dataset"), "--out", str(tmp_path / "b"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "not_a_dataset" in err and "train/good" in err


def test_recalibrate_writes_a_new_bundle_and_keeps_the_old(tiny_products: list[Path], tmp_path: Path) -> None:
    from protoinspect.sdk.bundle import sha256_file
    from protoinspect.training.recalibrate import main as recalibrate_main

    old = train_detector(tiny_products, tmp_path / "old", load_train_config(overrides=TINY), progress=False)
    before = {p.name: sha256_file(p) for p in old.iterdir()}
    new = tmp_path / "new"
    assert recalibrate_main(["--bundle", str(old), "--out", str(new), "--set", "map_mode=prototype", "--quiet"]) == 0
    assert {p.name: sha256_file(p) for p in old.iterdir()} == before  # nothing the user saved is touched
    old_m, new_m = load_bundle(old).manifest, load_bundle(new).manifest
    assert new_m.model["config"]["map_mode"] == "prototype" and old_m.model["config"]["map_mode"] == "discriminator"
    assert new_m.extra["recalibrated_from"] == old_m.bundle_id
    assert new_m.thresholds["image"] != old_m.thresholds["image"]
    assert new_m.thresholds["calibration"]["num_images"] == old_m.thresholds["calibration"]["num_images"]
    # calibrating the same settings again reproduces the original thresholds exactly
    same = tmp_path / "same"
    assert recalibrate_main(["--bundle", str(old), "--out", str(same), "--quiet"]) == 0
    assert load_bundle(same).manifest.thresholds["image"] == pytest.approx(old_m.thresholds["image"], rel=1e-6)


def test_too_few_images_for_calibration_is_a_dataset_error(tiny_products: list[Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    code = train_main(["--data", str(tiny_products[0]), "--out", str(tmp_path / "b"), "--quiet",
                       *[a for s in [*TINY, "min_holdout=50"] for a in ("--set", s)]])
    assert code == 2
    assert "too few to hold out 50" in capsys.readouterr().err
