"""Seal a legacy bundle (manifest format version 1, written before the manifest digest) in place.

    python -m protoinspect.sdk.bundle_upgrade BUNDLE_DIR [BUNDLE_DIR ...]

Every listed file is checked against its sha256 first; then ``manifest.json`` is rewritten as format
version 2 with the same content plus its ``digest`` (:mod:`protoinspect.sdk.manifest_digest`), atomically.
Sealing vouches for the manifest as it is now, so check the bundle's thresholds and classes before
running it on a bundle whose history you do not know. A sealed bundle is left unchanged.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from protoinspect.sdk.bundle import _check_listed_files, _read_manifest
from protoinspect.sdk.bundle_files import fsync_dir, write_text_fsync
from protoinspect.sdk.errors import ProtoInspectError
from protoinspect.sdk.manifest import FORMAT_VERSION, MANIFEST_NAME, Manifest
from protoinspect.sdk.manifest_writer import seal

__all__ = ["main", "upgrade_bundle"]


def upgrade_bundle(bundle_dir: str | os.PathLike[str]) -> tuple[Manifest, bool]:
    """Seal the legacy bundle at ``bundle_dir`` (see the module docstring).

    Returns:
        The bundle's manifest, and whether it was upgraded (False: it was sealed already).

    Raises:
        BundleError: the bundle is invalid, or a file does not match its sha256 (nothing is written).
    """
    path = Path(bundle_dir)
    old = _read_manifest(path)  # as load_bundle, without its legacy warning
    _check_listed_files(path, old, verify=True)
    if old.sealed:
        return old, False
    d = old.to_dict()
    d["format_version"] = FORMAT_VERSION
    manifest, text = seal(d)
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST_NAME}.tmp-", dir=path)
    os.close(fd)
    try:
        write_text_fsync(Path(tmp), text)
        os.replace(tmp, path / MANIFEST_NAME)
    finally:
        Path(tmp).unlink(missing_ok=True)
    fsync_dir(path)
    return manifest, True


def main(argv: Sequence[str] | None = None) -> int:
    """CLI; exit 0 when every bundle is sealed, 2 when one could not be (the error is printed)."""
    p = argparse.ArgumentParser(prog="python -m protoinspect.sdk.bundle_upgrade", description=__doc__.splitlines()[0])
    p.add_argument("bundles", nargs="+", help="bundle directories to seal")
    args = p.parse_args(argv)
    status = 0
    for b in args.bundles:
        try:
            manifest, upgraded = upgrade_bundle(b)
        except ProtoInspectError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 2
            continue
        state = "sealed" if upgraded else "already sealed"
        print(f"{b}: {state} (format_version {manifest.format_version}, digest {manifest.digest})")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
