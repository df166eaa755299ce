"""Model bundles: a directory with ``manifest.json`` plus artefact files; nothing is pickled.

Training and export write bundles with :func:`write_bundle` / :func:`add_files`; the SDK reads them
with :func:`load_bundle`. Only the standard library and numpy are used here (an edge device running
the SDK may have no torch).

Layout::

    my_bundle/
        manifest.json           # written last; lists every artefact with its sha256 and size
        detector.safetensors    # weights (later also *.onnx, prototypes.npy, *.engine(.json), ...)

Writes are crash-safe: every file is fsync-ed and put in place by a rename, ``manifest.json`` last
(:mod:`protoinspect.sdk.bundle_files`). The manifest is tamper-evident: it carries a ``digest`` of its whole
content, which lists every file's sha256, so an edited threshold or class name is refused at load like a
changed file (:mod:`protoinspect.sdk.manifest_digest`, which also states the policy for older, unsealed bundles).
The manifest schema itself (:class:`Manifest`) lives in :mod:`protoinspect.sdk.manifest` and is re-exported here.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protoinspect.sdk.bundle_files import (
    CHUNK_BYTES as CHUNK_BYTES,  # re-exported: public names of protoinspect.sdk.bundle before the split
)
from protoinspect.sdk.bundle_files import (
    FileSource,
    check_sources,
    copy_source,
    fsync_dir,
    sha256_file,
    swap_into_place,
    write_text_fsync,
)
from protoinspect.sdk.errors import BundleError
from protoinspect.sdk.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    RECREATE_HINT,
    Manifest,
    check_file_name,
    compute_bundle_id,
)
from protoinspect.sdk.manifest import REEXPORT_HINT as REEXPORT_HINT  # re-exported: public names before the split
from protoinspect.sdk.manifest import UPGRADE_HINT as UPGRADE_HINT
from protoinspect.sdk.manifest_digest import UPGRADE_COMMAND
from protoinspect.sdk.manifest_writer import build_manifest_dict, seal

logger = logging.getLogger(__name__)
_LEGACY_REPORTED: set[str] = set()


def write_bundle(
    out_dir: str | os.PathLike[str],
    *,
    manifest_fields: Mapping[str, Any],
    files: Mapping[str, FileSource],
    overwrite: bool = False,
) -> Manifest:
    """Write a complete bundle atomically and return its manifest (as :func:`load_bundle` would).

    Artefacts, then ``manifest.json``, go into a hidden sibling ``.<name>.tmp-*`` that is renamed to
    ``out_dir``. With ``overwrite=True`` an existing bundle is first renamed to ``<name>.bak-<timestamp>``
    and removed only after the swap (renamed back if the swap fails); failed writes never touch it.

    Args:
        out_dir: bundle directory to create.
        manifest_fields: ``preprocess`` (dict or PreprocessSpec), ``model`` and ``thresholds`` are
            required; ``producer``, ``classes``, ``datasets``, ``extra`` and ``created_utc`` are
            optional (defaults: current version/command line, [], [], {}, now).
            ``format``, ``format_version``, ``bundle_id`` and ``files`` are computed.
        files: artefact name (plain file name) -> contents as bytes, or a ``pathlib.Path`` to copy.
        overwrite: replace an existing bundle at ``out_dir``.

    Raises:
        BundleError: bad file name or source, invalid manifest fields, ``out_dir`` exists and
            ``overwrite`` is False, or ``out_dir`` is something other than a bundle.
    """
    out = Path(out_dir).resolve()
    check_sources(files)
    # Validate the caller's fields before touching the disk (file entries are filled in later).
    placeholder = {name: {"sha256": "0" * 64, "bytes": 0} for name in files}
    seal(build_manifest_dict(manifest_fields, placeholder))

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
                sha, size = copy_source(name, source, f)
            entries[name] = {"sha256": sha, "bytes": size}
        manifest, text = seal(build_manifest_dict(manifest_fields, entries))
        write_text_fsync(tmp / MANIFEST_NAME, text)
        fsync_dir(tmp)
        swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def add_files(
    bundle_dir: str | os.PathLike[str],
    files: Mapping[str, FileSource],
    *,
    extra: Mapping[str, Any] | None = None,
) -> Manifest:
    """Add or replace artefacts (name -> bytes or ``pathlib.Path``) in a bundle; return the new manifest.

    New files are staged under hidden temporary names (a failure there leaves the bundle untouched),
    then ``os.replace``-d into place, ``manifest.json`` last. Entries of other files stay unchanged, so
    earlier tampering stays detectable. ``created_utc`` is kept; ``bundle_id`` and the manifest's
    ``digest`` are recomputed (a legacy, unsealed bundle stays unsealed: see :mod:`protoinspect.sdk.manifest_digest`).

    Args:
        bundle_dir: an existing bundle.
        files: artefact name -> contents.
        extra: optional keys merged (top level, replacing) into the manifest's free-form ``extra``
            in the same manifest write, e.g. ``{"onnx": {...}}`` describing an exported file.

    Raises:
        BundleError: the bundle cannot be loaded (see :func:`load_bundle`; hashes of untouched files
            are not re-verified, sizes are), a bad file name / source, or ``extra`` is not a mapping
            or not JSON-serialisable.
    """
    path = Path(bundle_dir)
    check_sources(files)
    if extra is not None and not isinstance(extra, Mapping):
        msg = f"extra must be a mapping of key -> JSON value, got {type(extra).__name__}"
        raise BundleError(msg)
    manifest = _read_manifest(path)
    _check_listed_files(path, manifest, verify=False, skip=set(files))

    staged: dict[str, Path] = {}
    entries = copy.deepcopy(manifest.files)
    try:
        for name, source in files.items():
            fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.tmp-", dir=path)
            staged[name] = Path(tmp_name)
            with os.fdopen(fd, "wb") as f:
                sha, size = copy_source(name, source, f)
            entries[name] = {"sha256": sha, "bytes": size}
        d = manifest.to_dict()
        d["files"] = entries
        if extra is not None:
            d["extra"] = {**d["extra"], **copy.deepcopy(dict(extra))}
        d["bundle_id"] = compute_bundle_id(entries)
        new_manifest, text = seal(d)
        fd, tmp_manifest = tempfile.mkstemp(prefix=f".{MANIFEST_NAME}.tmp-", dir=path)
        os.close(fd)
        staged[MANIFEST_NAME] = Path(tmp_manifest)
        write_text_fsync(Path(tmp_manifest), text)
        for name in files:
            os.replace(staged.pop(name), path / name)
        fsync_dir(path)
        os.replace(staged.pop(MANIFEST_NAME), path / MANIFEST_NAME)
        fsync_dir(path)
    finally:
        for leftover in staged.values():
            leftover.unlink(missing_ok=True)
    return new_manifest


@dataclass(frozen=True)
class Bundle:
    """A loaded bundle: its directory ``path`` and validated ``manifest``."""

    path: Path
    manifest: Manifest

    @property
    def manifest_verified(self) -> bool:
        """True when ``manifest.json`` was checked against its digest; False for a legacy (format version 1)
        bundle, whose manifest edits cannot be detected (seal it with :data:`UPGRADE_COMMAND`)."""
        return self.manifest.sealed

    def file_path(self, name: str) -> Path:
        """Path of an artefact listed in the manifest (BundleError if it is not listed)."""
        if name not in self.manifest.files:
            listed = ", ".join(sorted(self.manifest.files)) or "none"
            msg = (
                f"bundle {self.path} has no file '{name}' in its {MANIFEST_NAME} (listed: {listed}); "
                "add it with `protoinspect export` or re-create the bundle"
            )
            raise BundleError(msg)
        return self.path / name

    def read_bytes(self, name: str) -> bytes:
        """Artefact contents; BundleError if it is not listed, missing, or not the size/sha256 listed."""
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
        manifest = Manifest.from_dict(raw)  # checks the digest of a sealed manifest first
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


def upgrade_command(path: str | os.PathLike[str]) -> str:
    """The shell command that seals the legacy bundle at ``path`` (:mod:`protoinspect.sdk.bundle_upgrade`)."""
    return UPGRADE_COMMAND.format(path=shlex.quote(str(path)))


def _legacy(path: Path, allow_legacy: bool) -> None:
    """Apply the policy for a manifest without digest: refuse it, or log (once per bundle) that it is unverified."""
    what = (f"bundle {path} was written before manifests were sealed (format_version 1): an edit of its "
            f"{MANIFEST_NAME} (thresholds, classes) cannot be detected; its files are still sha256-checked")
    fix = f"check its thresholds and classes, then seal it with `{upgrade_command(path)}`"
    if not allow_legacy:
        raise BundleError(f"{what}, and unsealed bundles are refused here: {fix}")
    key = str(path.resolve())
    if key not in _LEGACY_REPORTED:
        _LEGACY_REPORTED.add(key)
        logger.warning("%s. It is loaded as UNVERIFIED; %s", what, fix)


def load_bundle(path: str | os.PathLike[str], *, verify: bool = True, allow_legacy: bool = True) -> Bundle:
    """Open and check the bundle directory ``path``.

    Always checked: the directory and ``manifest.json`` exist, the manifest parses, has format
    ``protoinspect-bundle`` and a supported ``format_version``, its content matches its ``digest`` (no
    edits), it matches the schema and its ``bundle_id``, and every listed file exists with the listed
    size; ``verify=True`` also checks every file's sha256 (reads every byte).

    A legacy bundle (format version 1, written before the digest) loads with
    :attr:`Bundle.manifest_verified` False and a logged warning naming the one-line upgrade command;
    ``allow_legacy=False`` refuses it instead.

    Raises:
        BundleError: naming the file at fault (manifest.json for an edited manifest) and how to fix it.
    """
    p = Path(path)
    manifest = _read_manifest(p)
    if not manifest.sealed:
        _legacy(p, allow_legacy)
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
    "upgrade_command",
    "write_bundle",
]
