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

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

MTD_ROOT = REPO_ROOT.parent / "shared" / "data" / "mtd"


@pytest.fixture(autouse=True)
def _seed() -> None:
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny tensors: one thread is fastest and does not fight a training job for the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture()
def rng() -> np.random.Generator:
    """Fresh (unseeded) randomness: every run draws new inputs."""
    return np.random.default_rng()


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
