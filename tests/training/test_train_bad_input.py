"""Training refuses bad input with a typed error naming the problem, and writes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from protoinspect.sdk.errors import ConfigError, DatasetError
from protoinspect.training.config import load_train_config
from protoinspect.training.object_masks import object_masks
from protoinspect.training.train_detector import train_detector

TINY = ["image_size=64", "crop=32", "steps=2", "batch=2", "min_holdout=2", "detector.num_prototypes=8",
        "detector.embed_dim=16", "detector.num_heads=2", "num_threads=1"]


def _written(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name != "data")


def test_too_few_images_to_hold_out(tiny_products: list[Path], tmp_path: Path) -> None:
    cfg = load_train_config(None, [*TINY, "min_holdout=10"])  # the products have 10 training images each
    with pytest.raises(DatasetError, match="too few to hold out"):
        train_detector(tiny_products, tmp_path / "bundle", cfg, progress=False)
    assert _written(tmp_path) == []


def test_object_placement_without_any_object(tiny_products: list[Path], tmp_path: Path) -> None:
    tile = [p for p in tiny_products if p.name == "tile"]
    cfg = load_train_config(None, [*TINY, "anomaly_placement=object"])
    with pytest.raises(ConfigError, match="no training image has a usable object mask"):
        train_detector(tile, tmp_path / "bundle", cfg, progress=False)
    assert _written(tmp_path) == []


def test_cuda_asked_for_but_absent(tiny_products: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device=cuda"):
        train_detector(tiny_products, tmp_path / "bundle", load_train_config(None, [*TINY, "device=cuda"]),
                       progress=False)
    assert _written(tmp_path) == []


def test_unknown_preset_from_the_cli(tiny_products: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from protoinspect.training.train_detector import main

    code = main(["--data", str(tiny_products[0]), "--out", str(tmp_path / "bundle"), "--preset", "huge", "--quiet"])
    assert code != 0 and "unknown preset 'huge'" in capsys.readouterr().err
    assert _written(tmp_path) == []


def test_auto_placement_finds_objects_not_textures() -> None:
    rng = np.random.default_rng(0)
    objects = np.full((6, 64, 64, 3), 40, np.uint8)
    objects[:, 20:44, 16:48] = 200  # a bright part on a dark belt
    masks, record = object_masks(objects, "auto")
    assert record["anomaly_placement"] == "object" and masks is not None
    assert masks[:, 30, 30].all() and not masks[:, 2, 2].any()
    texture = rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    masks, record = object_masks(texture, "auto")
    assert masks is None and record["anomaly_placement"] == "anywhere"
    assert object_masks(objects, "anywhere") == (None, {"anomaly_placement": "anywhere"})
