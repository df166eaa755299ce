"""Tests of protoinspect.sdk.manifest: format checks and the schema of a manifest.json (sealed, so that the
schema checks behind the digest are reached, e.g. what a buggy writer or another version produced)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from protoinspect.sdk.bundle import load_bundle
from protoinspect.sdk.errors import BundleError
from protoinspect.sdk.manifest import FORMAT_VERSION, LEGACY_FORMAT_VERSION, Manifest, compute_bundle_id
from protoinspect.sdk.manifest_digest import manifest_digest

from bundle_fixtures import edit_manifest, make_bundle

_edit_manifest = edit_manifest


@pytest.fixture()
def bundle_dir(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "bundle")


def test_wrong_format(bundle_dir: Path) -> None:
    _edit_manifest(bundle_dir, format="someone-elses-bundle")
    with pytest.raises(BundleError, match=r"manifest\.json.*'format'.*someone-elses-bundle"):
        load_bundle(bundle_dir)


def test_future_format_version(bundle_dir: Path) -> None:
    _edit_manifest(bundle_dir, format_version=FORMAT_VERSION + 1, brand_new_key={})
    with pytest.raises(BundleError, match=r"manifest\.json.*format_version.*newer.*upgrade protoinspect"):
        load_bundle(bundle_dir)


def test_old_format_version(bundle_dir: Path) -> None:
    _edit_manifest(bundle_dir, format_version=LEGACY_FORMAT_VERSION - 1)
    with pytest.raises(BundleError, match=r"manifest\.json.*format_version.*older") as ei:
        load_bundle(bundle_dir)
    assert "protoinspect export" in str(ei.value)


def test_format_version_wrong_type(bundle_dir: Path) -> None:
    _edit_manifest(bundle_dir, format_version="1")
    with pytest.raises(BundleError, match=r"format_version.*integer"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"thresholds": None}, "thresholds"),
        ({"thresholds": {"image": 0.5, "calibration": {}}}, "thresholds.pixel"),
        ({"thresholds": {"image": "high", "pixel": 0.1, "calibration": {}}}, "thresholds.image"),
        ({"classes": [{"id": 0, "name": "good", "known": "yes", "discovered": False}]}, "classes[0].known"),
        ({"preprocess": {"image_size": [10, 10], "mean": [0, 0, 0], "std": [1, 1, 1]}}, "preprocess"),
        ({"producer": {"command": "x"}}, "producer.protoinspect_version"),
        ({"typo_key": 1}, "typo_key"),
    ],
)
def test_invalid_manifest_names_key(bundle_dir: Path, change: dict[str, Any], key: str) -> None:
    _edit_manifest(bundle_dir, reseal=True, **change)  # a sealed manifest with a bad key (e.g. a buggy writer)
    with pytest.raises(BundleError, match="manifest.json") as ei:
        load_bundle(bundle_dir)
    assert f"'{key}'" in str(ei.value)


def test_missing_manifest_key(bundle_dir: Path) -> None:
    d = json.loads((bundle_dir / "manifest.json").read_text())
    del d["datasets"]
    with pytest.raises(BundleError, match=r"manifest\.json was changed after it was written"):
        Manifest.from_dict(d)
    d["digest"] = manifest_digest(d)
    with pytest.raises(BundleError, match=r"manifest\.json: key 'datasets' is missing"):
        Manifest.from_dict(d)


def test_hand_edited_file_list_is_detected(bundle_dir: Path) -> None:
    d = json.loads((bundle_dir / "manifest.json").read_text())
    d["files"]["detector.safetensors"]["sha256"] = "0" * 64
    (bundle_dir / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(BundleError, match=r"manifest\.json was changed after it was written"):
        load_bundle(bundle_dir)
    d["digest"] = manifest_digest(d)  # digest recomputed by hand: the file list still disagrees with bundle_id
    (bundle_dir / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(BundleError, match=r"bundle_id"):
        load_bundle(bundle_dir)


def test_manifest_with_path_traversal_rejected(bundle_dir: Path) -> None:
    d = json.loads((bundle_dir / "manifest.json").read_text())
    d["files"]["../evil.bin"] = {"sha256": "0" * 64, "bytes": 1}
    d["bundle_id"] = compute_bundle_id(d["files"])
    d["digest"] = manifest_digest(d)
    (bundle_dir / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(BundleError, match=r"manifest\.json.*\.\./evil\.bin"):
        load_bundle(bundle_dir)
