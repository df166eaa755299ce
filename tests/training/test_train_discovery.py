"""End to end: a tiny detector, discovery training, evaluation, export, and the Inspector classifying regions."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from protoinspect.sdk import Inspector, InspectorConfig, Verdict
from protoinspect.sdk.bundle import load_bundle
from protoinspect.sdk.errors import BundleError, ConfigError, DatasetError

from tiny_configs import TINY_DISCOVERY  # noqa: E402


@pytest.fixture(scope="module")
def tile(discovery_tile: Path) -> Path:
    """The session's tiny synthetic tile product (``discovery_bundle`` was trained on it)."""
    return discovery_tile


def test_discovery_bundle_keeps_the_detector_and_adds_classes(discovery_bundle: tuple[Path, Path]) -> None:
    det, disc = discovery_bundle
    old, new = load_bundle(det).manifest, load_bundle(disc).manifest
    assert "discovery" not in old.extra and old.classes == []  # the detector bundle is untouched
    assert new.files["detector.safetensors"] == old.files["detector.safetensors"]
    assert new.classes[0] == {"id": 0, "name": "crack", "known": True, "discovered": False}
    novel = [c for c in new.classes[1:]]
    assert novel and all(c["discovered"] and c["name"].startswith("novel-") for c in novel)
    info = new.extra["discovery"]
    assert info["training"]["known_types"] == ["crack"] and info["training"]["num_labelled"] == 2
    assert info["training"]["k_novel_estimated"] == len(novel)
    # flag_threshold=-inf flags all 12 unlabelled test images: the minimum-count rule adds none
    assert (info["training"]["num_flagged"], info["training"]["num_added_by_rule"], info["training"]["num_unlabelled"]) \
        == (12, 0, 12)
    s = info["settings"]
    assert s["s_min"] <= s["s_max"] and isinstance(s["reject_threshold"], float)
    # the typed view of the same section (what the runtime reads), and the config nested, not flat
    section = new.discovery
    assert new.sealed and section.settings.reject_threshold == s["reject_threshold"]
    assert section.classifier.config.grid == 4 and section.classifier.config.num_classes == len(new.classes)
    assert section.training.known_types == ["crack"] and section.training.config["classifier"]["grid"] == 4


