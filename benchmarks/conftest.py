"""Shared benchmark fixtures: the bundle under test ($PROTOINSPECT_BUNDLE) and the thread count."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def bundle_path() -> Path:
    """The bundle in $PROTOINSPECT_BUNDLE, or skip."""
    path = os.environ.get("PROTOINSPECT_BUNDLE")
    if not path:
        pytest.skip("set PROTOINSPECT_BUNDLE to a model bundle directory (exported with `protoinspect export` "
                    "for the onnxruntime cases)")
    return Path(path)
