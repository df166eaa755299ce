"""Bundles with TensorRT engines built on the fake ``tensorrt`` / ``pycuda`` modules (tests/fake_tensorrt.py),
and the fixtures the TensorRT tests share (registered in tests/conftest.py's ``pytest_plugins``):

- ``fake_trt``: the fake TensorRT the engines are built with (10.3, sm 8.7, max batch 4); a test module
  overrides this fixture for another version or maximum batch;
- ``trt_engine_bundle``: an exported 64x64 detector bundle with fp16 engines, built once per test module;
- ``trt_bundle``: a fresh copy of it that a test may change.

torch and the export code are imported only when a bundle is built, so registering this module costs nothing.
"""

from __future__ import annotations

import shutil
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fake_tensorrt as fake
import numpy as np
import pytest


#: the fake ``tensorrt`` and ``pycuda.driver`` modules of one test
FakeModules = tuple[types.ModuleType, types.ModuleType]


@dataclass(frozen=True)
class FakeTensorRT:
    """A fake TensorRT installation: its version, the GPU's compute capability, the engines' maximum batch."""

    version: str = "10.3.0"
    compute_capability: tuple[int, int] = (8, 7)
    max_batch: int = 4


def install_fakes(monkeypatch: Any, fake_trt: FakeTensorRT | None = None, *, devices: int = 1) -> FakeModules:
    """Install a fresh fake ``tensorrt`` and ``pycuda.driver`` (default :class:`FakeTensorRT`) for one test;
    returns ``(trt, cuda)``: ``cuda.log`` records what the runtime did on the fake GPU."""
    fake_trt = fake_trt or FakeTensorRT()
    trt, cuda = fake.make_trt(fake_trt.version), fake.make_cuda(fake_trt.compute_capability, devices=devices)
    fake.install(monkeypatch, trt, cuda)
    return trt, cuda


def with_fake_engines(bundle: Path, fake_trt: FakeTensorRT | None = None) -> Path:
    """Build the bundle's fp16 engines (detector, and classifier when it has one) with ``fake_trt`` installed
    for the build only; returns ``bundle``."""
    from protoinspect.export.build_engine import build_engine

    fake_trt = fake_trt or FakeTensorRT()
    mp = pytest.MonkeyPatch()
    try:
        install_fakes(mp, fake_trt)
        build_engine(bundle, precision="fp16", max_batch=fake_trt.max_batch)
    finally:
        mp.undo()
    return bundle


@pytest.fixture(scope="module")
def fake_trt() -> FakeTensorRT:
    """The fake TensorRT of ``trt_engine_bundle`` (override it in a test module for another one)."""
    return FakeTensorRT()


@pytest.fixture(scope="module")
def trt_engine_bundle(fake_trt: FakeTensorRT, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported 64x64 detector bundle with a fake fp16 engine built by ``fake_trt``, one per test module."""
    from detector_bundles import make_exported_bundle

    out = make_exported_bundle(tmp_path_factory.mktemp("trt") / "bundle", np.random.default_rng())
    return with_fake_engines(out, fake_trt)


@pytest.fixture()
def trt_bundle(trt_engine_bundle: Path, tmp_path: Path) -> Path:
    """A fresh copy of ``trt_engine_bundle`` for one test to change."""
    return Path(shutil.copytree(trt_engine_bundle, tmp_path / "bundle"))
