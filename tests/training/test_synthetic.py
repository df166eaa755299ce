"""Tests of the synthetic line-camera data set generator (protoinspect.training.synthetic)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from protoinspect.sdk.errors import ConfigError
from protoinspect.training.synthetic import (
    DEFECT_TYPES,
    OBJECT_PRODUCTS,
    PRODUCTS,
    generate_dataset,
    main,
    render_sample,
    sample_rng,
)

REPO = Path(__file__).resolve().parents[2]
SMALL = {"num_train": 2, "num_test_good": 2, "num_test_per_defect": 1, "progress": False}


def _read(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    img = cv2.imread(str(path), flags)
    assert img is not None, f"cannot read {path}"
    return img


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)).astype(bool)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("synthetic")
    return out, generate_dataset(out, image_size=64, seed=7, **SMALL)


def test_constants() -> None:
    assert len(PRODUCTS) >= 5 and {"tile", "brushed_metal", "fabric", "washer", "bracket"} <= set(PRODUCTS)
    assert set(DEFECT_TYPES) >= {"scratch", "crack", "hole", "stain", "break", "contamination"}
    assert set(OBJECT_PRODUCTS) < set(PRODUCTS)


def test_layout_for_all_products(dataset: tuple[Path, list[Path]]) -> None:
    out, folders = dataset
    assert folders == [out / p for p in PRODUCTS]
    for product in PRODUCTS:
        root = out / product
        for split, kind, n in [("train", "good", 2), ("test", "good", 2)] + [("test", d, 1) for d in DEFECT_TYPES]:
            names = sorted(p.name for p in (root / split / kind).iterdir())
            assert names == [f"{i:03d}.png" for i in range(n)], (product, split, kind)
            for name in names:
                img = _read(root / split / kind / name)
                assert img.shape == (64, 64, 3) and img.dtype == np.uint8
                has_obj = (root / "object_masks" / split / kind / name).is_file()
                assert has_obj == (product in OBJECT_PRODUCTS)
        assert sorted(p.name for p in (root / "ground_truth").iterdir()) == sorted(DEFECT_TYPES)
        assert sorted(p.name for p in (root / "test").iterdir()) == sorted(("good", *DEFECT_TYPES))
    manifest = json.loads((out / "synthetic.json").read_text())
    assert manifest["seed"] == 7 and manifest["image_size"] == [64, 64]
    assert manifest["products"] == list(PRODUCTS) and manifest["defect_types"] == list(DEFECT_TYPES)
    assert manifest["counts"] == {"train_good": 2, "test_good": 2, "test_per_defect": 1}
    assert manifest["object_products"] == list(OBJECT_PRODUCTS)


def test_masks_binary_nonempty_and_on_object(dataset: tuple[Path, list[Path]]) -> None:
    out, _ = dataset
    for product in PRODUCTS:
        root = out / product
        for defect in DEFECT_TYPES:
            mask = _read(root / "ground_truth" / defect / "000_mask.png")
            assert mask.shape == (64, 64) and mask.dtype == np.uint8, (product, defect)
            assert set(np.unique(mask)) == {0, 255}, (product, defect)
            assert 0 < (mask > 0).mean() < 0.5, (product, defect)
            if product in OBJECT_PRODUCTS:
                obj = _read(root / "object_masks" / "test" / defect / "000.png")
                assert obj.shape == (64, 64) and set(np.unique(obj)) <= {0, 255}
                assert not (mask.astype(bool) & ~_dilate(obj > 0, 3)).any(), (product, defect)
        if product in OBJECT_PRODUCTS:
            obj = _read(root / "object_masks" / "train" / "good" / "000.png")
            assert 0.05 < (obj > 0).mean() < 0.8


def test_render_sample_good_and_object_masks() -> None:
    for product in PRODUCTS:
        img, mask, obj = render_sample(product, defect=None, rng=np.random.default_rng(1), image_size=64)
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert mask.shape == (64, 64) and mask.dtype == bool and not mask.any()
        if product in OBJECT_PRODUCTS:
            assert obj is not None and obj.dtype == bool and obj.shape == (64, 64) and obj.any()
            assert not obj[0].any() and not obj[-1].any(), "object must lie inside the frame"
        else:
            assert obj is None
        assert img.std() > 2, "normal images carry texture and noise"


@pytest.mark.parametrize("product", PRODUCTS)
def test_defect_changes_mainly_inside_mask(product: str) -> None:
    for seed in (0, 1):
        good, _, _ = render_sample(product, defect=None, rng=np.random.default_rng(seed), image_size=64)
        for defect in DEFECT_TYPES:
            img, mask, obj = render_sample(product, defect=defect, rng=np.random.default_rng(seed), image_size=64)
            assert mask.any() and mask.shape == (64, 64)
            diff = np.abs(img.astype(np.int16) - good.astype(np.int16)).max(axis=2)
            inside, outside = diff[mask].mean(), diff[~mask].mean()
            assert inside > 1.5 and inside > 20 * outside, (product, defect, seed, inside, outside)
            if obj is not None:
                assert not (mask & ~_dilate(obj, 2)).any(), (product, defect, seed)


def test_defects_vary() -> None:
    areas = {
        render_sample("washer", defect="stain", rng=np.random.default_rng(s), image_size=64)[1].sum() for s in range(5)
    }
    assert len(areas) > 3


def test_determinism(tmp_path: Path) -> None:
    kwargs = {"products": ("tile", "washer"), "image_size": 48, **SMALL}
    generate_dataset(tmp_path / "a", seed=3, **kwargs)
    generate_dataset(tmp_path / "b", seed=3, **kwargs)
    generate_dataset(tmp_path / "c", seed=4, **kwargs)
    a, b, c = (_files(tmp_path / x) for x in "abc")
    assert a == b
    assert a.keys() == c.keys()
    pngs = [k for k in a if k.endswith(".png") and "/train/" in k]
    assert all(a[k] != c[k] for k in pngs)


def test_counts_do_not_change_earlier_images(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "a", products=("bracket",), image_size=48, num_train=1, num_test_good=0,
                     num_test_per_defect=1, defect_types=("crack",), progress=False)
    generate_dataset(tmp_path / "b", products=("bracket",), image_size=48, num_train=3, num_test_good=1,
                     num_test_per_defect=2, defect_types=("hole", "crack"), progress=False)
    for rel in ("bracket/train/good/000.png", "bracket/test/crack/000.png", "bracket/ground_truth/crack/000_mask.png"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_sample_rng_matches_written_images(tmp_path: Path) -> None:
    generate_dataset(tmp_path, products=("fabric",), image_size=40, seed=5, num_train=1, num_test_good=0,
                     num_test_per_defect=0, progress=False)
    img, _, _ = render_sample("fabric", defect=None, rng=sample_rng(5, "fabric", "train", "good", 0), image_size=40)
    written = cv2.cvtColor(_read(tmp_path / "fabric" / "train" / "good" / "000.png"), cv2.COLOR_BGR2RGB)
    assert np.array_equal(img, written)


def test_non_square(tmp_path: Path) -> None:
    generate_dataset(tmp_path, products=("hex_nut", "brushed_metal"), image_size=(40, 72), num_train=1,
                     num_test_good=1, num_test_per_defect=1, progress=False)
    for product in ("hex_nut", "brushed_metal"):
        assert _read(tmp_path / product / "test" / "break" / "000.png").shape == (40, 72, 3)
        assert _read(tmp_path / product / "ground_truth" / "break" / "000_mask.png").shape == (40, 72)
    assert _read(tmp_path / "hex_nut" / "object_masks" / "test" / "good" / "000.png").shape == (40, 72)
    img, mask, obj = render_sample("bracket", defect="scratch", rng=np.random.default_rng(0), image_size=(100, 150))
    assert img.shape == (100, 150, 3) and mask.shape == (100, 150) and obj is not None and obj.shape == (100, 150)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"products": ("tile", "teapot")}, "teapot"),
        ({"products": ()}, "tile"),
        ({"defect_types": ("scratch", "dent")}, "dent"),
        ({"image_size": 31}, "31"),
        ({"image_size": (64, 16)}, "16"),
        ({"image_size": (64,)}, "(64,)"),
        ({"image_size": 64.0}, "64.0"),
        ({"num_train": -1}, "num_train"),
        ({"num_test_good": -2}, "num_test_good"),
        ({"num_test_per_defect": -1}, "num_test_per_defect"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_raise_config_error(tmp_path: Path, kwargs: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        generate_dataset(tmp_path, progress=False, **kwargs)
    assert needle in str(info.value)
    if "products" in kwargs or "defect_types" in kwargs:
        assert "brushed_metal" in str(info.value) or "contamination" in str(info.value)
    assert not any(tmp_path.iterdir()), "nothing is written on a bad argument"


def test_render_sample_bad_arguments() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="teapot.*valid choices.*washer"):
        render_sample("teapot", defect=None, rng=rng)
    with pytest.raises(ConfigError, match="dent.*valid choices.*scratch"):
        render_sample("tile", defect="dent", rng=rng)
    with pytest.raises(ConfigError, match="at least 32"):
        render_sample("tile", defect=None, rng=rng, image_size=16)


def test_rerun_replaces_and_refuses_foreign(tmp_path: Path) -> None:
    generate_dataset(tmp_path, products=("tile",), image_size=40, num_train=3, num_test_good=1,
                     num_test_per_defect=1, progress=False)
    generate_dataset(tmp_path, products=("tile",), image_size=40, num_train=1, num_test_good=1,
                     num_test_per_defect=1, defect_types=("hole",), progress=False)
    assert [p.name for p in (tmp_path / "tile" / "train" / "good").iterdir()] == ["000.png"]
    assert sorted(p.name for p in (tmp_path / "tile" / "test").iterdir()) == ["good", "hole"]
    (tmp_path / "fabric").mkdir()
    (tmp_path / "fabric" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="fabric"):
        generate_dataset(tmp_path, products=("fabric",), image_size=40, progress=False)
    assert (tmp_path / "fabric" / "notes.txt").read_text() == "mine"


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--out", str(tmp_path), "--products", "washer", "--size", "48x64", "--num-train", "1",
            "--num-test-good", "1", "--num-test-per-defect", "1", "--defects", "break", "--seed", "2", "--quiet"]
    assert main(argv) == 0
    assert _read(tmp_path / "washer" / "test" / "break" / "000.png").shape == (48, 64, 3)
    assert json.loads((tmp_path / "synthetic.json").read_text())["seed"] == 2
    assert main(["--out", str(tmp_path), "--products", "teapot", "--quiet"]) == 2
    assert "teapot" in capsys.readouterr().err


def test_python_dash_m(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "protoinspect.training.synthetic", "--out", str(tmp_path), "--products", "tile", "--size", "32",
           "--num-train", "1", "--num-test-good", "0", "--num-test-per-defect", "1", "--defects", "stain"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "tile" / "ground_truth" / "stain" / "000_mask.png").is_file()
