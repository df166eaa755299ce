"""training/discovery_pretrain.py: synthetic anomalies of every kind on the training images, as labelled
discovery crops; pre-training runs inside train_discovery and is recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from protoinspect.sdk.bundle import load_bundle
from protoinspect.sdk.errors import ConfigError, DatasetError
from protoinspect.sdk.models.loading import load_detector_net
from protoinspect.training.datasets import load_dataset
from protoinspect.training.discovery_config import DiscoveryTrainConfig, discovery_config
from protoinspect.training.discovery_pretrain import synthetic_taxonomy_images
from protoinspect.training.pseudo_anomalies import KINDS
from protoinspect.training.train_discovery import train_discovery
from tiny_configs import TINY_DISCOVERY


def test_every_kind_gives_labelled_crops(discovery_bundle: tuple[Path, Path], discovery_tile: Path) -> None:
    det = load_bundle(discovery_bundle[0])
    ds = load_dataset(discovery_tile)
    cfg = discovery_config([*TINY_DISCOVERY, "pretrain_per_kind=2", "jitters=1"])
    settings = load_bundle(discovery_bundle[1]).manifest.discovery.settings  # type: ignore[union-attr]
    images, labels = synthetic_taxonomy_images(ds.train, ds.channels, load_detector_net(det).eval(),
                                               det.manifest.preprocess_spec, settings, cfg,
                                               float(det.manifest.thresholds["pixel"]))
    assert labels == [k for k in range(len(KINDS)) for _ in range(2)] and len(images) == len(labels)
    for im, k in zip(images, labels):
        assert im.sample.defect_type == f"synthetic-{KINDS[k]}" and im.sample.label == 1
        assert im.tokens.shape[0] == 2  # identity and hflip, one jitter each
        assert im.descriptors.shape == (im.tokens.shape[1], 12)
    with pytest.raises(DatasetError, match="train/good"):
        synthetic_taxonomy_images((), ds.channels, load_detector_net(det).eval(), det.manifest.preprocess_spec,
                                  settings, cfg, 0.0)


def test_pretraining_runs_in_discovery_and_is_recorded(discovery_bundle: tuple[Path, Path], discovery_tile: Path,
                                                       tmp_path: Path) -> None:
    cfg = discovery_config([*TINY_DISCOVERY, "pretrain_steps=3", "pretrain_per_kind=1", "jitters=1"])
    out = train_discovery(discovery_tile, discovery_bundle[0], tmp_path / "pre", cfg, flag_threshold=float("-inf"),
                          progress=False)
    training = load_bundle(out).manifest.discovery.training  # type: ignore[union-attr]
    assert training.loss_pretrain_last is not None and training.config["pretrain_steps"] == 3
    with pytest.raises(ConfigError, match="pretrain"):
        DiscoveryTrainConfig(pretrain_per_kind=0)
