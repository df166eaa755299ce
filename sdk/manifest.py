"""The bundle manifest (``manifest.json``): its schema, validation and typed views.

:class:`Manifest` is the validated view of a bundle's ``manifest.json``. Its parts are checked by the
config codec (:mod:`protoinspect.sdk.config_codec`) against typed records (:class:`Producer`,
:class:`PreprocessSpec`, :class:`Thresholds`, :class:`ClassInfo`, :class:`FileEntry`, and the ``extra``
sections of :mod:`protoinspect.sdk.manifest_sections`); errors are :class:`BundleError` naming manifest.json
and the key path. A format-version-2 manifest carries a ``digest`` of its content
(:mod:`protoinspect.sdk.manifest_digest`) that :meth:`Manifest.from_dict` checks. Writing lives in
:mod:`protoinspect.sdk.manifest_writer` and :mod:`protoinspect.sdk.bundle`. Standard library and numpy only.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from protoinspect.sdk.config_codec import decode, encode, rest_field
from protoinspect.sdk.errors import BundleError, ConfigError, InputError
from protoinspect.sdk.manifest_digest import DIGEST_KEY, manifest_digest
from protoinspect.sdk.preprocess import PreprocessSpec

if TYPE_CHECKING:
    from protoinspect.sdk.manifest_sections import DiscoverySection, GraphRecord, ManifestSections, TensorRTSection

FORMAT = "protoinspect-bundle"
#: 2: the manifest carries a ``digest`` of its content (tamper-evident); 1: before it (legacy, loads unverified).
FORMAT_VERSION = 2
LEGACY_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

RECREATE_HINT = "re-create the bundle with `python -m protoinspect.training.train_detector ...`"
UPGRADE_HINT = "upgrade protoinspect (pip install -U protoinspect) to read it"
REEXPORT_HINT = (
    "re-export it with `protoinspect export` (or re-train with `python -m protoinspect.training.train_detector ...`)"
)
EDIT_HINT = (
    "restore the original manifest.json (e.g. re-copy the bundle), or make the change with the tool that writes it "
    "into a new bundle: `python -m protoinspect.training.recalibrate` (thresholds), `protoinspect discover ... "
    "--name/--merge/--drop --out NEW` (classes), or re-train"
)

# Keys of manifest.json, in the order of the schema (format version 2 adds "digest").
MANIFEST_KEYS = (
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


# ----------------------------------------------------------------------------- records of the schema


@dataclass(frozen=True)
class Producer:
    """``producer``: the protoinspect version and command line that wrote the bundle (more keys kept)."""

    protoinspect_version: str
    command: str
    rest: dict[str, Any] = rest_field()


@dataclass(frozen=True)
class Thresholds:
    """``thresholds``: calibrated image and pixel thresholds and how they were calibrated (more keys kept)."""

    image: float
    pixel: float
    calibration: dict[str, Any]
    rest: dict[str, Any] = rest_field()

    def __post_init__(self) -> None:
        for name in ("image", "pixel"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"{name} must be a finite number, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class ClassInfo:
    """One entry of ``classes``: a defect class the bundle's classifier assigns (more keys kept)."""

    id: int
    name: str
    known: bool
    discovered: bool
    rest: dict[str, Any] = rest_field()


@dataclass(frozen=True)
class FileEntry:
    """One entry of ``files``: an artefact's sha256 (64 lower-case hex characters) and size in bytes."""

    sha256: str
    bytes: int

    def __post_init__(self) -> None:
        if not _HEX64.match(self.sha256):
            raise ConfigError(f"sha256 must be 64 lower-case hex characters, got {self.sha256!r}")
        if self.bytes < 0:
            raise ConfigError(f"bytes must be a non-negative integer, got {self.bytes}")


# Type of each top-level key after the format checks (the codec checks and normalises them).
_SCHEMA: dict[str, Any] = {
    "bundle_id": str, "created_utc": str, "producer": Producer, "preprocess": PreprocessSpec,
    "model": dict[str, Any], "thresholds": Thresholds, "classes": list[ClassInfo], "datasets": list[Any],
    "files": dict[str, FileEntry], "extra": dict[str, Any],
}


