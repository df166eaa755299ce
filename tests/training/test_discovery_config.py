"""Discovery training's config: ClassifierConfig nested (not copied flat), old flat layouts still read."""

from __future__ import annotations

import json

import pytest

from protoinspect.sdk.errors import ConfigError
from protoinspect.sdk.models.classifier_config import ClassifierConfig
from protoinspect.training.discovery_config import FLAT_CLASSIFIER_KEYS, DiscoveryTrainConfig, discovery_config

# the "config" a bundle written before the nesting recorded under extra.discovery.training
OLD_FLAT = {"grid": 4, "embed_dim": 16, "num_layers": 2, "num_heads": 2, "proj_dim": 8, "kappa": 12.0,
            "contrastive_steps": 6, "prototype_steps": 6, "batch": 8, "lr": 0.001, "weight_decay": 0.05,
            "temperature": 0.2, "supcon_temperature": 0.1, "sinkhorn_epsilon": 0.05, "sinkhorn_iters": 3,
            "contrastive_weight": 0.5, "k_max": 4, "reject_quantile": 0.05, "jitters": 2, "box_jitter": 0.15,
            "feature_noise": 0.05, "token_drop": 0.1, "anomaly_prior": "mebin", "masker": "none", "seed": 0,
            "num_threads": 1, "vit_weights": None, "vit_input": 224}


def test_classifier_fields_are_nested_not_copied() -> None:
    cfg = DiscoveryTrainConfig()
    assert cfg.classifier == ClassifierConfig() and cfg.classifier.in_channels is None  # set by training
    assert not set(FLAT_CLASSIFIER_KEYS) & set(cfg.to_dict())
    assert DiscoveryTrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_old_flat_layout_reads_into_the_nested_section() -> None:
    cfg = DiscoveryTrainConfig.from_dict(OLD_FLAT)
    assert cfg.classifier == ClassifierConfig(grid=4, embed_dim=16, num_heads=2, proj_dim=8, kappa=12.0)
    assert cfg.batch == 8 and cfg.jitters == 2
    assert DiscoveryTrainConfig.from_dict(cfg.to_dict()) == cfg  # and writes the nested layout
    with pytest.raises(ConfigError, match=r"\['kappa'\] both at the top level .* keep only classifier\.kappa"):
        DiscoveryTrainConfig.from_dict({"kappa": 3.0, "classifier": {"kappa": 4.0}})


def test_overrides_reach_the_classifier_and_name_the_new_key() -> None:
    cfg = discovery_config(["classifier.kappa=16", "classifier.grid=4", "prototype_steps=500", "masker=none",
                            "vit_weights=none"])
    assert cfg.classifier.kappa == 16.0 and cfg.classifier.grid == 4 and cfg.prototype_steps == 500
    with pytest.raises(ConfigError, match=r"unknown key 'kappa'.*did you mean 'classifier\.kappa'"):
        discovery_config(["kappa=16"])
    with pytest.raises(ConfigError, match=r"key 'classifier\.kappa' must be a number"):
        discovery_config(["classifier.kappa=high"])
    with pytest.raises(ConfigError, match=r"key 'classifier'.*kappa must be > 0"):
        discovery_config(["classifier.kappa=0"])
    with pytest.raises(ConfigError, match="anomaly_prior"):
        discovery_config(["anomaly_prior=sam"])
