"""Tests of protoinspect.sdk.bundle: writing, loading, verification and crash-safety of model bundles."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from protoinspect.sdk import bundle as bundle_mod
from protoinspect.sdk.bundle import (
    FORMAT_VERSION,
    Bundle,
    Manifest,
    add_files,
    compute_bundle_id,
    load_bundle,
    sha256_file,
    write_bundle,
)
from protoinspect.sdk.errors import BundleError

from bundle_fixtures import SPEC, WEIGHTS, edit_manifest, make_bundle, manifest_fields

_fields = manifest_fields
_edit_manifest = edit_manifest


@pytest.fixture()
def bundle_dir(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "bundle")


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# -- round trip --------------------------------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "weights.bin"
    src.write_bytes(WEIGHTS)
    out = tmp_path / "nested" / "bundle"
    written = write_bundle(out, manifest_fields=_fields(), files={"detector.safetensors": src, "b.bin": b""})

    loaded = load_bundle(out)
    assert isinstance(loaded, Bundle)
    assert loaded.manifest == written
    assert Manifest.from_dict(written.to_dict()) == written
    assert loaded.manifest.preprocess_spec == SPEC
    assert loaded.manifest.preprocess_spec.color_order == "bgr"
    assert loaded.manifest.thresholds["image"] == 0.5 and isinstance(loaded.manifest.thresholds["image"], float)
    assert loaded.manifest.extra["tuple"] == [1, 2]
    assert loaded.manifest.classes[1]["name"] == "scratch"

    sha = hashlib.sha256(WEIGHTS).hexdigest()
    assert loaded.manifest.files["detector.safetensors"] == {"sha256": sha, "bytes": len(WEIGHTS)}
    assert loaded.manifest.files["b.bin"]["bytes"] == 0
    expected_id = hashlib.sha256(
        json.dumps(sorted([[n, e["sha256"]] for n, e in loaded.manifest.files.items()]), separators=(",", ":")).encode()
    ).hexdigest()[:16]
    assert loaded.manifest.bundle_id == expected_id == compute_bundle_id(loaded.manifest.files)
    assert loaded.read_bytes("detector.safetensors") == WEIGHTS
    assert loaded.file_path("detector.safetensors") == out / "detector.safetensors"
    assert sha256_file(out / "detector.safetensors") == sha

    text = (out / "manifest.json").read_text()
    raw = json.loads(text)
    assert text == json.dumps(raw, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert raw["format"] == "protoinspect-bundle" and raw["format_version"] == FORMAT_VERSION
    # nothing but the bundle is left in the parent (no temp dirs, no backups)
    assert sorted(p.name for p in out.parent.iterdir()) == ["bundle"]
    assert sorted(p.name for p in out.iterdir()) == ["b.bin", "detector.safetensors", "manifest.json"]


def test_defaults_and_preprocess_dict(tmp_path: Path) -> None:
    m = write_bundle(
        tmp_path / "b",
        manifest_fields={"preprocess": SPEC.to_dict(), "model": {"architecture": "x"},
                         "thresholds": {"image": 1, "pixel": 2, "calibration": {}}},
        files={"detector.safetensors": b"w"},
    )
    assert m.classes == [] and m.datasets == [] and m.extra == {}
    assert set(m.producer) == {"protoinspect_version", "command"}
    assert m.created_utc.endswith("Z")
    assert load_bundle(tmp_path / "b").manifest == m


def test_sha256_file_streams(tmp_path: Path) -> None:
    p = tmp_path / "big.bin"
    data = os.urandom((1 << 20) * 2 + 123)
    p.write_bytes(data)
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()


def test_no_torch_import() -> None:
    code = "import sys, protoinspect.sdk.bundle; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


# -- damaged bundles ----------------------------------------------------------------------------------


def test_truncated_file(bundle_dir: Path) -> None:
    p = bundle_dir / "detector.safetensors"
    p.write_bytes(WEIGHTS[:-10])
    for verify in (True, False):  # size is checked even without hashing
        with pytest.raises(BundleError, match=r"detector\.safetensors.*truncated") as ei:
            load_bundle(bundle_dir, verify=verify)
        assert "restore the file" in str(ei.value)
        assert "python -m protoinspect.training.train_detector" in str(ei.value)


def test_tampered_file_same_size(bundle_dir: Path) -> None:
    p = bundle_dir / "detector.safetensors"
    data = bytearray(p.read_bytes())
    data[1234] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"detector\.safetensors.*sha256") as ei:
        load_bundle(bundle_dir)
    assert "restore the file" in str(ei.value)
    # verify=False skips hashing, but read_bytes still catches it
    b = load_bundle(bundle_dir, verify=False)
    with pytest.raises(BundleError, match=r"detector\.safetensors.*sha256"):
        b.read_bytes("detector.safetensors")


def test_missing_file(bundle_dir: Path) -> None:
    (bundle_dir / "prototypes.npy").unlink()
    with pytest.raises(BundleError, match=r"prototypes\.npy.*missing") as ei:
        load_bundle(bundle_dir)
    assert "restore the file" in str(ei.value)


def test_corrupt_manifest(bundle_dir: Path) -> None:
    mpath = bundle_dir / "manifest.json"
    text = mpath.read_text()
    mpath.write_text(text[: len(text) // 2])
    with pytest.raises(BundleError, match=r"corrupt manifest.*manifest\.json"):
        load_bundle(bundle_dir)


def test_manifest_not_an_object(bundle_dir: Path) -> None:
    (bundle_dir / "manifest.json").write_text("[1, 2]")
    with pytest.raises(BundleError, match=r"manifest\.json must contain a JSON object"):
        load_bundle(bundle_dir)


def test_missing_manifest(bundle_dir: Path) -> None:
    (bundle_dir / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"manifest\.json not found"):
        load_bundle(bundle_dir)


def test_not_a_bundle_paths(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(f)


def test_unlisted_file_requested(bundle_dir: Path) -> None:
    (bundle_dir / "stray.onnx").write_bytes(b"not listed")  # unlisted files on disk are ignored
    b = load_bundle(bundle_dir)
    for call in (b.file_path, b.read_bytes):
        with pytest.raises(BundleError, match=r"no file 'stray\.onnx'.*detector\.safetensors"):
            call("stray.onnx")


# -- writing ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../x.bin", "a/b.bin", "a\\b.bin", "..", ".", "", ".hidden", "manifest.json", "/abs.bin", " x.bin"]
)
def test_bad_file_names(tmp_path: Path, name: str) -> None:
    out = tmp_path / "b"
    with pytest.raises(BundleError, match="file name"):
        write_bundle(out, manifest_fields=_fields(), files={name: b"x"})
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_bad_sources_and_fields(tmp_path: Path) -> None:
    out = tmp_path / "b"
    with pytest.raises(BundleError, match=r"'detector\.safetensors'.*pathlib\.Path"):
        write_bundle(out, manifest_fields=_fields(), files={"detector.safetensors": "weights.bin"})  # type: ignore[dict-item]
    with pytest.raises(BundleError, match=r"computes"):
        write_bundle(out, manifest_fields=_fields(bundle_id="abc"), files={})
    with pytest.raises(BundleError, match=r"missing required keys \['thresholds'\]"):
        f = _fields()
        del f["thresholds"]
        write_bundle(out, manifest_fields=f, files={})
    with pytest.raises(BundleError, match=r"'thresholds'.*NaN"):
        write_bundle(out, manifest_fields=_fields(thresholds={"image": float("nan"), "pixel": 0.0, "calibration": {}}), files={})
    assert list(tmp_path.iterdir()) == []


def test_overwrite_false_refuses(bundle_dir: Path) -> None:
    before = _snapshot(bundle_dir)
    with pytest.raises(BundleError, match=r"exists; pass overwrite=True or choose another path"):
        write_bundle(bundle_dir, manifest_fields=_fields(), files={"detector.safetensors": b"new"})
    assert _snapshot(bundle_dir) == before


def test_overwrite_true_replaces(bundle_dir: Path) -> None:
    m = write_bundle(bundle_dir, manifest_fields=_fields(), files={"detector.safetensors": b"new"}, overwrite=True)
    b = load_bundle(bundle_dir)
    assert b.manifest == m
    assert sorted(b.manifest.files) == ["detector.safetensors"]
    assert not (bundle_dir / "prototypes.npy").exists()
    assert sorted(p.name for p in bundle_dir.parent.iterdir()) == ["bundle"]  # backup removed


def test_overwrite_refuses_non_bundle_directory(tmp_path: Path) -> None:
    d = tmp_path / "precious"
    d.mkdir()
    (d / "thesis.tex").write_text("do not delete")
    with pytest.raises(BundleError, match="not a ProtoInspect bundle"):
        write_bundle(d, manifest_fields=_fields(), files={}, overwrite=True)
    assert (d / "thesis.tex").read_text() == "do not delete"


def test_overwrite_keeps_old_bundle_when_writing_fails(bundle_dir: Path, tmp_path: Path) -> None:
    before = _snapshot(bundle_dir)
    missing = tmp_path / "does_not_exist.safetensors"
    with pytest.raises(BundleError, match=r"'detector\.safetensors'.*does not exist.*does_not_exist\.safetensors"):
        write_bundle(
            bundle_dir,
            manifest_fields=_fields(),
            files={"a.bin": b"fine", "detector.safetensors": missing},
            overwrite=True,
        )
    assert _snapshot(bundle_dir) == before
    assert load_bundle(bundle_dir).read_bytes("detector.safetensors") == WEIGHTS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # temp dir cleaned up


def test_overwrite_restores_old_bundle_when_swap_fails(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _snapshot(bundle_dir)
    real_rename = os.rename
    calls: list[tuple[str, str]] = []

    def flaky_rename(src: Any, dst: Any) -> None:
        calls.append((str(src), str(dst)))
        if Path(src).name.startswith(".bundle.tmp-"):
            raise OSError("simulated crash while moving the new bundle into place")
        real_rename(src, dst)

    monkeypatch.setattr(bundle_mod.os, "rename", flaky_rename)
    with pytest.raises(BundleError, match="simulated crash"):
        write_bundle(bundle_dir, manifest_fields=_fields(), files={"detector.safetensors": b"new"}, overwrite=True)
    monkeypatch.undo()
    assert any(".bak-" in dst for _, dst in calls)  # old bundle was moved aside, then moved back
    assert _snapshot(bundle_dir) == before
    assert load_bundle(bundle_dir).manifest.files["detector.safetensors"]["bytes"] == len(WEIGHTS)
    assert sorted(p.name for p in bundle_dir.parent.iterdir()) == ["bundle"]


def test_missing_bundle_mentions_backup(tmp_path: Path) -> None:
    (tmp_path / "bundle.bak-20250101T000000000000Z").mkdir()
    with pytest.raises(BundleError, match=r"bundle\.bak-20250101T000000000000Z"):
        load_bundle(tmp_path / "bundle")


# -- add_files ----------------------------------------------------------------------------------------


def test_add_files_updates_hashes_and_bundle_id(bundle_dir: Path, tmp_path: Path) -> None:
    old = load_bundle(bundle_dir).manifest
    onnx_src = tmp_path / "model.onnx"
    onnx_src.write_bytes(b"onnx-graph" * 100)
    new = add_files(bundle_dir, {"detector.onnx": onnx_src, "prototypes.npy": b"\x93NUMPY-v2"})

    loaded = load_bundle(bundle_dir)
    assert loaded.manifest == new
    assert new.bundle_id != old.bundle_id
    assert new.bundle_id == compute_bundle_id(new.files)
    assert new.files["detector.onnx"] == {
        "sha256": hashlib.sha256(b"onnx-graph" * 100).hexdigest(), "bytes": 1000
    }
    assert new.files["prototypes.npy"]["sha256"] == hashlib.sha256(b"\x93NUMPY-v2").hexdigest()
    assert new.files["prototypes.npy"] != old.files["prototypes.npy"]
    assert new.files["detector.safetensors"] == old.files["detector.safetensors"]
    assert new.created_utc == old.created_utc and new.preprocess_spec == SPEC
    assert loaded.read_bytes("prototypes.npy") == b"\x93NUMPY-v2"
    assert sorted(p.name for p in bundle_dir.iterdir()) == [
        "detector.onnx", "detector.safetensors", "manifest.json", "prototypes.npy"
    ]  # no temp files left


def test_add_files_failure_leaves_bundle_untouched(bundle_dir: Path, tmp_path: Path) -> None:
    before = _snapshot(bundle_dir)
    with pytest.raises(BundleError, match=r"'classifier\.onnx'.*does not exist"):
        add_files(bundle_dir, {"prototypes.npy": b"changed", "classifier.onnx": tmp_path / "missing.onnx"})
    with pytest.raises(BundleError, match="file name"):
        add_files(bundle_dir, {"../escape.onnx": b"x"})
    assert _snapshot(bundle_dir) == before
    load_bundle(bundle_dir)


def test_add_files_merges_extra_in_the_same_manifest_write(bundle_dir: Path) -> None:
    old = load_bundle(bundle_dir).manifest
    record = {"file": "detector.onnx", "opset": 17, "parity": {"map_max_abs_diff": np.float32(2.5e-7)}}
    new = add_files(bundle_dir, {"detector.onnx": b"graph"}, extra={"onnx": record})
    assert load_bundle(bundle_dir).manifest == new
    assert new.extra == {**old.extra, "onnx": {"file": "detector.onnx", "opset": 17, "parity": {"map_max_abs_diff": float(np.float32(2.5e-7))}}}
    # a later call replaces that key and keeps the others
    newer = add_files(bundle_dir, {"detector.onnx": b"graph2"}, extra={"onnx": {"opset": 18}})
    assert newer.extra == {**old.extra, "onnx": {"opset": 18}}
    assert add_files(bundle_dir, {"prototypes.npy": b"p"}).extra == newer.extra  # extra=None keeps it


def test_add_files_bad_extra_leaves_bundle_untouched(bundle_dir: Path) -> None:
    before = _snapshot(bundle_dir)
    with pytest.raises(BundleError, match="extra must be a mapping"):
        add_files(bundle_dir, {"detector.onnx": b"x"}, extra=["onnx"])  # type: ignore[arg-type]
    with pytest.raises(BundleError, match="'extra'.*NaN"):
        add_files(bundle_dir, {"detector.onnx": b"x"}, extra={"onnx": {"diff": float("nan")}})
    assert _snapshot(bundle_dir) == before


def test_add_files_refuses_broken_bundle(bundle_dir: Path) -> None:
    (bundle_dir / "prototypes.npy").write_bytes(b"")
    with pytest.raises(BundleError, match=r"prototypes\.npy.*truncated"):
        add_files(bundle_dir, {"detector.onnx": b"x"})
    # replacing the broken file itself repairs the bundle
    add_files(bundle_dir, {"prototypes.npy": b"fixed"})
    assert load_bundle(bundle_dir).read_bytes("prototypes.npy") == b"fixed"
