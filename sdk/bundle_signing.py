"""Signed bundles: an Ed25519 signature over a sealed bundle's manifest digest, kept in ``signature.json``.

The manifest digest (:mod:`protoinspect.sdk.manifest_digest`) covers the whole manifest, and through the
sha256 it lists for every file, every file; it detects edits, not forgery. A signature by a release key
adds who released it: :func:`sign_bundle` signs ``bundle_id`` and ``digest`` (plus the key id and time),
:func:`verify_bundle` / :func:`load_signed_bundle` check every file's sha256, the manifest digest and the
signature against a set of trusted public keys. Any change of a file or of the manifest after signing
(even one resealed with a new digest) breaks it.

``signature.json`` sits next to ``manifest.json`` and is NOT listed in it (the manifest is what is signed)::

    {"format": "protoinspect-bundle-signature", "version": 1, "algorithm": "ed25519",
     "key_id": "<16 hex: sha256 of the raw public key>", "public_key": "<PEM>",
     "bundle_id": "...", "manifest_digest": "...", "signed_utc": "...", "signature": "<base64>"}

The signed message is the canonical JSON of every field but ``public_key`` and ``signature``, with
``bundle_id`` / ``manifest_digest`` taken from the manifest on disk. Private keys never enter a bundle.
Needs the ``cryptography`` package (``pip install "protoinspect[signing]"``), imported only when used.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from protoinspect.sdk._imports import require
from protoinspect.sdk.bundle import Bundle, load_bundle
from protoinspect.sdk.bundle_files import fsync_dir, write_text_fsync
from protoinspect.sdk.errors import (
    BundleError,
    BundleSignatureError,
    ConfigError,
    MissingDependencyError,
    ProtoInspectError,
    report_error,
)
from protoinspect.sdk.manifest import MANIFEST_NAME

SIGNATURE_NAME = "signature.json"
SIGNATURE_FORMAT = "protoinspect-bundle-signature"
SIGNATURE_VERSION = 1
ALGORITHM = "ed25519"
INSTALL_HINT = 'pip install "protoinspect[signing]"'
_SIGNED_FIELDS = ("format", "version", "algorithm", "key_id", "bundle_id", "manifest_digest", "signed_utc")

#: a trusted public key: a PEM file path, or the PEM text itself (str or bytes)
KeySource = str | bytes | os.PathLike

__all__ = ["SIGNATURE_NAME", "SignatureInfo", "generate_keypair", "key_id", "keygen_main", "load_signed_bundle",
           "sign_bundle", "sign_main", "verify_bundle", "verify_main"]


@dataclass(frozen=True)
class SignatureInfo:
    """A checked signature: the bundle it covers, the key that made it and when."""

    bundle_path: Path
    bundle_id: str
    manifest_digest: str
    key_id: str
    algorithm: str
    signed_utc: str


def _crypto(module: str) -> ModuleType:
    """``cryptography.<module>``, or MissingDependencyError naming the signing extra."""
    try:
        return require(f"cryptography.{module}")
    except MissingDependencyError as exc:
        msg = f"signed bundles need the 'cryptography' package: {INSTALL_HINT}"
        raise MissingDependencyError(msg) from exc


def _raw_public(public_key: Any) -> bytes:
    ser = _crypto("hazmat.primitives.serialization")
    return public_key.public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)


def _public_pem(public_key: Any) -> str:
    ser = _crypto("hazmat.primitives.serialization")
    return public_key.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


def key_id(public_key: Any) -> str:
    """Key id of an Ed25519 public key object: the first 16 hex characters of sha256 of its 32 raw bytes."""
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _message(fields: dict[str, Any]) -> bytes:
    payload = {k: fields[k] for k in _SIGNED_FIELDS}
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def generate_keypair(out: str | os.PathLike[str], *, overwrite: bool = False) -> str:
    """Write a new Ed25519 private key to ``out`` (PEM PKCS8, unencrypted, mode 0600) and its public key to
    ``out.pub`` (PEM); return the key id. Keep the private key off the line machines and out of bundles.

    Raises:
        BundleSignatureError: ``out`` or ``out.pub`` exists and ``overwrite`` is False, ``out`` is inside a
            bundle directory, or the files cannot be written.
        MissingDependencyError: ``cryptography`` is not installed.
    """
    key_path = Path(out)
    pub_path = key_path.with_name(key_path.name + ".pub")
    if (key_path.parent / MANIFEST_NAME).exists():
        raise BundleSignatureError(f"refusing to write private key {key_path} inside a bundle directory: "
                                   "keep signing keys out of bundles")
    existing = [str(p) for p in (key_path, pub_path) if p.exists() or p.is_symlink()]
    if existing and not overwrite:
        raise BundleSignatureError(f"key file {' and '.join(existing)} exists; pass --overwrite (overwrite=True) "
                                   "to replace it, or choose another path")
    ed = _crypto("hazmat.primitives.asymmetric.ed25519")
    ser = _crypto("hazmat.primitives.serialization")
    private = ed.Ed25519PrivateKey.generate()
    pem = private.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    try:
        key_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key_path.name}.tmp-", dir=key_path.parent)  # created 0600
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, key_path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        write_text_fsync(pub_path, _public_pem(private.public_key()))
    except OSError as exc:
        raise BundleSignatureError(f"cannot write key file {key_path}: {exc}") from exc
    return key_id(private.public_key())


def _load_private_key(key: str | os.PathLike[str]) -> Any:
    path = Path(key)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BundleSignatureError(f"cannot read private key file {path}: {exc}") from exc
    ed = _crypto("hazmat.primitives.asymmetric.ed25519")
    ser = _crypto("hazmat.primitives.serialization")
    try:
        private = ser.load_pem_private_key(data, password=None)
    except TypeError as exc:  # encrypted key without a password
        raise BundleSignatureError(f"private key file {path} is encrypted; use an unencrypted key made by "
                                   "`protoinspect keygen` (kept with mode 0600)") from exc
    except (ValueError, _crypto("exceptions").UnsupportedAlgorithm) as exc:
        hint = " (this is a public key: sign with the private key file, not KEY.pub)" if b"PUBLIC KEY" in data else ""
        raise BundleSignatureError(f"{path} is not a PEM private key{hint}: {exc}") from exc
    if not isinstance(private, ed.Ed25519PrivateKey):
        raise BundleSignatureError(f"{path} holds a {type(private).__name__}, not an Ed25519 private key; "
                                   "make one with `protoinspect keygen --out KEY`")
    return private


def _load_public_key(source: KeySource) -> Any:
    """A trusted Ed25519 public key from a PEM file path or PEM text."""
    if isinstance(source, bytes):
        data, where = source, "trusted key (PEM bytes)"
    elif isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        data, where = source.encode("ascii", "replace"), "trusted key (PEM text)"
    elif isinstance(source, (str, os.PathLike)):
        where = f"trusted key file {os.fspath(source)}"
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise BundleSignatureError(f"cannot read {where}: {exc}") from exc
    else:
        raise ConfigError(f"a trusted key must be a PEM file path or PEM text, got {type(source).__name__}")
    if b"PRIVATE KEY" in data:
        raise BundleSignatureError(f"{where} is a private key: trust the public key (KEY.pub), and keep the "
                                   "private key off the machines that load bundles")
    ed = _crypto("hazmat.primitives.asymmetric.ed25519")
    ser = _crypto("hazmat.primitives.serialization")
    try:
        public = ser.load_pem_public_key(data)
    except Exception as exc:  # ValueError / UnsupportedAlgorithm: not a PEM public key we can use
        raise BundleSignatureError(f"{where} is not a PEM public key: {exc}") from exc
    if not isinstance(public, ed.Ed25519PublicKey):
        raise BundleSignatureError(f"{where} holds a {type(public).__name__}, not an Ed25519 public key")
    return public


def _trusted_set(trusted_keys: Iterable[KeySource]) -> dict[str, Any]:
    if isinstance(trusted_keys, (str, bytes, os.PathLike)):
        trusted_keys = [trusted_keys]
    keys = {key_id(k): k for k in map(_load_public_key, trusted_keys)}
    if not keys:
        raise ConfigError("no trusted keys given: pass at least one public key (KEY.pub) to check signatures against")
    return keys


def _load_sealed(path: Path, *, action: str) -> Bundle:
    bundle = load_bundle(path, verify=True)
    if not bundle.manifest.sealed:
        raise BundleSignatureError(
            f"bundle {path} is a legacy bundle (format_version 1, manifest not sealed) and cannot be {action}: "
            f"run `protoinspect upgrade-bundle {path}` first, then sign it")
    if SIGNATURE_NAME in bundle.manifest.files:
        raise BundleSignatureError(f"bundle {path} lists an artefact named {SIGNATURE_NAME} in {MANIFEST_NAME}; "
                                   "that name is reserved for the bundle signature: re-create the bundle")
    return bundle


def sign_bundle(bundle_dir: str | os.PathLike[str], key: str | os.PathLike[str]) -> SignatureInfo:
    """Sign the sealed bundle at ``bundle_dir`` with the Ed25519 private key file ``key``.

    Every file is sha256-checked first (only an intact bundle is signed); ``signature.json`` is written
    atomically (replacing an earlier signature). Only the public key goes into the bundle.

    Raises:
        BundleError: the bundle is invalid or a file does not match the manifest.
        BundleSignatureError: a legacy (unsealed) bundle, a key file that is unreadable, not Ed25519 or
            inside the bundle, or the signature cannot be written.
        MissingDependencyError: ``cryptography`` is not installed.
    """
    path = Path(bundle_dir)
    if Path(key).resolve().parent == path.resolve():
        raise BundleSignatureError(f"private key {key} lies inside bundle {path}: move it out of the bundle first")
    bundle = _load_sealed(path, action="signed")
    private = _load_private_key(key)
    fields: dict[str, Any] = {
        "format": SIGNATURE_FORMAT, "version": SIGNATURE_VERSION, "algorithm": ALGORITHM,
        "key_id": key_id(private.public_key()), "bundle_id": bundle.manifest.bundle_id,
        "manifest_digest": bundle.manifest.digest, "signed_utc": _utc_now(),
    }
    fields["signature"] = base64.b64encode(private.sign(_message(fields))).decode("ascii")
    fields["public_key"] = _public_pem(private.public_key())
    fd, tmp = tempfile.mkstemp(prefix=f".{SIGNATURE_NAME}.tmp-", dir=path)
    os.close(fd)
    try:
        write_text_fsync(Path(tmp), json.dumps(fields, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path / SIGNATURE_NAME)
    except OSError as exc:
        raise BundleSignatureError(f"cannot write {path / SIGNATURE_NAME}: {exc}") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)
    fsync_dir(path)
    return _info(path, fields)


def _info(path: Path, fields: dict[str, Any]) -> SignatureInfo:
    return SignatureInfo(bundle_path=path, bundle_id=fields["bundle_id"], manifest_digest=fields["manifest_digest"],
                         key_id=fields["key_id"], algorithm=fields["algorithm"], signed_utc=fields["signed_utc"])


def _read_signature(path: Path) -> dict[str, Any]:
    spath = path / SIGNATURE_NAME
    if not spath.is_file():
        raise BundleSignatureError(
            f"bundle {path} is not signed (no {SIGNATURE_NAME}) and trusted keys are configured: sign it with "
            f"`protoinspect sign {path} --key KEY`, or load it without trusted_keys")
    try:
        fields = json.loads(spath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleSignatureError(f"corrupt signature file {spath}: {exc}; re-sign the bundle") from exc
    if not isinstance(fields, dict):
        raise BundleSignatureError(f"corrupt signature file {spath}: not a JSON object; re-sign the bundle")
    missing = [k for k in (*_SIGNED_FIELDS, "signature")
               if not (type(fields.get(k)) is int if k == "version" else isinstance(fields.get(k), str))]
    if missing or fields["format"] != SIGNATURE_FORMAT or fields["version"] != SIGNATURE_VERSION:
        what = (f"missing or invalid {missing}" if missing
                else f"not a {SIGNATURE_FORMAT} version {SIGNATURE_VERSION} file")
        raise BundleSignatureError(f"corrupt signature file {spath}: {what}; re-sign the bundle")
    if fields["algorithm"] != ALGORITHM:
        raise BundleSignatureError(f"signature file {spath} uses algorithm {fields['algorithm']!r}; only "
                                   f"{ALGORITHM!r} is supported")
    try:
        fields["signature_bytes"] = base64.b64decode(str(fields["signature"]), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BundleSignatureError(f"corrupt signature file {spath}: 'signature' is not base64 ({exc}); "
                                   "re-sign the bundle") from exc
    return fields


def load_signed_bundle(bundle_dir: str | os.PathLike[str],
                       trusted_keys: Iterable[KeySource]) -> tuple[Bundle, SignatureInfo]:
    """Load the bundle at ``bundle_dir`` (every file sha256-checked) and check its signature against
    ``trusted_keys`` (PEM file paths or PEM text); return the bundle and its signature.

    Raises:
        BundleSignatureError: the bundle is unsigned, signed by a key not in the trusted set (named by key
            id), changed after signing (a file or the manifest, named), or its signature file is corrupt or
            invalid; a trusted key cannot be read.
        BundleError: the bundle itself is missing or invalid (not a signature problem).
        ConfigError: no trusted keys.
        MissingDependencyError: ``cryptography`` is not installed.
    """
    path = Path(bundle_dir)
    keys = _trusted_set(trusted_keys)
    if not (path / MANIFEST_NAME).is_file():
        load_bundle(path)  # not a bundle at all: its own BundleError says so
    fields = _read_signature(path)
    kid = str(fields["key_id"])
    if kid not in keys:
        raise BundleSignatureError(
            f"bundle {path} is signed by key {kid}, which is not a trusted key (trusted: {', '.join(sorted(keys))}): "
            "add that key's public key to trusted_keys if you trust its owner, or re-sign with a trusted key")
    try:
        bundle = _load_sealed(path, action="verified")
    except BundleSignatureError:
        raise
    except BundleError as exc:
        if not (path / MANIFEST_NAME).is_file():
            raise
        raise BundleSignatureError(f"bundle {path} changed after it was signed by key {kid}: {exc}") from exc
    m = bundle.manifest
    if (fields["bundle_id"], fields["manifest_digest"]) != (m.bundle_id, m.digest):
        raise BundleSignatureError(
            f"bundle {path} changed after it was signed by key {kid}: its {MANIFEST_NAME} (bundle_id {m.bundle_id}, "
            f"digest {m.digest}) is not the one signed (bundle_id {fields['bundle_id']}, digest "
            f"{fields['manifest_digest']}): the manifest was edited or its files replaced, or {SIGNATURE_NAME} "
            "comes from another bundle")
    current = {**fields, "bundle_id": m.bundle_id, "manifest_digest": m.digest}
    invalid = _crypto("exceptions").InvalidSignature
    try:
        keys[kid].verify(fields["signature_bytes"], _message(current))
    except invalid:
        raise BundleSignatureError(
            f"signature of bundle {path} by key {kid} is invalid: {SIGNATURE_NAME} was altered or forged, or the "
            "bundle changed after signing; re-sign it with the release key") from None
    return bundle, _info(path, current)


def verify_bundle(bundle_dir: str | os.PathLike[str], trusted_keys: Iterable[KeySource]) -> SignatureInfo:
    """Check that the bundle at ``bundle_dir`` is intact and signed by one of ``trusted_keys``; the loader
    of a server calls this before serving a bundle. Raises as :func:`load_signed_bundle`."""
    return load_signed_bundle(bundle_dir, trusted_keys)[1]


# ----------------------------------------------------------------------------------------- commands

def keygen_main(argv: Sequence[str] | None = None) -> int:
    """``protoinspect keygen --out KEY [--overwrite]``: write KEY (private, 0600) and KEY.pub; print the key id."""
    p = argparse.ArgumentParser(prog="protoinspect keygen", description=generate_keypair.__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="private key file to write (the public key goes to OUT.pub)")
    p.add_argument("--overwrite", action="store_true", help="replace existing key files")
    args = p.parse_args(argv)
    try:
        kid = generate_keypair(args.out, overwrite=args.overwrite)
    except ProtoInspectError as exc:
        return report_error(exc)
    print(f"key id {kid}: private key {args.out} (mode 0600, keep it secret), public key {args.out}.pub")
    return 0


def sign_main(argv: Sequence[str] | None = None) -> int:
    """``protoinspect sign BUNDLE --key KEY``: sign a sealed bundle; exit 0, or 2 with the reason."""
    p = argparse.ArgumentParser(prog="protoinspect sign", description=sign_bundle.__doc__.splitlines()[0])
    p.add_argument("bundle", help="bundle directory")
    p.add_argument("--key", required=True, help="Ed25519 private key file (from `protoinspect keygen`)")
    args = p.parse_args(argv)
    try:
        info = sign_bundle(args.bundle, args.key)
    except ProtoInspectError as exc:
        return report_error(exc)
    print(f"signed bundle {args.bundle} (bundle_id {info.bundle_id}, digest {info.manifest_digest}) with key "
          f"{info.key_id}: {Path(args.bundle) / SIGNATURE_NAME}")
    return 0


def verify_main(argv: Sequence[str] | None = None) -> int:
    """``protoinspect verify BUNDLE --trusted-key PUB [...]``: exit 0 when intact and signed by a trusted key,
    else 2 with the reason."""
    p = argparse.ArgumentParser(prog="protoinspect verify", description=verify_bundle.__doc__.splitlines()[0])
    p.add_argument("bundle", help="bundle directory")
    p.add_argument("--trusted-key", action="append", required=True, metavar="PUB",
                   help="trusted public key file (KEY.pub); repeat for several")
    args = p.parse_args(argv)
    try:
        info = verify_bundle(args.bundle, args.trusted_key)
    except ProtoInspectError as exc:
        return report_error(exc)
    print(f"OK: bundle {args.bundle} (bundle_id {info.bundle_id}) is intact and signed by trusted key "
          f"{info.key_id} at {info.signed_utc}")
    return 0

