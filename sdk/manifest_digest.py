"""The manifest digest: what makes a bundle's ``manifest.json`` tamper-evident.

Every artefact is listed in the manifest with its sha256 and size, so a digest of the manifest's
content covers the whole bundle: thresholds, classes, settings, the file list and, through its hashes,
every file. Format version 2 stores it as the top-level key ``digest``:

    digest = sha256( canonical JSON of the manifest without its "digest" key )

with canonical JSON = sorted keys, no whitespace, ASCII escapes (``json.dumps(..., sort_keys=True,
separators=(",", ":"), ensure_ascii=True, allow_nan=False)``). The loader recomputes it from the parsed
file, so any edit -- a threshold, a class name, an added key -- is refused. Legitimate writers
(``write_bundle``, ``add_files``, ``upgrade_bundle``) recompute it as the last step before writing.

This detects editing, not forgery: whoever edits the file can recompute an unkeyed hash. Forgery is
what signing is for: ``protoinspect sign`` signs this digest with an Ed25519 key and
``InspectorConfig(trusted_keys=...)`` refuses bundles not signed by a trusted key
(:mod:`protoinspect.sdk.bundle_signing`).

Legacy policy (format version 1, written before the digest existed): such a bundle still loads -- nothing a
user saved is lost -- but never as verified: :attr:`protoinspect.sdk.bundle.Bundle.manifest_verified` is False
and the loader logs a warning naming :data:`UPGRADE_COMMAND`, which checks every file and seals the manifest.
``load_bundle(..., allow_legacy=False)`` refuses it instead. Adding files to a legacy bundle keeps it
legacy (nothing unverified is sealed silently); new bundles derived from it are written as version 2.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

DIGEST_KEY = "digest"
#: The one-line command that seals a legacy (format version 1) bundle; ``{path}`` is the bundle directory.
UPGRADE_COMMAND = "python -m protoinspect.sdk.bundle_upgrade {path}"

__all__ = ["DIGEST_KEY", "UPGRADE_COMMAND", "canonical_json", "manifest_digest"]


def canonical_json(d: Mapping[str, Any]) -> bytes:
    """The manifest content in its canonical form (sorted keys, compact, ASCII), without ``digest``.

    Raises:
        ValueError: a value JSON cannot hold (NaN, infinity).
        TypeError: a value that is not plain JSON data.
    """
    content = {k: v for k, v in d.items() if k != DIGEST_KEY}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text.encode("ascii")


def manifest_digest(d: Mapping[str, Any]) -> str:
    """sha256 (64 lower-case hex characters) of :func:`canonical_json` of the manifest dict ``d``."""
    return hashlib.sha256(canonical_json(d)).hexdigest()
