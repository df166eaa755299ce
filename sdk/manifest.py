"""The bundle manifest (``manifest.json``): its schema, validation and JSON conversion.

:class:`Manifest` is the validated, typed view of a bundle's ``manifest.json``; reading and writing
bundle directories lives in :mod:`protoinspect.sdk.bundle`. Only the standard library and numpy are used here.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from protoinspect.sdk.errors import BundleError
from protoinspect.sdk.preprocess import PreprocessSpec

FORMAT = "protoinspect-bundle"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

RECREATE_HINT = "re-create the bundle with `python -m protoinspect.training.train_detector ...`"
UPGRADE_HINT = "upgrade protoinspect (pip install -U protoinspect) to read it"
REEXPORT_HINT = (
    "re-export it with `protoinspect export` (or re-train with `python -m protoinspect.training.train_detector ...`)"
)

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


def _bad(key: str, problem: str) -> BundleError:
    return BundleError(f"{MANIFEST_NAME}: key '{key}' {problem}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


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


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "RECREATE_HINT",
    "REEXPORT_HINT",
    "UPGRADE_HINT",
    "Manifest",
    "check_file_name",
    "compute_bundle_id",
]
