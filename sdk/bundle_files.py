"""Crash-safe file operations of bundle writers: hashing copies, fsync, and the directory swap.

Every artefact is copied with its sha256 computed on the way and fsync-ed; text is written and fsync-ed;
a finished bundle directory replaces an old one by renames, the old one kept until the swap worked.
Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Union

from protoinspect.sdk.errors import BundleError
from protoinspect.sdk.manifest import check_file_name

CHUNK_BYTES = 1 << 20  # 1 MiB

FileSource = Union[bytes, bytearray, memoryview, os.PathLike]

__all__ = ["CHUNK_BYTES", "FileSource", "backup_path", "check_sources", "copy_source", "fsync_dir", "sha256_file",
           "swap_into_place", "write_text_fsync"]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Lower-case SHA-256 hex digest of a file, read in 1 MiB chunks; OSError if it cannot be read."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
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


def copy_source(name: str, source: Any, dst: BinaryIO) -> tuple[str, int]:
    """Write one artefact source (bytes or a path) into ``dst`` and fsync it; return (sha256, size).

    Raises:
        BundleError: the source is missing, unreadable or of the wrong type (naming ``name``).
    """
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


def check_sources(files: Mapping[str, Any]) -> None:
    """Check artefact names (plain file names) and source types before anything is written.

    Raises:
        BundleError: naming the bad file name or source.
    """
    if not isinstance(files, Mapping):
        msg = f"files must be a mapping of file name -> bytes | Path, got {type(files).__name__}"
        raise BundleError(msg)
    for name, source in files.items():
        check_file_name(name)
        if not isinstance(source, (bytes, bytearray, memoryview, os.PathLike)):
            raise _source_type_error(name, source)


def write_text_fsync(path: Path, text: str) -> None:
    """Write UTF-8 text with ``\\n`` line ends and fsync it."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def backup_path(out: Path) -> Path:
    """A free sibling name ``<name>.bak-<UTC timestamp>[-n]`` for the bundle being replaced."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    candidate = out.with_name(f"{out.name}.bak-{stamp}")
    n = 1
    while candidate.exists():
        candidate = out.with_name(f"{out.name}.bak-{stamp}-{n}")
        n += 1
    return candidate


def swap_into_place(tmp: Path, out: Path, what: str = "bundle") -> None:
    """Rename the finished ``tmp`` dir to ``out``, keeping any old ``out`` until the swap worked
    (``what`` names the folder in messages: a bundle, a model repository).

    Raises:
        BundleError: the rename failed (the old folder is moved back, or its backup path is named).
    """
    backup: Path | None = None
    if out.exists() or out.is_symlink():
        backup = backup_path(out)
        os.rename(out, backup)
    try:
        os.rename(tmp, out)
    except BaseException as exc:
        if backup is not None:
            try:
                os.rename(backup, out)
            except OSError:
                msg = f"could not move the new {what} into {out} ({exc}); the previous {what} is kept at {backup}"
                raise BundleError(msg) from exc
        if isinstance(exc, OSError):
            msg = f"could not move the new {what} into {out}: {exc}"
            raise BundleError(msg) from exc
        raise
    fsync_dir(out.parent)
    if backup is not None:
        try:
            if backup.is_symlink():
                backup.unlink()
            else:
                shutil.rmtree(backup)
        except OSError as exc:
            warnings.warn(f"new {what} written to {out}, but the old one at {backup} could not be removed: {exc}",
                          stacklevel=3)
