"""Model bundles: a directory with ``manifest.json`` plus artefact files; nothing is pickled.

Training and export write bundles with :func:`write_bundle` / :func:`add_files`; the SDK reads them
with :func:`load_bundle`. Only the standard library and numpy are used here (an edge device running
the SDK may have no torch).

Layout::

    my_bundle/
        manifest.json           # written last; lists every artefact with its sha256 and size
        detector.safetensors    # weights (later also *.onnx, prototypes.npy, *.engine(.json), ...)

Writes are crash-safe: :func:`write_bundle` builds the bundle in a hidden temporary sibling directory
and renames it into place (an existing bundle is renamed to ``<name>.bak-<timestamp>`` first and only
removed once the new one is in place); :func:`add_files` stages every new file under a temporary
name, ``os.replace``-s it into place and replaces ``manifest.json`` last.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Union

import numpy as np

from sdk.errors import BundleError
from sdk.preprocess import PreprocessSpec

FORMAT = "protoinspect-bundle"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
CHUNK_BYTES = 1 << 20  # 1 MiB

RECREATE_HINT = "re-create the bundle with `python -m training.train_detector ...`"
UPGRADE_HINT = "upgrade protoinspect (pip install -U protoinspect) to read it"
REEXPORT_HINT = (
    "re-export it with `protoinspect export` (or re-train with `python -m training.train_detector ...`)"
)

FileSource = Union[bytes, bytearray, memoryview, os.PathLike]

# Keys of manifest.json, in the order of the schema.
_MANIFEST_KEYS = (
    "format",
    "format_version",
    "bundle_id",
    "created_utc",
    "producer",
    "preprocess",
    "model",
    "thresholds",
    "classes",
    "datasets",
    "files",
    "extra",
)
# Keys write_bundle computes itself; callers must not pass them in ``manifest_fields``.
_COMPUTED_KEYS = frozenset({"format", "format_version", "bundle_id", "files"})
_REQUIRED_FIELDS = frozenset({"preprocess", "model", "thresholds"})
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks (constant memory).

    Args:
        path: file to hash.

    Returns:
        Lower-case hex digest (64 characters).

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def compute_bundle_id(files: Mapping[str, Mapping[str, Any]]) -> str:
    """Bundle id: sha256 of the sorted ``(name, sha256)`` list (as compact JSON), first 16 hex chars.

    Args:
        files: the manifest's ``files`` mapping (name -> {"sha256": ..., "bytes": ...}).

    Returns:
        16 lower-case hex characters.
    """
    pairs = sorted([name, str(entry["sha256"])] for name, entry in files.items())
    blob = json.dumps(pairs, separators=(",", ":"), ensure_ascii=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def check_file_name(name: Any) -> str:
    """Check that ``name`` is a plain artefact file name and return it.

    A plain name is a non-empty string without path separators or NUL, is not ``.``/``..``, does not
    start with ``.`` (hidden names are reserved for temporary files) and is not ``manifest.json``.

    Raises:
        BundleError: the name is not plain.
    """
    if not isinstance(name, str) or not name:
        msg = f"bundle file name must be a non-empty string, got {name!r}"
        raise BundleError(msg)
    bad = (
        "/" in name
        or "\\" in name
        or "\0" in name
        or (os.sep in name)
        or (os.altsep is not None and os.altsep in name)
        or name in (".", "..")
        or name.startswith(".")
        or name.strip() != name
    )
    if bad:
        msg = (
            f"bad bundle file name {name!r}: use a plain file name such as 'detector.onnx' "
            "(no path separators, no '..', no leading '.', no surrounding spaces)"
        )
        raise BundleError(msg)
    if name == MANIFEST_NAME:
        msg = f"bad bundle file name {name!r}: {MANIFEST_NAME} is written by the bundle code itself"
        raise BundleError(msg)
    return name


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _package_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("protoinspect")
        except PackageNotFoundError:
            return "0+unknown"
    except ImportError:  # pragma: no cover
        return "0+unknown"


def _default_producer() -> dict[str, str]:
    argv = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    return {"protoinspect_version": _package_version(), "command": " ".join(argv)}


def _json_default(obj: Any) -> Any:
    """Make numpy scalars/arrays, paths and sets JSON-safe."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    msg = f"object of type {type(obj).__name__} is not JSON serialisable"
    raise TypeError(msg)


