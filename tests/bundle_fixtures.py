"""Helpers of the bundle tests (tests/sdk/test_bundle.py, tests/sdk/test_manifest.py): manifest fields of a small
bundle, and editing its manifest.json by hand as a user might."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from protoinspect.sdk.bundle import write_bundle
from protoinspect.sdk.manifest_digest import manifest_digest
from protoinspect.sdk.preprocess import PreprocessSpec

WEIGHTS = bytes(range(256)) * 40  # 10 KiB of deterministic "weights"
SPEC = PreprocessSpec(image_size=(224, 320), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), color_order="bgr")


def manifest_fields(**overrides: Any) -> dict[str, Any]:
    """``manifest_fields`` of :func:`write_bundle` for a small bundle (keys replaced by ``overrides``)."""
    fields: dict[str, Any] = {
        "created_utc": "2025-01-02T03:04:05Z",
        "producer": {"protoinspect_version": "0.1.0", "command": "python -m protoinspect.training.train_detector --cat bottle"},
        "preprocess": SPEC,
        "model": {"architecture": "patchcore", "config": {"backbone": "wide_resnet50_2", "layers": [2, 3]}},
        "thresholds": {"image": np.float32(0.5), "pixel": 0.25, "calibration": {"method": "f1-max", "n_images": 20}},
        "classes": [
            {"id": 0, "name": "good", "known": True, "discovered": False},
            {"id": 1, "name": "scratch", "known": True, "discovered": False},
        ],
        "datasets": [{"name": "mvtec", "category": "bottle", "n_train": 209}],
        "extra": {"note": "unit test", "tuple": (1, 2)},
    }
    fields.update(overrides)
    return fields


def make_bundle(out: Path) -> Path:
    """A small bundle with two files at ``out``."""
    write_bundle(out, manifest_fields=manifest_fields(),
                 files={"detector.safetensors": WEIGHTS, "prototypes.npy": b"\x93NUMPY"})
    return out


def edit_manifest(bundle: Path, *, reseal: bool = False, **changes: Any) -> None:
    """Edit manifest.json by hand; ``reseal`` also recomputes its digest (to reach the schema checks behind it)."""
    mpath = bundle / "manifest.json"
    d = json.loads(mpath.read_text())
    d.update(changes)
    if reseal:
        d["digest"] = manifest_digest(d)
    mpath.write_text(json.dumps(d))
