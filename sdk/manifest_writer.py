"""The writer's side of ``manifest.json``: a manifest dict from caller fields, its JSON text, and its seal.

Every legitimate writer (:func:`protoinspect.sdk.bundle.write_bundle`, :func:`~protoinspect.sdk.bundle.add_files`,
:func:`protoinspect.sdk.bundle_upgrade.upgrade_bundle`) ends with :func:`seal`: the dict is round-tripped
through JSON, validated and normalised, and a format-version-2 manifest gets the ``digest`` of that
normalised content (:mod:`protoinspect.sdk.manifest_digest`), so what is written is exactly what the loader
verifies. Standard library and numpy only.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from protoinspect.sdk.errors import BundleError
from protoinspect.sdk.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_KEYS,
    MANIFEST_NAME,
    Manifest,
    compute_bundle_id,
    normalise,
)
from protoinspect.sdk.manifest_digest import DIGEST_KEY, manifest_digest
from protoinspect.sdk.preprocess import PreprocessSpec

# Keys write_bundle computes itself; callers must not pass them in ``manifest_fields``.
COMPUTED_KEYS = frozenset({"format", "format_version", "bundle_id", "files", DIGEST_KEY})
REQUIRED_FIELDS = frozenset({"preprocess", "model", "thresholds"})

__all__ = ["COMPUTED_KEYS", "REQUIRED_FIELDS", "build_manifest_dict", "seal", "to_json_text"]


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
    """Make numpy scalars/arrays, paths, sets and config dataclasses JSON-safe."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        from protoinspect.sdk.config_codec import to_dict

        return to_dict(obj)
    msg = f"object of type {type(obj).__name__} is not JSON serialisable"
    raise TypeError(msg)


def to_json_text(d: Mapping[str, Any]) -> str:
    """Pretty JSON with sorted keys; raises BundleError naming the offending top-level key."""
    for key, value in d.items():
        try:
            json.dumps(value, default=_json_default, allow_nan=False)
        except (TypeError, ValueError) as exc:
            msg = f"{MANIFEST_NAME} key '{key}' cannot be stored as JSON: {exc} (NaN/inf are not allowed)"
            raise BundleError(msg) from exc
    return json.dumps(d, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n"


def build_manifest_dict(manifest_fields: Mapping[str, Any], files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Merge caller fields with computed ones (a current-version manifest, not yet sealed; see :func:`seal`).

    Raises:
        BundleError: ``manifest_fields`` is not a mapping, names a computed or unknown key, or lacks a
            required one.
    """
    if not isinstance(manifest_fields, Mapping):
        msg = f"manifest_fields must be a mapping, got {type(manifest_fields).__name__}"
        raise BundleError(msg)
    computed = sorted(COMPUTED_KEYS & set(manifest_fields))
    if computed:
        msg = f"manifest_fields must not contain {computed}: write_bundle computes them"
        raise BundleError(msg)
    unknown = sorted(set(manifest_fields) - set(MANIFEST_KEYS))
    if unknown:
        msg = (f"manifest_fields has unknown keys {unknown}; allowed: {sorted(set(MANIFEST_KEYS) - COMPUTED_KEYS)} "
               "(put free-form data in 'extra')")
        raise BundleError(msg)
    missing = sorted(REQUIRED_FIELDS - set(manifest_fields))
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


def seal(d: Mapping[str, Any]) -> tuple[Manifest, str]:
    """JSON round trip (tuples -> lists, numpy -> python), validate, and for the current format version
    add the ``digest`` of the normalised content; return the manifest and the text to write.

    A legacy (version 1) dict stays unsealed: adding files to a legacy bundle does not vouch for it.

    Raises:
        BundleError: a value with no JSON form, or an invalid manifest (naming the key).
    """
    content = {k: v for k, v in d.items() if k != DIGEST_KEY}
    normalised = normalise(json.loads(to_json_text(content)), check_digest=False)
    if normalised["format_version"] >= FORMAT_VERSION:
        normalised[DIGEST_KEY] = manifest_digest(normalised)
    manifest = Manifest.from_dict(normalised)
    return manifest, to_json_text(manifest.to_dict())