def _bad(key: str, problem: str) -> BundleError:
    return BundleError(f"{MANIFEST_NAME}: key '{key}' {problem}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _parse_sections(extra: Mapping[str, Any]) -> ManifestSections:
    from protoinspect.sdk.config_codec import from_dict
    from protoinspect.sdk.manifest_sections import ManifestSections  # lazy: it imports the stages package

    try:
        return from_dict(ManifestSections, extra, path="extra")
    except (ConfigError, InputError) as exc:
        raise BundleError(f"{MANIFEST_NAME}: {exc}") from None


@dataclass(frozen=True)
class Manifest:
    """Contents of a bundle's ``manifest.json`` (JSON values) plus typed views of its parts.

    Attributes:
        format: always ``"protoinspect-bundle"``.
        format_version: schema version: :data:`FORMAT_VERSION`, or :data:`LEGACY_FORMAT_VERSION` (no digest).
        bundle_id: first 16 hex chars of the sha256 of the sorted (name, sha256) list.
        created_utc: ISO-8601 UTC creation time.
        producer: {"protoinspect_version": str, "command": str} (:class:`Producer`).
        preprocess: :meth:`PreprocessSpec.to_dict` output (typed: :attr:`preprocess_spec`).
        model: free dict (architecture name, config).
        thresholds: {"image": float, "pixel": float, "calibration": dict} (:class:`Thresholds`).
        classes: list of {"id": int, "name": str, "known": bool, "discovered": bool} (typed: :attr:`class_infos`).
        datasets: free list describing the training data.
        files: artefact name -> {"sha256": hex str, "bytes": int}.
        extra: dict; its known sections are typed: :attr:`discovery`, :attr:`onnx`, :attr:`classifier_onnx`,
            :attr:`tensorrt`.
        digest: sha256 of the rest of the manifest (:mod:`protoinspect.sdk.manifest_digest`); None in a legacy manifest.
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
    digest: str | None = None
    _sections: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_sections", _parse_sections(self.extra))

    @property
    def preprocess_spec(self) -> PreprocessSpec:
        """The :class:`PreprocessSpec` stored in ``preprocess``."""
        return PreprocessSpec.from_dict(self.preprocess)

    @property
    def class_infos(self) -> tuple[ClassInfo, ...]:
        """``classes`` as typed records."""
        return tuple(decode(ClassInfo, c) for c in self.classes)

    @property
    def sealed(self) -> bool:
        """Whether the manifest carries a digest (format version 2); False for a legacy manifest."""
        return self.digest is not None

    @property
    def discovery(self) -> DiscoverySection | None:
        """The defect classifier (``extra.discovery``): settings, classifier config, training record; None if absent."""
        return self._sections.discovery

    @property
    def onnx(self) -> GraphRecord | None:
        """The exported detector graph (``extra.onnx``); None before ``protoinspect export``."""
        return self._sections.onnx

    @property
    def classifier_onnx(self) -> GraphRecord | None:
        """The exported classifier graph (``extra.classifier_onnx``); None if absent."""
        return self._sections.classifier_onnx

    @property
    def tensorrt(self) -> TensorRTSection | None:
        """TensorRT engines built for the bundle (``extra.tensorrt``); None before ``build_engine``."""
        return self._sections.tensorrt

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (a deep copy) in the manifest.json schema."""
        d = {key: copy.deepcopy(getattr(self, key)) for key in MANIFEST_KEYS}
        if self.digest is not None:
            d[DIGEST_KEY] = self.digest
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Manifest:
        """Validate a parsed manifest.json and build a :class:`Manifest`.

        ``format`` and ``format_version`` are checked first, so a bundle from another protoinspect
        version gets an upgrade / re-export message rather than a schema complaint; then a version-2
        manifest's ``digest`` (any edit of the file is refused), then the schema.

        Args:
            d: the parsed JSON object.

        Returns:
            The manifest (holding deep copies; ``preprocess``, ``thresholds``, ``classes``, ``files``
            normalised by their records).

        Raises:
            BundleError: naming manifest.json and the edit, or the missing / badly typed key.
        """
        return cls(**normalise(d, check_digest=True))


def _check_format(d: Mapping[str, Any]) -> int:
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
        raise _bad("format_version",
                   f"is {version}, newer than this protoinspect supports ({FORMAT_VERSION}): {UPGRADE_HINT}")
    if version < LEGACY_FORMAT_VERSION:
        raise _bad("format_version",
                   f"is {version}, older than this protoinspect supports ({LEGACY_FORMAT_VERSION}): {REEXPORT_HINT}")
    return version


def _check_digest(d: Mapping[str, Any]) -> None:
    if DIGEST_KEY not in d:
        raise BundleError(f"{MANIFEST_NAME} has format_version {d['format_version']} but no '{DIGEST_KEY}': it was "
                          f"edited by hand (a written manifest always has one); {EDIT_HINT}")
    try:
        expected = manifest_digest(d)
    except (TypeError, ValueError) as exc:
        msg = f"{MANIFEST_NAME} holds a value JSON cannot (it was edited by hand: {exc}); {EDIT_HINT}"
        raise BundleError(msg) from None
    if d[DIGEST_KEY] != expected:
        raise BundleError(f"{MANIFEST_NAME} was changed after it was written: its content does not match its "
                          f"'{DIGEST_KEY}' (a threshold, class, setting or file entry was edited). Edited manifests "
                          f"are refused: {EDIT_HINT}")


def normalise(d: Any, *, check_digest: bool) -> dict[str, Any]:
    """Validate a parsed manifest dict and return its normalised keyword arguments for :class:`Manifest`.

    Writers call it with ``check_digest=False`` before they compute the digest of the result.

    Raises:
        BundleError: as :meth:`Manifest.from_dict`.
    """
    if not isinstance(d, Mapping):
        raise BundleError(f"{MANIFEST_NAME} must contain a JSON object, got {type(d).__name__}; {RECREATE_HINT}")
    d = copy.deepcopy(dict(d))
    version = _check_format(d)
    if check_digest and version >= FORMAT_VERSION:
        _check_digest(d)
    keys = MANIFEST_KEYS + ((DIGEST_KEY,) if version >= FORMAT_VERSION and check_digest else ())
    missing = [k for k in keys if k not in d]
    if missing:
        raise _bad(missing[0], f"is missing (missing keys: {', '.join(missing)}); {RECREATE_HINT}")
    unknown = sorted(set(d) - set(keys))
    if unknown:
        raise _bad(unknown[0], f"is not part of format_version {version} (unexpected keys: {unknown})")
    for key, tp in _SCHEMA.items():
        try:
            d[key] = encode(decode(tp, d[key], path=key))
        except (ConfigError, InputError) as exc:
            raise BundleError(f"{MANIFEST_NAME}: {exc}") from None
    for key in ("bundle_id", "created_utc"):
        if not d[key]:
            raise _bad(key, "must be a non-empty string")
    absent = [k for k in ("image_size", "mean", "std") if k not in d["preprocess"]]
    if absent:
        raise _bad(f"preprocess.{absent[0]}", "is missing")
    if check_digest and version >= FORMAT_VERSION and not _HEX64.match(str(d[DIGEST_KEY])):
        raise _bad(DIGEST_KEY, f"must be 64 lower-case hex characters, got {d[DIGEST_KEY]!r}")
    seen_ids: set[int] = set()
    for i, entry in enumerate(d["classes"]):
        if entry["id"] in seen_ids:
            raise _bad(f"classes[{i}].id", f"duplicates class id {entry['id']}")
        seen_ids.add(entry["id"])
    for name in d["files"]:
        try:
            check_file_name(name)
        except BundleError as exc:
            raise _bad(f"files.{name}", f"is not a plain file name: {exc}") from None
    return d


__all__ = [
    "EDIT_HINT",
    "FORMAT",
    "FORMAT_VERSION",
    "LEGACY_FORMAT_VERSION",
    "MANIFEST_KEYS",
    "MANIFEST_NAME",
    "RECREATE_HINT",
    "REEXPORT_HINT",
    "UPGRADE_HINT",
    "ClassInfo",
    "FileEntry",
    "Manifest",
    "Producer",
    "Thresholds",
    "check_file_name",
    "compute_bundle_id",
    "normalise",
]