def test_evaluate_discovery_writes_the_metrics(discovery_bundle: tuple[Path, Path], tile: Path, tmp_path: Path) -> None:
    from protoinspect.training.evaluate_discovery import main

    out = tmp_path / "ncd.json"
    assert main(["--data", str(tile), "--bundle", str(discovery_bundle[1]), "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    for key in ("nmi", "ari", "f1"):
        assert -1.0 <= report[key] <= 1.0
    assert report["k_true"] == 6 and report["num_images"] == 12
    assert report["k_estimated"] == len(load_bundle(discovery_bundle[1]).manifest.classes)
    assert report["outlier_auroc"] is None
    flagged = report["flagged_only"]
    assert flagged is None or (1 <= flagged["num_images"] <= 12 and set(flagged) == {"num_images", "nmi", "ari", "f1"})


def test_inspector_classifies_defect_regions(discovery_bundle: tuple[Path, Path], tile: Path) -> None:
    from dataclasses import replace

    from protoinspect.export.classifier_export import export_classifier_onnx
    from protoinspect.sdk.stages.mebin import MEBinSettings
    from protoinspect.sdk.stages.regions import MapRegionFinder, RegionSettings

    _, disc = discovery_bundle
    export_classifier_onnx(disc)  # idempotent: replaces classifier.onnx
    bundle = load_bundle(disc)
    names = {c["name"] for c in bundle.manifest.classes}
    frames = [cv2.imread(str(p)) for p in sorted((tile / "test").glob("*/*.png"))[:6]]
    cfg = InspectorConfig(image_threshold=float("-inf"), pixel_threshold=float("-inf"), threads=1)
    defaults = {}
    for backend in ("onnxruntime", "torch"):
        with Inspector.from_bundle(disc, backend=backend, config=cfg) as insp:
            assert insp.describe()["stages"]["regions"] == "MapRegionFinder"
            defaults[backend] = [insp.inspect(f) for f in frames]
    # A 4-step detector's maps rarely hold a MEBin-stable region in the range calibrated on its training maps;
    # this range (these frames' maps) and these MEBin settings find regions on every map, so every frame has
    # defects to classify (the rest of the path is the bundle's).
    maps = [r.model_map for r in defaults["onnxruntime"]]
    settings = replace(bundle.manifest.discovery.settings, s_min=float(min(m.min() for m in maps)),
                       s_max=float(max(m.max() for m in maps)), mebin=MEBinSettings(erode_kernel=0, min_interval_len=1))
    eager = MapRegionFinder(RegionSettings(pixel_threshold=float("-inf"), min_area_px=1, discovery=settings))
    results = {}
    for backend in ("onnxruntime", "torch"):
        with Inspector.from_bundle(disc, backend=backend, config=cfg, regions=eager) as insp:
            results[backend] = [insp.inspect(f) for f in frames]
    for r_ort, r_torch in zip(results["onnxruntime"], results["torch"]):
        assert r_ort.verdict in (Verdict.ANOMALOUS, Verdict.REJECTED)
        assert r_ort.image_class_name in names and r_ort.image_class_name == r_torch.image_class_name
        assert r_ort.defects and all(d.class_name in names and d.class_score is not None for d in r_ort.defects)
        assert [d.class_name for d in r_ort.defects] == [d.class_name for d in r_torch.defects]
        assert r_ort.timings_ms["classify"] > 0
    for r in defaults["onnxruntime"]:  # the bundle's own MEBin: a class per frame, per defect when MEBin found one
        assert r.image_class_name in names and all(d.class_name in names for d in r.defects)
    from protoinspect.sdk.report import HtmlReport

    report = HtmlReport(tile.parent / "report-with-classes")
    report.add("f0", frames[0], results["onnxruntime"][0])
    assert f"<td>{results['onnxruntime'][0].image_class_name}</td>" in report.write().read_text()
    cfg = InspectorConfig(image_threshold=float("-inf"), classify=False, threads=1)
    with Inspector.from_bundle(disc, config=cfg) as insp:
        r = insp.inspect(frames[0])
    assert r.image_class_name is None and all(d.class_name is None for d in r.defects)


def test_rejection_follows_the_calibrated_threshold(discovery_bundle: tuple[Path, Path], tile: Path) -> None:
    from protoinspect.sdk.stages.contracts import ClassificationOutput, RegionClass
    from protoinspect.sdk.stages.region_classifier import VmfRejector

    threshold = load_bundle(discovery_bundle[1]).manifest.extra["discovery"]["settings"]["reject_threshold"]
    rej = VmfRejector(threshold)
    assert rej.is_outlier(ClassificationOutput((), RegionClass(1, "novel-1", True, threshold - 0.01)))
    assert not rej.is_outlier(ClassificationOutput((), RegionClass(1, "novel-1", True, threshold + 0.01)))


def test_bad_discovery_arguments(discovery_bundle: tuple[Path, Path], tile: Path, tmp_path: Path) -> None:
    from protoinspect.sdk.models.loading import load_classifier_net
    from protoinspect.training.train_discovery import main, train_discovery

    with pytest.raises(ConfigError, match="distinct defect types"):
        train_discovery(tile, discovery_bundle[0], tmp_path / "x", known=["no-such-type"], progress=False)
    with pytest.raises(BundleError, match="no defect classifier"):
        load_classifier_net(discovery_bundle[0])
    assert main(["--data", str(tile), "--bundle", str(discovery_bundle[0]), "--out", str(tmp_path / "y"),
                 "--known", "crack", "--exclude-type", "crack", "--quiet"]) == 2
    types = sorted(p.name for p in (tile / "test").iterdir() if p.name != "good")
    with pytest.raises(ConfigError, match="no novel type is left"):
        train_discovery(tile, discovery_bundle[0], tmp_path / "x", known=types, progress=False)
    with pytest.raises(ConfigError, match="more novel classes than the 12 unlabelled"):
        train_discovery(tile, discovery_bundle[0], tmp_path / "x", known=["crack"], num_novel=13, progress=False)
    with pytest.raises(ConfigError, match="--num-novel must be >= 1"):
        train_discovery(tile, discovery_bundle[0], tmp_path / "x", num_novel=-1, progress=False)
    good_only = tmp_path / "good-only"
    shutil.copytree(tile / "train", good_only / "train")
    shutil.copytree(tile / "test" / "good", good_only / "test" / "good")
    with pytest.raises(DatasetError, match="no defect(ive test images| folders).*test/<defect_type>/"):
        train_discovery(good_only, discovery_bundle[0], tmp_path / "x", progress=False)


def test_discovery_refuses_a_bundle_without_a_usable_detector(discovery_bundle: tuple[Path, Path], tile: Path,
                                                              tmp_path: Path) -> None:
    from protoinspect.sdk.bundle import write_bundle
    from protoinspect.training.train_discovery import train_discovery

    det = discovery_bundle[0]
    no_weights = tmp_path / "no-weights"
    shutil.copytree(det, no_weights)
    (no_weights / "detector.safetensors").unlink()
    with pytest.raises(BundleError, match="detector.safetensors.* is missing.*restore the file"):
        train_discovery(tile, no_weights, tmp_path / "x", progress=False)
    m = load_bundle(det).manifest
    fields = {"preprocess": m.preprocess, "thresholds": m.thresholds, "datasets": m.datasets}
    for model, problem in (({**m.model, "architecture": "ResNet"}, "'ResNet' is not PrototypeDetectorNet"),
                           ({k: v for k, v in m.model.items() if k != "config"}, "no detector 'config'")):
        bad = tmp_path / "bad"
        write_bundle(bad, manifest_fields={**fields, "model": model}, files={n: det / n for n in m.files}, overwrite=True)
        with pytest.raises(BundleError, match=f"{problem}.*re-create the bundle"):
            train_discovery(tile, bad, tmp_path / "x", progress=False)


def test_too_few_flagged_anomalies_fall_back_to_the_highest_scores(discovery_bundle: tuple[Path, Path], tile: Path,
                                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                                  ) -> None:
    from protoinspect.sdk.models.loading import load_detector_net
    from protoinspect.training.datasets import load_dataset
    from protoinspect.training.discovery_data import detect
    from protoinspect.training.train_discovery import main

    det = discovery_bundle[0]
    sets = [*TINY_DISCOVERY, "contrastive_steps=2", "prototype_steps=2", "min_unlabelled=4", "min_unlabelled_fraction=0"]
    args = ["--data", str(tile), "--bundle", str(det), "--out", str(tmp_path / "top"), "--known", "crack",
            "--flag-threshold", "inf", "--no-export", "--quiet"]
    assert main([*args, *(x for s in sets for x in ("--set", s))]) == 0  # the threshold flags nothing
    training = load_bundle(tmp_path / "top").manifest.discovery.training
    assert (training.num_flagged, training.num_added_by_rule, training.num_unlabelled) == (0, 4, 4)
    ds = load_dataset(tile)
    unlabelled = [s for s in ds.test if s.defect_type != "crack"]
    scores = detect(unlabelled, ds.channels, load_detector_net(det), load_bundle(det).manifest.preprocess_spec).scores
    assert training.score_cut == pytest.approx(float(np.sort(scores)[-4]))  # the 4th highest detector score
    assert training.flag_threshold == float("inf")
    assert "unlabelled anomalies: 4 (0 flagged at score >= inf, 4 added by min_unlabelled" in capsys.readouterr().out


def test_apply_edits_accepts_renames_merges_and_drops() -> None:
    from protoinspect.training.discover import apply_edits

    protos = np.eye(4, 6, dtype=np.float32)
    classes = [{"id": i, "name": n, "known": i == 0, "discovered": i > 0} for i, n in enumerate("abcd")]
    proposal = np.zeros(6, np.float32)
    proposal[5] = 2.0
    new_protos, new_classes = apply_edits(protos, classes, {"P1": proposal}, accept=["P1"],
                                          names={"P1": "scratch", "1": "dent"}, merges=[("1", "2")], drops=["3"])
    assert [c["name"] for c in new_classes] == ["a", "dent", "scratch"]
    assert [c["id"] for c in new_classes] == [0, 1, 2] and new_classes[2]["discovered"]
    np.testing.assert_allclose(new_protos[1], np.array([0, 1, 1, 0, 0, 0]) / np.sqrt(2), atol=1e-6)
    np.testing.assert_allclose(new_protos[2], np.eye(6)[5], atol=1e-6)
    with pytest.raises(ConfigError, match="no proposal"):
        apply_edits(protos, classes, {}, accept=["P9"])
    with pytest.raises(ConfigError, match="unknown class"):
        apply_edits(protos, classes, {}, drops=["7"])
    with pytest.raises(ConfigError, match="no class"):
        apply_edits(protos, classes, {}, drops=["0", "1", "2", "3"])


def test_discover_cli_reviews_and_writes_a_new_bundle(discovery_bundle: tuple[Path, Path], tile: Path,
                                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from protoinspect.pipelines.commands import discover_main as main

    disc = discovery_bundle[1]
    before = (disc / "manifest.json").read_text()
    assert main([str(tile / "test"), "--bundle", str(disc), "--report", str(tmp_path / "r"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "flagged" in out and (tmp_path / "r" / "report.html").is_file()
    assert "<h2>class 0: crack" in (tmp_path / "r" / "report.html").read_text()
    assert main([str(tile / "test"), "--bundle", str(disc), "--name", "0=hairline", "--quiet",
                 "--report", str(tmp_path / "r")]) == 2  # edits need --out
    assert main([str(tile / "test"), "--bundle", str(disc), "--name", "0=hairline", "--quiet",
                 "--report", str(tmp_path / "r"), "--out", str(tmp_path / "v2")]) == 0
    new = load_bundle(tmp_path / "v2").manifest
    assert new.sealed and new.discovery.edits[-1]["names"] == {"0": "hairline"}  # a new, sealed version
    assert new.classes[0]["name"] == "hairline" and "classifier.onnx" in new.files
    assert (disc / "manifest.json").read_text() == before  # the reviewed bundle is unchanged


def test_discovery_with_a_user_vit_token_source(discovery_bundle: tuple[Path, Path], tile: Path, tmp_path: Path) -> None:
    from protoinspect.sdk.models.vit_tokens import ViTTokens
    from protoinspect.training.discovery_config import discovery_config
    from protoinspect.training.evaluate_discovery import evaluate_discovery
    from protoinspect.training.train_discovery import train_discovery

    vit = ViTTokens(patch=8, dim=24, depth=1, hidden=48, num_pos=1 + 16)
    torch = pytest.importorskip("torch")
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    cfg = discovery_config([*TINY_DISCOVERY, f"vit_weights={tmp_path / 'vit.pth'}", "vit_input=32"])
    out = train_discovery(tile, discovery_bundle[0], tmp_path / "vit-disc", cfg, flag_threshold=float("-inf"),
                          progress=False)
    manifest = load_bundle(out).manifest
    assert "vit.safetensors" in manifest.files
    info = manifest.extra["discovery"]
    assert info["settings"]["token_source"] == "vit" and info["classifier"]["config"]["in_channels"] == 24
    report = evaluate_discovery(tile, out, progress=False)
    assert report["num_images"] == 12 and 0.0 <= report["f1"] <= 1.0
    frame = cv2.imread(str(sorted((tile / "test").glob("crack/*.png"))[0]))
    cfg_i = InspectorConfig(image_threshold=float("-inf"), pixel_threshold=float("-inf"), threads=1)
    with Inspector.from_bundle(out, backend="torch", config=cfg_i) as insp:
        result = insp.inspect(frame)
    assert result.image_class_name in {c["name"] for c in manifest.classes}


def test_every_k_criterion_is_recorded_and_the_default_keeps_the_cosine_silhouette(
        discovery_bundle: tuple[Path, Path]) -> None:
    training = load_bundle(discovery_bundle[1]).manifest.discovery.training
    assert training.k_method == "silhouette_cosine"
    assert {"consensus", "silhouette_cosine", "eigengap", "bic", "stability"} <= set(training.k_picks)
    assert training.k_picks["silhouette_cosine"] == training.k_novel_estimated
    assert all(2 <= k <= 4 for k in training.k_picks.values())  # k_max=4 in the tiny config


def test_bad_k_method_names_the_choices() -> None:
    from protoinspect.training.discovery_config import discovery_config

    with pytest.raises(ConfigError, match="k_method"):
        discovery_config(["k_method=gap_statistic"])


def test_evaluate_discovery_per_image_records_are_opt_in(discovery_bundle: tuple[Path, Path], tile: Path) -> None:
    from protoinspect.training.evaluate_discovery import evaluate_discovery

    plain = evaluate_discovery(tile, discovery_bundle[1], progress=False)
    assert "images" not in plain
    report = evaluate_discovery(tile, discovery_bundle[1], progress=False, per_image=True)
    recs = report.pop("images")
    timing = ("seconds", "classifier_ms_per_image")
    assert {k: v for k, v in report.items() if k not in timing} == {k: v for k, v in plain.items() if k not in timing}
    names = {c["id"]: c["name"] for c in load_bundle(discovery_bundle[1]).manifest.classes}
    assert len(recs) == report["num_images"] == 12
    assert all(Path(r["path"]).is_file() and r["defect_type"] == Path(r["path"]).parent.name for r in recs)
    assert all(names[r["class_id"]] == r["class_name"] and -1.0 <= r["score"] <= 1.0 for r in recs)
    for t, row in report["confusion"].items():  # the records add up to the confusion table
        assert row == dict(Counter(r["class_name"] for r in recs if r["defect_type"] == t))
