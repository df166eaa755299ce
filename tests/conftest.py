"""Shared fixtures: a tiny synthetic multi-product dataset and the optional real MTD data."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# `python -m pytest` puts the working directory first on sys.path. The repository root's folders
# (kernels/, sdk/, export/, training/) install as protoinspect.*; left importable as top-level names,
# ./kernels would shadow Hugging Face's `kernels` distribution that transformers imports. The tests see
# only the installed package, exactly as a user does.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO_ROOT]
# The test helpers (detector_bundles, import_probe, fake_tensorrt, ...) importable from every test folder;
# test modules themselves are imported by path (--import-mode=importlib), so equal names in the mirrored
# folders (tests/sdk/test_config.py, tests/training/test_config.py) do not clash.
TESTS_DIR = str(Path(__file__).resolve().parent)
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

import os  # noqa: E402
import secrets  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

#: fixtures shared by several test modules: the SAM fixture ``sa``; the data set fixtures ``mvtec``, ``mtd``;
#: the fake-TensorRT fixtures ``fake_trt``, ``trt_engine_bundle``, ``trt_bundle``
pytest_plugins = ("sam_fixtures", "dataset_builders", "fake_engine_bundles")

# No torch import here: the ONNX Runtime runtime's tests must run where torch is not installed (Jetson).
# torch is seeded and limited to one thread only when a test module has imported it.

MTD_ROOT = REPO_ROOT.parent / "shared" / "data" / "mtd"
#: set to rerun with the inputs of a failed test (its seed is printed in the failure report)
SEED_ENV = "PROTOINSPECT_TEST_SEED"


def _torch() -> object | None:
    return sys.modules.get("torch")


@pytest.fixture(autouse=True)
def _seed() -> None:
    np.random.seed(0)
    torch = _torch()
    if torch is not None:
        torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    """Tiny tensors: one thread is fastest and does not fight a training job for the cores."""
    torch = _torch()
    if torch is None:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """Seeded randomness, a fresh seed per test and run (``PROTOINSPECT_TEST_SEED`` fixes it); a failing
    test's report prints the seed, so its inputs can be drawn again."""
    seed = int(os.environ.get(SEED_ENV) or secrets.randbits(32))
    request.node.user_properties.append(("rng_seed", seed))
    return np.random.default_rng(seed)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    seed = dict(item.user_properties).get("rng_seed")
    if seed is not None and report.failed:
        report.sections.append(("rng seed", f"rng seed {seed}: rerun with {SEED_ENV}={seed}"))
    return report


@pytest.fixture(scope="session")
def tiny_products(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two synthetic products (a texture and an object on a belt) at 64 px, MVTec layout."""
    from protoinspect.training.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("synthetic")
    return generate_dataset(out, products=("tile", "washer"), image_size=64, num_train=10, num_test_good=4,
                            num_test_per_defect=1, seed=3, progress=False)


@pytest.fixture()
def mtd_root() -> Path:
    """The real Magnetic Tile Defect data beside the project, or skip."""
    if not (MTD_ROOT / "train_normal_filenames.txt").is_file():
        pytest.skip(f"MTD not present at {MTD_ROOT}")
    return MTD_ROOT


@pytest.fixture(scope="session")
def discovery_tile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic texture product at 64 px with two test images per defect type."""
    from protoinspect.training.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("disc-data")
    return generate_dataset(out, products=("tile",), image_size=64, num_train=10, num_test_good=2,
                            num_test_per_defect=2, seed=5, progress=False)[0]


@pytest.fixture(scope="session")
def discovery_bundle(discovery_tile: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(detector bundle with detector.onnx, discovery bundle with classifier.onnx), tiny and fast."""
    from protoinspect.export.classifier_export import export_classifier_onnx
    from protoinspect.export.onnx_export import export_detector_onnx
    from protoinspect.training.config import load_train_config
    from protoinspect.training.discovery_config import discovery_config
    from protoinspect.training.train_detector import train_detector
    from protoinspect.training.train_discovery import train_discovery
    from tiny_configs import TINY_DETECTOR, TINY_DISCOVERY

    root = tmp_path_factory.mktemp("disc-bundles")
    det = train_detector([discovery_tile], root / "det", load_train_config(overrides=TINY_DETECTOR), progress=False)
    export_detector_onnx(det, num_random=1)
    out = train_discovery(discovery_tile, det, root / "disc", discovery_config(TINY_DISCOVERY), known=["crack"],
                          flag_threshold=float("-inf"), progress=False)
    export_classifier_onnx(out)
    return det, out
