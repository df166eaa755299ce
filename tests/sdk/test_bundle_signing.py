"""Signed bundles (protoinspect.sdk.bundle_signing): keys, sign, verify, every tampering case, the Inspector's
``trusted_keys``, the commands, and the install hint when ``cryptography`` is missing."""

from __future__ import annotations

import base64
import json
import shutil
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from bundle_fixtures import edit_manifest, make_bundle
from import_probe import loaded_after

from protoinspect.sdk.bundle import add_files, load_bundle
from protoinspect.sdk.bundle_signing import (
    SIGNATURE_NAME,
    generate_keypair,
    load_signed_bundle,
    sign_bundle,
    verify_bundle,
)
from protoinspect.sdk.config import InspectorConfig
from protoinspect.sdk.errors import BundleError, BundleSignatureError, ConfigError, MissingDependencyError
from protoinspect.sdk.manifest_writer import seal

pytest.importorskip("cryptography")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two key pairs: the release key and another one."""
    d = tmp_path_factory.mktemp("keys")
    generate_keypair(d / "release.key")
    generate_keypair(d / "other.key")
    return {"key": d / "release.key", "pub": d / "release.key.pub",
            "other_key": d / "other.key", "other_pub": d / "other.key.pub"}


@pytest.fixture()
def signed(tmp_path: Path, keys: dict[str, Path]) -> Path:
    """A small sealed bundle signed with the release key (a fresh copy per test)."""
    bundle = make_bundle(tmp_path / "bundle")
    sign_bundle(bundle, keys["key"])
    return bundle


def _refused(bundle: Path, trusted: list[Path], match: str) -> BundleSignatureError:
    with pytest.raises(BundleSignatureError, match=match) as info:
        verify_bundle(bundle, trusted)
    return info.value


def test_sign_and_verify(signed: Path, keys: dict[str, Path]) -> None:
    info = verify_bundle(signed, [keys["other_pub"], keys["pub"]])
    manifest = load_bundle(signed).manifest
    assert (info.bundle_id, info.manifest_digest, info.algorithm) == (manifest.bundle_id, manifest.digest, "ed25519")
    sig = json.loads((signed / SIGNATURE_NAME).read_text())
    assert sig["key_id"] == info.key_id and len(info.key_id) == 16
    assert sig["public_key"] == keys["pub"].read_text()
    assert len(base64.b64decode(sig["signature"])) == 64
    assert SIGNATURE_NAME not in manifest.files  # the signature is not part of what it signs
    # PEM text works as well as a path; the signed bundle still loads as before
    assert verify_bundle(signed, [keys["pub"].read_text()]).key_id == info.key_id
    bundle, _ = load_signed_bundle(signed, [keys["pub"]])
    assert bundle.manifest == manifest


def test_private_key_never_enters_the_bundle(signed: Path, keys: dict[str, Path]) -> None:
    from cryptography.hazmat.primitives import serialization as ser

    pem = keys["key"].read_bytes()
    private = ser.load_pem_private_key(pem, password=None)
    raw = private.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption())
    secrets = [pem, raw, base64.b64encode(raw), raw.hex().encode(), b"PRIVATE KEY", pem.splitlines()[1]]
    for f in signed.iterdir():
        data = f.read_bytes()
        assert not any(s in data for s in secrets), f.name


def test_unsigned_bundle_refused(tmp_path: Path, keys: dict[str, Path]) -> None:
    bundle = make_bundle(tmp_path / "b")
    _refused(bundle, [keys["pub"]], "is not signed")


def test_missing_bundle_is_a_bundle_error(tmp_path: Path, keys: dict[str, Path]) -> None:
    with pytest.raises(BundleError, match="does not exist") as info:
        verify_bundle(tmp_path / "nowhere", [keys["pub"]])
    assert not isinstance(info.value, BundleSignatureError)


def test_unknown_key_refused_naming_it(signed: Path, keys: dict[str, Path]) -> None:
    kid = json.loads((signed / SIGNATURE_NAME).read_text())["key_id"]
    err = _refused(signed, [keys["other_pub"]], f"signed by key {kid}, which is not a trusted key")
    assert "trusted:" in str(err)


def test_changed_file_refused(signed: Path, keys: dict[str, Path]) -> None:
    weights = signed / "detector.safetensors"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    err = _refused(signed, [keys["pub"]], "changed after it was signed")
    assert "detector.safetensors" in str(err) and "sha256" in str(err)


def test_edited_manifest_refused(signed: Path, keys: dict[str, Path]) -> None:
    edit_manifest(signed, thresholds={"image": 99.0, "pixel": 0.25, "calibration": {}})  # digest now wrong
    err = _refused(signed, [keys["pub"]], "changed after it was signed")
    assert "manifest.json" in str(err)


def test_resealed_manifest_refused(signed: Path, keys: dict[str, Path]) -> None:
    """An edit resealed with the manifest writer has a consistent digest: only the signature catches it."""
    d = json.loads((signed / "manifest.json").read_text())
    d["thresholds"]["image"] = 99.0
    _, text = seal(d)
    (signed / "manifest.json").write_text(text)
    assert load_bundle(signed).manifest.thresholds["image"] == 99.0  # the digest alone accepts it
    _refused(signed, [keys["pub"]], "changed after it was signed by key .*is not the one signed")


def test_files_added_after_signing_refused(signed: Path, keys: dict[str, Path]) -> None:
    add_files(signed, {"detector.onnx": b"not really onnx"})
    _refused(signed, [keys["pub"]], "changed after it was signed")


def test_forged_signature_fields_refused(signed: Path, keys: dict[str, Path]) -> None:
    """Editing a signed field (here the time) or the signature bytes breaks the signature."""
    spath = signed / SIGNATURE_NAME
    sig = json.loads(spath.read_text())
    spath.write_text(json.dumps({**sig, "signed_utc": "2000-01-01T00:00:00Z"}))
    _refused(signed, [keys["pub"]], "is invalid")
    bad = bytearray(base64.b64decode(sig["signature"]))
    bad[0] ^= 1
    spath.write_text(json.dumps({**sig, "signature": base64.b64encode(bytes(bad)).decode()}))
    _refused(signed, [keys["pub"]], "is invalid")


@pytest.mark.parametrize("content, match", [
    (b"{not json", "corrupt signature file"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"format": "protoinspect-bundle-signature"}', "missing or invalid"),
    (None, "'signature' is not base64"),
])
def test_corrupt_signature_file_refused(signed: Path, keys: dict[str, Path], content: bytes | None, match: str) -> None:
    spath = signed / SIGNATURE_NAME
    if content is None:
        content = json.dumps({**json.loads(spath.read_text()), "signature": "***"}).encode()
    spath.write_bytes(content)
    _refused(signed, [keys["pub"]], match)


def test_signature_from_another_bundle_refused(signed: Path, tmp_path: Path, keys: dict[str, Path]) -> None:
    other = make_bundle(tmp_path / "other")
    edit_manifest(other, reseal=True, extra={"note": "a different bundle"})
    shutil.copy(signed / SIGNATURE_NAME, other / SIGNATURE_NAME)
    _refused(other, [keys["pub"]], f"comes from another bundle|{SIGNATURE_NAME} was altered")


def test_legacy_bundle_cannot_be_signed(tmp_path: Path, keys: dict[str, Path]) -> None:
    bundle = make_bundle(tmp_path / "legacy")
    d = json.loads((bundle / "manifest.json").read_text())
    d["format_version"] = 1
    del d["digest"]
    (bundle / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(BundleSignatureError, match="protoinspect upgrade-bundle"):
        sign_bundle(bundle, keys["key"])
    assert not (bundle / SIGNATURE_NAME).exists()


def test_bad_key_files(tmp_path: Path, keys: dict[str, Path]) -> None:
    bundle = make_bundle(tmp_path / "b")
    with pytest.raises(BundleSignatureError, match="cannot read private key"):
        sign_bundle(bundle, tmp_path / "missing.key")
    with pytest.raises(BundleSignatureError, match="this is a public key"):
        sign_bundle(bundle, keys["pub"])
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(BundleSignatureError, match="not a PEM private key"):
        sign_bundle(bundle, junk)
    sign_bundle(bundle, keys["key"])
    with pytest.raises(BundleSignatureError, match="is a private key"):
        verify_bundle(bundle, [keys["key"]])
    with pytest.raises(BundleSignatureError, match="not a PEM public key"):
        verify_bundle(bundle, [junk])
    with pytest.raises(BundleSignatureError, match="cannot read trusted key file"):
        verify_bundle(bundle, [tmp_path / "missing.pub"])
    with pytest.raises(ConfigError, match="no trusted keys"):
        verify_bundle(bundle, [])
    inside = bundle / "release.key"
    shutil.copy(keys["key"], inside)
    with pytest.raises(BundleSignatureError, match="inside bundle"):
        sign_bundle(bundle, inside)


def test_keygen_mode_and_no_overwrite(tmp_path: Path) -> None:
    key = tmp_path / "k"
    kid = generate_keypair(key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert (tmp_path / "k.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    before = key.read_bytes()
    with pytest.raises(BundleSignatureError, match="exists; pass --overwrite"):
        generate_keypair(key)
    assert key.read_bytes() == before
    assert generate_keypair(key, overwrite=True) != kid
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.read_bytes() != before
    bundle = make_bundle(tmp_path / "b")
    with pytest.raises(BundleSignatureError, match="inside a bundle directory"):
        generate_keypair(bundle / "k")


def test_config_trusted_keys_validated_and_round_trips(keys: dict[str, Path]) -> None:
    cfg = InspectorConfig(trusted_keys=[keys["pub"]])
    assert cfg.trusted_keys == (str(keys["pub"]),)
    assert InspectorConfig.from_dict(cfg.to_dict()) == cfg
    assert InspectorConfig().trusted_keys == ()
    for bad in ("a.pub", [1], [""]):
        with pytest.raises(ConfigError, match="trusted_keys"):
            InspectorConfig(trusted_keys=bad)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def detector_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from detector_bundles import make_detector_bundle

    return make_detector_bundle(tmp_path_factory.mktemp("det") / "bundle", np.random.default_rng(0))


def test_inspector_with_trusted_keys(detector_bundle: Path, tmp_path: Path, keys: dict[str, Path]) -> None:
    from protoinspect.sdk.inspector import Inspector

    bundle = tmp_path / "b"
    shutil.copytree(detector_bundle, bundle)
    cfg = InspectorConfig(trusted_keys=(str(keys["pub"]),))
    with pytest.raises(BundleSignatureError, match="is not signed"):
        Inspector.from_bundle(bundle, backend="torch", config=cfg)
    sign_bundle(bundle, keys["key"])
    with Inspector.from_bundle(bundle, backend="torch", config=cfg) as insp:
        assert insp.inspect(np.zeros((64, 64, 3), np.uint8)).verdict is not None
    with pytest.raises(BundleSignatureError, match="not a trusted key"):
        Inspector.from_bundle(bundle, backend="torch", config=InspectorConfig(trusted_keys=(str(keys["other_pub"]),)))
    weights = bundle / "detector.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleSignatureError, match="changed after it was signed.*detector.safetensors"):
        Inspector.from_bundle(bundle, backend="torch", config=cfg)
    with pytest.raises(BundleError):  # without keys the sha256 check still refuses it, as before
        Inspector.from_bundle(bundle, backend="torch")


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from protoinspect.pipelines.cli import main

    key = tmp_path / "keys" / "k"
    bundle = make_bundle(tmp_path / "b")
    assert main(["keygen", "--out", str(key)]) == 0
    assert "key id" in capsys.readouterr().out
    assert main(["keygen", "--out", str(key)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["verify", str(bundle), "--trusted-key", f"{key}.pub"]) == 2
    assert "is not signed" in capsys.readouterr().err
    assert main(["sign", str(bundle), "--key", str(key)]) == 0
    assert main(["verify", str(bundle), "--trusted-key", f"{key}.pub"]) == 0
    assert "OK" in capsys.readouterr().out
    edit_manifest(bundle, reseal=True, extra={"note": "edited"})
    assert main(["verify", str(bundle), "--trusted-key", f"{key}.pub"]) == 2
    assert "changed after it was signed" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["verify", str(bundle)])  # --trusted-key is required
    assert info.value.code == 2


@pytest.fixture()
def no_cryptography(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``import cryptography...`` fails as if the package were not installed."""
    for name in [m for m in sys.modules if m == "cryptography" or m.startswith("cryptography.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "cryptography", None)
    yield


def test_missing_cryptography_names_the_extra(no_cryptography: None, tmp_path: Path, keys: dict[str, Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    bundle = make_bundle(tmp_path / "b")
    hint = 'pip install "protoinspect\\[signing\\]"'
    with pytest.raises(MissingDependencyError, match=hint):
        generate_keypair(tmp_path / "k")
    with pytest.raises(MissingDependencyError, match=hint):
        sign_bundle(bundle, keys["key"])
    with pytest.raises(MissingDependencyError, match=hint):
        verify_bundle(bundle, [keys["pub"]])
    from protoinspect.pipelines.cli import main

    assert main(["verify", str(bundle), "--trusted-key", str(keys["pub"])]) == 2
    assert "protoinspect[signing]" in capsys.readouterr().err


def test_runtime_imports_cryptography_only_when_signing_is_used() -> None:
    assert loaded_after("import protoinspect.sdk.inspector, protoinspect.sdk.bundle_signing", ("cryptography",)) == []