def _to_json_text(d: Mapping[str, Any]) -> str:
    """Pretty JSON with sorted keys; raises BundleError naming the offending top-level key."""
    for key, value in d.items():
        try:
            json.dumps(value, default=_json_default, allow_nan=False)
        except (TypeError, ValueError) as exc:
            msg = f"{MANIFEST_NAME} key '{key}' cannot be stored as JSON: {exc} (NaN/inf are not allowed)"
            raise BundleError(msg) from exc
    return json.dumps(d, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n"


def _fsync_dir(path: Path) -> None:
    """Best-effort fsync of a directory so renames inside it survive a power cut."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _copy_source(name: str, source: Any, dst: BinaryIO) -> tuple[str, int]:
    """Write one artefact source (bytes or a path) into ``dst``; return (sha256, size)."""
    h = hashlib.sha256()
    size = 0
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        dst.write(data)
        h.update(data)
        size = len(data)
    elif isinstance(source, os.PathLike):
        src_path = Path(source)
        if not src_path.is_file():
            what = "does not exist" if not src_path.exists() else "is not a regular file"
            msg = f"source for bundle file '{name}' {what}: {src_path}"
            raise BundleError(msg)
        try:
            with open(src_path, "rb") as f:
                while chunk := f.read(CHUNK_BYTES):
                    dst.write(chunk)
                    h.update(chunk)
                    size += len(chunk)
        except OSError as exc:
            msg = f"cannot read source for bundle file '{name}' ({src_path}): {exc}"
            raise BundleError(msg) from exc
    else:
        raise _source_type_error(name, source)
    dst.flush()
    os.fsync(dst.fileno())
    return h.hexdigest(), size


def _source_type_error(name: str, source: Any) -> BundleError:
    hint = " (wrap file paths in pathlib.Path)" if isinstance(source, str) else ""
    msg = f"source for bundle file '{name}' must be bytes or a pathlib.Path, got {type(source).__name__}{hint}"
    return BundleError(msg)


def _check_sources(files: Mapping[str, Any]) -> None:
    if not isinstance(files, Mapping):
        msg = f"files must be a mapping of file name -> bytes | Path, got {type(files).__name__}"
        raise BundleError(msg)
    for name, source in files.items():
        check_file_name(name)
        if not isinstance(source, (bytes, bytearray, memoryview, os.PathLike)):
            raise _source_type_error(name, source)


def _bad(key: str, problem: str) -> BundleError:
    return BundleError(f"{MANIFEST_NAME}: key '{key}' {problem}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# --------------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """Contents of a bundle's ``manifest.json``.

    Attributes:
        format: always ``"protoinspect-bundle"``.
        format_version: schema version (:data:`FORMAT_VERSION`).
        bundle_id: first 16 hex chars of the sha256 of the sorted (name, sha256) list.
        created_utc: ISO-8601 UTC creation time.
        producer: {"protoinspect_version": str, "command": str}.
        preprocess: :meth:`PreprocessSpec.to_dict` output.
        model: free dict (architecture name, config).
        thresholds: {"image": float, "pixel": float, "calibration": dict} (extra keys allowed).
        classes: list of {"id": int, "name": str, "known": bool, "discovered": bool} (may be empty).
        datasets: free list describing the training data.
        files: artefact name -> {"sha256": hex str, "bytes": int}.
        extra: free dict.
    """

    format: str
    format_version: int
    bundle_id: str
    created_utc: str
    producer: dict[str, Any]
    preprocess: dict[str, Any]
    model: dict[str, Any]
    thresholds: dict[str, Any]
    classes: list[dict[str, Any]]
    datasets: list[Any]
    files: dict[str, dict[str, Any]]
    extra: dict[str, Any]

    @property
    def preprocess_spec(self) -> PreprocessSpec:
        """The :class:`PreprocessSpec` stored in ``preprocess``."""
        return PreprocessSpec.from_dict(self.preprocess)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (a deep copy) in the manifest.json schema."""
        return {key: copy.deepcopy(getattr(self, key)) for key in _MANIFEST_KEYS}

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        """Validate a parsed manifest.json and build a :class:`Manifest`.

        ``format`` and ``format_version`` are checked first, so a bundle from another protoinspect
        version gets an upgrade / re-export message rather than a schema complaint.

        Args:
            d: the parsed JSON object.

        Returns:
            The manifest (holding deep copies; ``preprocess`` normalised through PreprocessSpec,
            thresholds as floats).

        Raises:
            BundleError: naming manifest.json and the missing / badly typed key.
        """
        if not isinstance(d, Mapping):
            msg = f"{MANIFEST_NAME} must contain a JSON object, got {type(d).__name__}; {RECREATE_HINT}"
            raise BundleError(msg)
        d = copy.deepcopy(dict(d))

        if "format" not in d:
            raise _bad("format", f"is missing: not a ProtoInspect bundle manifest (expected format '{FORMAT}')")
        if d["format"] != FORMAT:
            raise _bad("format", f"is {d['format']!r}, expected {FORMAT!r}: this is not a ProtoInspect bundle")
        if "format_version" not in d:
            raise _bad("format_version", f"is missing; {RECREATE_HINT}")
        version = d["format_version"]
        if not _is_int(version):
            raise _bad("format_version", f"must be an integer, got {version!r}")
        if version > FORMAT_VERSION:
            raise _bad(
                "format_version",
                f"is {version}, newer than this protoinspect supports ({FORMAT_VERSION}): {UPGRADE_HINT}",
            )
        if version < FORMAT_VERSION:
            raise _bad(
                "format_version",
                f"is {version}, older than this protoinspect supports ({FORMAT_VERSION}): {REEXPORT_HINT}",
            )

        missing = [k for k in _MANIFEST_KEYS if k not in d]
        if missing:
            raise _bad(missing[0], f"is missing (missing keys: {', '.join(missing)}); {RECREATE_HINT}")
        unknown = sorted(set(d) - set(_MANIFEST_KEYS))
        if unknown:
            raise _bad(unknown[0], f"is not part of format_version {FORMAT_VERSION} (unexpected keys: {unknown})")

        for key in ("bundle_id", "created_utc"):
            if not isinstance(d[key], str) or not d[key]:
                raise _bad(key, f"must be a non-empty string, got {d[key]!r}")
        for key in ("producer", "preprocess", "model", "thresholds", "files", "extra"):
            if not isinstance(d[key], dict):
                raise _bad(key, f"must be a JSON object, got {type(d[key]).__name__}")
        for key in ("classes", "datasets"):
            if not isinstance(d[key], list):
                raise _bad(key, f"must be a JSON list, got {type(d[key]).__name__}")

        for sub in ("protoinspect_version", "command"):
            if not isinstance(d["producer"].get(sub), str):
                raise _bad(f"producer.{sub}", f"must be a string, got {d['producer'].get(sub)!r}")

        try:
            spec = PreprocessSpec.from_dict(d["preprocess"])
        except Exception as exc:  # noqa: BLE001 - KeyError/TypeError/InputError all mean "invalid"
            raise _bad("preprocess", f"is not a valid PreprocessSpec: {type(exc).__name__}: {exc}") from exc
        d["preprocess"] = spec.to_dict()

        th = d["thresholds"]
        for sub in ("image", "pixel"):
            if sub not in th:
                raise _bad(f"thresholds.{sub}", "is missing")
            if not _is_number(th[sub]) or not math.isfinite(th[sub]):
                raise _bad(f"thresholds.{sub}", f"must be a finite number, got {th[sub]!r}")
            th[sub] = float(th[sub])
        if not isinstance(th.get("calibration"), dict):
            raise _bad("thresholds.calibration", f"must be a JSON object, got {th.get('calibration')!r}")

        seen_ids: set[int] = set()
        for i, cls_entry in enumerate(d["classes"]):
            where = f"classes[{i}]"
            if not isinstance(cls_entry, dict):
                raise _bad(where, f"must be a JSON object, got {cls_entry!r}")
            checks = (("id", _is_int, "an integer"), ("name", lambda v: isinstance(v, str), "a string"),
                      ("known", lambda v: isinstance(v, bool), "a boolean"),
                      ("discovered", lambda v: isinstance(v, bool), "a boolean"))
            for sub, ok, what in checks:
                if sub not in cls_entry or not ok(cls_entry[sub]):
                    raise _bad(f"{where}.{sub}", f"must be {what}, got {cls_entry.get(sub)!r}")
            if cls_entry["id"] in seen_ids:
                raise _bad(f"{where}.id", f"duplicates class id {cls_entry['id']}")
            seen_ids.add(cls_entry["id"])

        for name, entry in d["files"].items():
            try:
                check_file_name(name)
            except BundleError as exc:
                raise _bad(f"files.{name}", f"is not a plain file name: {exc}") from None
            if not isinstance(entry, dict):
                raise _bad(f"files.{name}", f"must be a JSON object, got {entry!r}")
            sha = entry.get("sha256")
            if not isinstance(sha, str) or not _HEX64.match(sha):
                raise _bad(f"files.{name}.sha256", f"must be 64 lower-case hex characters, got {sha!r}")
            size = entry.get("bytes")
            if not _is_int(size) or size < 0:
                raise _bad(f"files.{name}.bytes", f"must be a non-negative integer, got {size!r}")

        return cls(**{key: d[key] for key in _MANIFEST_KEYS})


def _build_manifest_dict(manifest_fields: Mapping[str, Any], files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Merge caller fields with computed ones; the result is validated by Manifest.from_dict."""
    if not isinstance(manifest_fields, Mapping):
        msg = f"manifest_fields must be a mapping, got {type(manifest_fields).__name__}"
        raise BundleError(msg)
    computed = sorted(_COMPUTED_KEYS & set(manifest_fields))
    if computed:
        msg = f"manifest_fields must not contain {computed}: write_bundle computes them"
        raise BundleError(msg)
    unknown = sorted(set(manifest_fields) - set(_MANIFEST_KEYS))
    if unknown:
        msg = f"manifest_fields has unknown keys {unknown}; allowed: {sorted(set(_MANIFEST_KEYS) - _COMPUTED_KEYS)} (put free-form data in 'extra')"
        raise BundleError(msg)
    missing = sorted(_REQUIRED_FIELDS - set(manifest_fields))
    if missing:
        msg = f"manifest_fields is missing required keys {missing}"
        raise BundleError(msg)
    d: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_utc": _utc_now(),
        "producer": _default_producer(),
        "classes": [],
        "datasets": [],
        "extra": {},
    }
    d.update({k: v for k, v in manifest_fields.items() if k != "producer"})
    d["producer"] = {**d["producer"], **manifest_fields.get("producer", {})}
    if isinstance(d["preprocess"], PreprocessSpec):
        d["preprocess"] = d["preprocess"].to_dict()
    d["files"] = files
    d["bundle_id"] = compute_bundle_id(files)
    return d


def _finalise(d: dict[str, Any]) -> tuple[Manifest, str]:
    """JSON round trip (tuples -> lists, numpy -> python) then validate; return manifest and text."""
    text = _to_json_text(d)
    manifest = Manifest.from_dict(json.loads(text))
    return manifest, _to_json_text(manifest.to_dict())


def _write_text_fsync(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def _backup_path(out: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    candidate = out.with_name(f"{out.name}.bak-{stamp}")
    n = 1
    while candidate.exists():
        candidate = out.with_name(f"{out.name}.bak-{stamp}-{n}")
        n += 1
    return candidate


def write_bundle(
    out_dir: str | os.PathLike[str],
    *,
    manifest_fields: Mapping[str, Any],
    files: Mapping[str, FileSource],
    overwrite: bool = False,
) -> Manifest:
    """Write a complete bundle atomically.

    Everything is written into a hidden temporary sibling directory (``.<name>.tmp-*``), artefacts
    first and ``manifest.json`` last, each fsync-ed, then the directory is renamed to ``out_dir``.
    With ``overwrite=True`` an existing bundle is renamed to ``<name>.bak-<timestamp>``, the new one
    renamed into place, and only then the backup is removed; if the swap fails the old bundle is
    renamed back. A failure while writing never touches the old bundle.

    Args:
        out_dir: bundle directory to create.
        manifest_fields: ``preprocess`` (dict or PreprocessSpec), ``model`` and ``thresholds`` are
            required; ``producer``, ``classes``, ``datasets``, ``extra`` and ``created_utc`` are
            optional (defaults: current version/command line, [], [], {}, now).
            ``format``, ``format_version``, ``bundle_id`` and ``files`` are computed.
        files: artefact name (plain file name) -> contents as bytes, or a ``pathlib.Path`` to copy.
        overwrite: replace an existing bundle at ``out_dir``.

    Returns:
        The manifest as written (equal to what :func:`load_bundle` returns).

    Raises:
        BundleError: bad file name or source, invalid manifest fields, ``out_dir`` exists and
            ``overwrite`` is False, or ``out_dir`` is something other than a bundle.
    """
    out = Path(out_dir).resolve()
    _check_sources(files)
    # Validate the caller's fields before touching the disk (file entries are filled in later).
    placeholder = {name: {"sha256": "0" * 64, "bytes": 0} for name in files}
    _finalise(_build_manifest_dict(manifest_fields, placeholder))

    if out.exists() or out.is_symlink():
        if not overwrite:
            msg = f"bundle directory {out} exists; pass overwrite=True or choose another path"
            raise BundleError(msg)
        if not out.is_dir():
            msg = f"{out} exists and is not a directory; refusing to replace it with a bundle"
            raise BundleError(msg)
        if not (out / MANIFEST_NAME).is_file() and any(out.iterdir()):
            msg = (
                f"{out} is a non-empty directory without {MANIFEST_NAME} (not a ProtoInspect bundle); "
                "refusing to replace it: choose another path"
            )
            raise BundleError(msg)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        entries: dict[str, dict[str, Any]] = {}
        for name, source in files.items():
            with open(tmp / name, "wb") as f:
                sha, size = _copy_source(name, source, f)
            entries[name] = {"sha256": sha, "bytes": size}
        manifest, text = _finalise(_build_manifest_dict(manifest_fields, entries))
        _write_text_fsync(tmp / MANIFEST_NAME, text)
        _fsync_dir(tmp)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` dir to ``out``, keeping any old ``out`` until the swap worked."""
    backup: Path | None = None
    if out.exists() or out.is_symlink():
        backup = _backup_path(out)
        os.rename(out, backup)
    try:
        os.rename(tmp, out)
    except BaseException as exc:
        if backup is not None:
            try:
                os.rename(backup, out)
            except OSError:
                msg = f"could not move the new bundle into {out} ({exc}); the previous bundle is kept at {backup}"
                raise BundleError(msg) from exc
        if isinstance(exc, OSError):
            msg = f"could not move the new bundle into {out}: {exc}"
            raise BundleError(msg) from exc
        raise
    _fsync_dir(out.parent)
    if backup is not None:
        try:
            if backup.is_symlink():
                backup.unlink()
            else:
                shutil.rmtree(backup)
        except OSError as exc:
            warnings.warn(f"new bundle written to {out}, but the old one at {backup} could not be removed: {exc}", stacklevel=3)


def add_files(bundle_dir: str | os.PathLike[str], files: Mapping[str, FileSource]) -> Manifest:
    """Add or replace artefacts in an existing bundle and rewrite its manifest.

    All new files are first staged under hidden temporary names inside the bundle and fsync-ed (a
    failure here leaves the bundle untouched), then ``os.replace``-d into place, and ``manifest.json``
    is replaced last. Files not named in ``files`` keep their manifest entries unchanged, so earlier
    tampering stays detectable. ``created_utc`` is kept; ``bundle_id`` is recomputed.

    Args:
        bundle_dir: existing bundle directory.
        files: artefact name (plain file name) -> bytes or ``pathlib.Path``.

    Returns:
        The updated manifest.

    Raises:
        BundleError: the bundle cannot be loaded (see :func:`load_bundle`; hashes of untouched files
            are not re-verified, sizes are), or a bad file name / source.
    """
    path = Path(bundle_dir)
    _check_sources(files)
    manifest = _read_manifest(path)
    _check_listed_files(path, manifest, verify=False, skip=set(files))

    staged: dict[str, Path] = {}
    entries = copy.deepcopy(manifest.files)
    try:
        for name, source in files.items():
            fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.tmp-", dir=path)
            staged[name] = Path(tmp_name)
            with os.fdopen(fd, "wb") as f:
                sha, size = _copy_source(name, source, f)
            entries[name] = {"sha256": sha, "bytes": size}
        d = manifest.to_dict()
        d["files"] = entries
        d["bundle_id"] = compute_bundle_id(entries)
        new_manifest, text = _finalise(d)
        fd, tmp_manifest = tempfile.mkstemp(prefix=f".{MANIFEST_NAME}.tmp-", dir=path)
        os.close(fd)
        staged[MANIFEST_NAME] = Path(tmp_manifest)
        _write_text_fsync(Path(tmp_manifest), text)
        for name in files:
            os.replace(staged.pop(name), path / name)
        _fsync_dir(path)
        os.replace(staged.pop(MANIFEST_NAME), path / MANIFEST_NAME)
        _fsync_dir(path)
    finally:
        for leftover in staged.values():
            leftover.unlink(missing_ok=True)
    return new_manifest


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle.

    Attributes:
        path: the bundle directory.
        manifest: its validated manifest.
    """

    path: Path
    manifest: Manifest

    def file_path(self, name: str) -> Path:
        """Path of an artefact listed in the manifest.

        Raises:
            BundleError: the manifest does not list ``name``.
        """
        if name not in self.manifest.files:
            listed = ", ".join(sorted(self.manifest.files)) or "none"
            msg = (
                f"bundle {self.path} has no file '{name}' in its {MANIFEST_NAME} (listed: {listed}); "
                "add it with `protoinspect export` or re-create the bundle"
            )
            raise BundleError(msg)
        return self.path / name

    def read_bytes(self, name: str) -> bytes:
        """Contents of an artefact, checked against the manifest's size and sha256.

        Raises:
            BundleError: not listed, missing, or changed since the manifest was written.
        """
        p = self.file_path(name)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise _missing_error(self.path, name) from None
        entry = self.manifest.files[name]
        if len(data) != entry["bytes"]:
            raise _size_error(self.path, name, len(data), entry["bytes"])
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise _hash_error(self.path, name)
        return data


def _missing_error(path: Path, name: str) -> BundleError:
    return BundleError(
        f"file '{name}' listed in {MANIFEST_NAME} is missing from bundle {path}: restore the file, "
        f"or {RECREATE_HINT}"
    )


def _size_error(path: Path, name: str, actual: int, expected: int) -> BundleError:
    what = "truncated" if actual < expected else "larger than recorded"
    return BundleError(
        f"file '{name}' in bundle {path} is {what}: {actual} bytes, {MANIFEST_NAME} says {expected}; "
        f"restore the file (e.g. re-copy the bundle), or {RECREATE_HINT}"
    )


def _hash_error(path: Path, name: str) -> BundleError:
    return BundleError(
        f"file '{name}' in bundle {path} does not match its sha256 in {MANIFEST_NAME} (corrupted or "
        f"tampered with); restore the file (e.g. re-copy the bundle), or {RECREATE_HINT}"
    )


def _read_manifest(path: Path) -> Manifest:
    if not path.exists():
        msg = f"bundle directory {path} does not exist"
        backups = sorted(path.parent.glob(f"{glob_escape(path.name)}.bak-*")) if path.parent.is_dir() else []
        if backups:
            msg += f" (an interrupted write left a previous bundle at {backups[-1]}: rename it back)"
        raise BundleError(msg)
    if not path.is_dir():
        msg = f"bundle path {path} is not a directory (a bundle is a folder containing {MANIFEST_NAME})"
        raise BundleError(msg)
    mpath = path / MANIFEST_NAME
    if not mpath.is_file():
        msg = f"{mpath} not found: {path} is not a ProtoInspect bundle or an incomplete copy; {RECREATE_HINT}"
        raise BundleError(msg)
    try:
        raw = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"corrupt manifest {mpath}: {exc}; restore it from a copy of the bundle, or {RECREATE_HINT}"
        raise BundleError(msg) from exc
    except OSError as exc:
        msg = f"cannot read {mpath}: {exc}"
        raise BundleError(msg) from exc
    try:
        manifest = Manifest.from_dict(raw)
    except BundleError as exc:
        msg = f"invalid bundle {path}: {exc}"
        raise BundleError(msg) from None
    expected_id = compute_bundle_id(manifest.files)
    if manifest.bundle_id != expected_id:
        msg = (
            f"{mpath}: key 'bundle_id' is {manifest.bundle_id!r} but its file list gives {expected_id!r} "
            f"(the manifest was edited by hand); restore it, or {RECREATE_HINT}"
        )
        raise BundleError(msg)
    return manifest


def glob_escape(name: str) -> str:
    """Escape glob metacharacters in a literal file name."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def _check_listed_files(path: Path, manifest: Manifest, *, verify: bool, skip: set[str] | None = None) -> None:
    for name, entry in sorted(manifest.files.items()):
        if skip and name in skip:
            continue
        p = path / name
        if not p.is_file():
            raise _missing_error(path, name)
        size = p.stat().st_size
        if size != entry["bytes"]:
            raise _size_error(path, name, size, entry["bytes"])
        if verify and sha256_file(p) != entry["sha256"]:
            raise _hash_error(path, name)


def load_bundle(path: str | os.PathLike[str], *, verify: bool = True) -> Bundle:
    """Open a bundle and check it.

    Always checked: the directory and ``manifest.json`` exist, the manifest parses, has format
    ``protoinspect-bundle`` and ``format_version == FORMAT_VERSION``, matches the schema and its
    ``bundle_id``, and every listed file exists with the listed size. With ``verify=True`` every
    file's sha256 is also checked (reads every byte).

    Args:
        path: bundle directory.
        verify: also check sha256 of every listed file.

    Returns:
        The loaded :class:`Bundle`.

    Raises:
        BundleError: naming the file at fault and how to fix it.
    """
    p = Path(path)
    manifest = _read_manifest(p)
    _check_listed_files(p, manifest, verify=verify)
    return Bundle(path=p, manifest=manifest)


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "Bundle",
    "Manifest",
    "add_files",
    "check_file_name",
    "compute_bundle_id",
    "load_bundle",
    "sha256_file",
    "write_bundle",
]
