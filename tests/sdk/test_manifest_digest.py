"""The tamper-evident manifest: any edit of manifest.json is refused; legitimate writers keep the digest valid;
legacy (unsealed) bundles load as unverified, or are refused on request, and are sealed by one command."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from protoinspect.sdk.bundle import add_files, load_bundle, upgrade_command, write_bundle
from protoinspect.sdk.bundle_upgrade import main as upgrade_main
from protoinspect.sdk.bundle_upgrade import upgrade_bundle
from protoinspect.sdk.errors import BundleError
from protoinspect.sdk.manifest import FORMAT_VERSION, LEGACY_FORMAT_VERSION
from protoinspect.sdk.manifest_digest import manifest_digest
from protoinspect.sdk.preprocess import PreprocessSpec

ROOT = Path(__file__).resolve().parents[2]
CLASSIFIER = {"in_channels": 12, "grid": 4, "embed_dim": 16, "num_heads": 2, "num_classes": 2, "kappa": 16.0}
DISCOVERY = {
    "settings": {"grid": 4, "s_min": 0.1, "s_max": 0.9, "reject_threshold": 0.35},
    "classifier": {"architecture": "DefectClassifierNet", "config": CLASSIFIER, "weights": "classifier.safetensors"},
    "training": {"config": {"kappa": 16.0, "grid": 4}, "k_novel_estimated": 1, "flag_threshold": "-inf"},
}


def _fields(**extra: Any) -> dict[str, Any]:
    return {
        "preprocess": PreprocessSpec(image_size=(64, 64)),
        "model": {"architecture": "PrototypeDetectorNet", "config": {}},
        "thresholds": {"image": 0.5, "pixel": 0.25, "calibration": {"image_quantile": 0.99}},
        "classes": [{"id": 0, "name": "scratch", "known": True, "discovered": False},
                    {"id": 1, "name": "novel-1", "known": False, "discovered": True}],
        "extra": {"note": "test", **extra},
    }


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    out = tmp_path / "bundle"
    write_bundle(out, manifest_fields=_fields(discovery=DISCOVERY),
                 files={"detector.safetensors": b"weights", "classifier.safetensors": b"clf"})
    return out


def _read(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "manifest.json").read_text())


def _write(bundle: Path, d: dict[str, Any]) -> None:
    (bundle / "manifest.json").write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")


def _make_legacy(bundle: Path) -> None:
    """What bundles written before the digest look like: format_version 1 and no digest."""
    d = _read(bundle)
    del d["digest"]
    d["format_version"] = LEGACY_FORMAT_VERSION
    _write(bundle, d)


# ----------------------------------------------------------------------------- edits are refused


def _edit_threshold(d: dict[str, Any]) -> None:
    d["thresholds"]["image"] = 0.9


def _edit_class_name(d: dict[str, Any]) -> None:
    d["classes"][0]["name"] = "dent"


def _add_top_level_key(d: dict[str, Any]) -> None:
    d["comment"] = "tuned by hand"


def _add_extra_key(d: dict[str, Any]) -> None:
    d["extra"]["operator"] = "me"


def _edit_reject_threshold(d: dict[str, Any]) -> None:
    d["extra"]["discovery"]["settings"]["reject_threshold"] = "-inf"


def _edit_kappa(d: dict[str, Any]) -> None:
    d["extra"]["discovery"]["classifier"]["config"]["kappa"] = 10.0


def _edit_producer(d: dict[str, Any]) -> None:
    d["producer"]["command"] = "something else"


@pytest.mark.parametrize("edit", [_edit_threshold, _edit_class_name, _add_top_level_key, _add_extra_key,
                                  _edit_reject_threshold, _edit_kappa, _edit_producer])
def test_any_edit_of_the_manifest_is_refused(bundle: Path, edit: Any) -> None:
    d = _read(bundle)
    edit(d)
    _write(bundle, d)
    for verify in (True, False):  # the manifest is checked even without hashing the files
        with pytest.raises(BundleError) as info:
            load_bundle(bundle, verify=verify)
        msg = str(info.value)
        assert "manifest.json" in msg and "changed after it was written" in msg
        assert "recalibrate" in msg and "restore the original manifest.json" in msg  # the fix


def test_removing_the_digest_is_refused(bundle: Path) -> None:
    d = _read(bundle)
    del d["digest"]
    _write(bundle, d)
    with pytest.raises(BundleError, match=r"manifest\.json has format_version 2 but no 'digest'"):
        load_bundle(bundle)


def test_reformatting_without_changes_is_accepted(bundle: Path) -> None:
    d = _read(bundle)
    (bundle / "manifest.json").write_text(json.dumps(d))  # other whitespace and key order, same content
    assert load_bundle(bundle).manifest_verified


# ----------------------------------------------------------------------------- legitimate writers


def test_writers_keep_the_digest_valid(bundle: Path) -> None:
    first = load_bundle(bundle)
    assert first.manifest_verified and first.manifest.format_version == FORMAT_VERSION
    assert first.manifest.digest == manifest_digest(_read(bundle))
    new = add_files(bundle, {"detector.onnx": b"graph"}, extra={"onnx": {"file": "detector.onnx", "opset": 17}})
    loaded = load_bundle(bundle)
    assert loaded.manifest == new and loaded.manifest_verified and new.digest != first.manifest.digest
    assert loaded.manifest.onnx.file == "detector.onnx" and loaded.manifest.onnx.opset == 17
    engines = {"engines": {"detector.fp16.sm87.engine": {"onnx_file": "detector.onnx", "precision": "fp16",
                                                         "compute_capability": "8.7", "sidecar": "x.json"}}}
    add_files(bundle, {"detector.fp16.sm87.engine": b"e"}, extra={"tensorrt": engines})
    assert load_bundle(bundle).manifest.tensorrt.engines["detector.fp16.sm87.engine"].compute_capability == "8.7"
    over = write_bundle(bundle, manifest_fields=_fields(), files={"detector.safetensors": b"w2"}, overwrite=True)
    assert load_bundle(bundle).manifest == over and over.discovery is None


def test_typed_sections_of_the_runtime(bundle: Path) -> None:
    m = load_bundle(bundle).manifest
    assert m.discovery.classifier.config.kappa == 16.0 and m.discovery.classifier.config.in_channels == 12
    assert m.discovery.settings.reject_threshold == 0.35 and m.discovery.settings.grid == 4
    assert m.discovery.training.k_novel_estimated == 1 and m.discovery.training.flag_threshold == float("-inf")
    assert [c.name for c in m.class_infos] == ["scratch", "novel-1"] and m.class_infos[1].discovered
    assert m.extra["discovery"]["settings"]["grid"] == 4  # the on-disk layout is unchanged
    assert m.onnx is None and m.tensorrt is None and m.classifier_onnx is None


def test_a_sealed_but_invalid_section_names_its_key(bundle: Path) -> None:
    d = _read(bundle)
    d["extra"]["discovery"]["settings"]["grid"] = "four"
    d["digest"] = manifest_digest(d)  # e.g. written by a buggy tool
    _write(bundle, d)
    with pytest.raises(BundleError, match=r"manifest\.json: key 'extra\.discovery\.settings\.grid' must be an integer"):
        load_bundle(bundle)


def test_sections_load_without_torch(bundle: Path) -> None:
    code = (f"import sys\nfrom protoinspect.sdk.bundle import load_bundle\nm = load_bundle({str(bundle)!r}).manifest\n"
            "assert m.discovery.classifier.config.kappa == 16.0\nassert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ----------------------------------------------------------------------------- legacy bundles


def test_legacy_bundle_loads_unverified_with_a_logged_upgrade_command(bundle: Path, caplog: Any) -> None:
    _make_legacy(bundle)
    with caplog.at_level(logging.WARNING, logger="protoinspect.sdk.bundle"):
        b = load_bundle(bundle)
    assert not b.manifest_verified and b.manifest.digest is None and b.manifest.thresholds["image"] == 0.5
    assert b.manifest.discovery.classifier.config.kappa == 16.0  # nothing the user saved is lost
    assert "UNVERIFIED" in caplog.text and upgrade_command(bundle) in caplog.text
    with pytest.raises(BundleError) as info:
        load_bundle(bundle, allow_legacy=False)
    assert "format_version 1" in str(info.value) and upgrade_command(bundle) in str(info.value)


def test_adding_files_keeps_a_legacy_bundle_legacy(bundle: Path) -> None:
    _make_legacy(bundle)
    m = add_files(bundle, {"detector.onnx": b"graph"}, extra={"onnx": {"file": "detector.onnx"}})
    assert m.format_version == LEGACY_FORMAT_VERSION and m.digest is None
    assert "digest" not in _read(bundle) and not load_bundle(bundle).manifest_verified


def test_upgrade_seals_a_legacy_bundle_in_place(bundle: Path, capsys: Any) -> None:
    before = load_bundle(bundle).manifest
    _make_legacy(bundle)
    sealed, upgraded = upgrade_bundle(bundle)
    assert upgraded and sealed.format_version == FORMAT_VERSION and sealed.digest == before.digest
    after = load_bundle(bundle, allow_legacy=False)
    assert after.manifest_verified and after.manifest == before
    assert upgrade_main([str(bundle)]) == 0 and "already sealed" in capsys.readouterr().out
    _edit_threshold(d := _read(bundle))
    _write(bundle, d)
    assert upgrade_main([str(bundle)]) == 2  # an edited sealed manifest is not re-sealed


def test_upgrade_refuses_a_legacy_bundle_with_a_damaged_file(bundle: Path) -> None:
    _make_legacy(bundle)
    (bundle / "detector.safetensors").write_bytes(b"WEIGHTS")  # same size, other bytes
    with pytest.raises(BundleError, match=r"detector\.safetensors.*sha256"):
        upgrade_bundle(bundle)
    assert _read(bundle)["format_version"] == LEGACY_FORMAT_VERSION  # nothing written
