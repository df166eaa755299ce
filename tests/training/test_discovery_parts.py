"""Discovery building blocks: the region-guided vMF classifier, token crops, merging, losses, K estimation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protoinspect.sdk.errors import ConfigError, InputError
from protoinspect.sdk.models.defect_classifier import (
    ClassifierConfig,
    DefectClassifierNet,
    guided_attention_reference,
    region_guidance_bias,
)
from protoinspect.sdk.stages.crops import CropBox
from protoinspect.sdk.stages.discovery_crops import DiscoverySettings, build_crops, crop_regions, crop_tokens
from protoinspect.sdk.stages.discovery_merge import merge_crops, softmax
from protoinspect.training.discovery_losses import info_nce, sinkhorn, supcon
from protoinspect.training.kmeans import estimate_num_classes, silhouette_cosine, spherical_kmeans


def _net(**kw: object) -> DefectClassifierNet:
    return DefectClassifierNet(ClassifierConfig(in_channels=12, grid=4, embed_dim=16, num_heads=2, proj_dim=8,
                                                num_classes=3, **kw)).eval()  # type: ignore[arg-type]


def test_classifier_outputs_unit_embeddings_and_kappa_cosines() -> None:
    net = _net(kappa=7.0)
    tokens, regions = torch.randn(5, 12, 4, 4), torch.rand(5, 2, 4, 4)
    z, logits = net(tokens, regions)
    assert z.shape == (5, 16) and logits.shape == (5, 3)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(5))
    protos = torch.nn.functional.normalize(net.prototypes, dim=-1)
    torch.testing.assert_close(logits, 7.0 * z @ protos.T)
    assert net.project(net.features(tokens, regions)).norm(dim=1).allclose(torch.ones(5))


def test_region_guidance_biases_only_the_class_token_row() -> None:
    levels = torch.tensor([2.0, 0.5, 3.0])
    regions = torch.zeros(1, 2, 1, 3)
    regions[0, 0, 0] = torch.tensor([1.0, 0.0, 0.0])  # anomaly fraction
    regions[0, 1, 0] = torch.tensor([1.0, 1.0, 0.0])  # object fraction
    bias = region_guidance_bias(regions, levels)
    torch.testing.assert_close(bias, torch.tensor([[0.0, 2.0, 0.5, -3.0]]))  # cls, anomaly, object, background
    q, k, v = (torch.randn(1, 2, 4, 8) for _ in range(3))
    guided = guided_attention_reference(q, k, v, bias)
    plain = guided_attention_reference(q, k, v, torch.zeros_like(bias))
    torch.testing.assert_close(guided[:, :, 1:], plain[:, :, 1:])  # patch rows untouched
    logits = q[:, :, :1] @ k.transpose(-1, -2) / 8**0.5 + bias[:, None, None, :]
    torch.testing.assert_close(guided[:, :, :1], torch.softmax(logits, -1) @ v)


def test_region_guidance_changes_what_the_classifier_sees() -> None:
    net = _net()
    tokens = torch.randn(2, 12, 4, 4)
    a = torch.zeros(2, 2, 4, 4)
    b = a.clone()
    b[:, 0, :2] = 1.0
    assert not torch.allclose(net(tokens, a)[0], net(tokens, b)[0])


def test_classifier_rejects_wrong_shapes_and_configs() -> None:
    net = _net()
    with pytest.raises(ValueError, match="tokens must be"):
        net(torch.randn(2, 11, 4, 4), torch.rand(2, 2, 4, 4))
    with pytest.raises(ValueError, match="regions must be"):
        net(torch.randn(2, 12, 4, 4), torch.rand(3, 2, 4, 4))
    with pytest.raises(ConfigError):
        ClassifierConfig(in_channels=4, embed_dim=10, num_heads=3)
    with pytest.raises(ConfigError, match="unknown"):
        ClassifierConfig.from_dict({"in_channels": 4, "bogus": 1})
    cfg = ClassifierConfig(in_channels=4)
    assert ClassifierConfig.from_dict(cfg.to_dict()) == cfg


def test_set_prototypes_updates_the_class_count() -> None:
    net = _net()
    net.set_prototypes(torch.randn(5, 16))
    assert net.config.num_classes == 5 and net(torch.randn(1, 12, 4, 4), torch.rand(1, 2, 4, 4))[1].shape == (1, 5)


# ----------------------------------------------------------------------------- crops


def test_crop_tokens_whole_image_at_feature_resolution_is_the_feature_map(rng: np.random.Generator) -> None:
    feats = rng.standard_normal((3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(crop_tokens(feats, CropBox(0, 0, 64, 64), (64, 64), 8), feats, atol=1e-6)


def test_crop_tokens_interpolate_a_linear_ramp_exactly(rng: np.random.Generator) -> None:
    fy, fx = np.mgrid[0:16, 0:16].astype(np.float32)
    feats = np.stack([fx, fy])  # value = feature-cell index; cell centres at (index + 0.5) * stride
    x0, y0 = int(rng.integers(8, 40)), int(rng.integers(8, 40))
    box = CropBox(x0, y0, x0 + 48, y0 + 48)
    out = crop_tokens(feats, box, (128, 128), 6)
    centres = x0 + (np.arange(6) + 0.5) * 8
    np.testing.assert_allclose(out[0, 0], centres / 8 - 0.5, atol=1e-5)
    np.testing.assert_allclose(out[1, :, 0], (y0 + (np.arange(6) + 0.5) * 8) / 8 - 0.5, atol=1e-5)


def test_crop_regions_are_fractions() -> None:
    anomaly = np.zeros((32, 32), bool)
    anomaly[:16, :16] = True
    obj = np.ones((32, 32), bool)
    obj[:, 24:] = False
    r = crop_regions(anomaly, obj, CropBox(0, 0, 32, 32), 2)
    np.testing.assert_allclose(r[0], [[1, 0], [0, 0]])
    np.testing.assert_allclose(r[1], [[1, 0.5], [1, 0.5]])


def test_build_crops_centres_crops_on_the_blobs() -> None:
    yy, xx = np.mgrid[0:128, 0:128]
    amap = np.exp(-((xx - 30) ** 2 + (yy - 30) ** 2) / 40.0) + np.exp(-((xx - 100) ** 2 + (yy - 90) ** 2) / 40.0)
    feats = np.random.default_rng(0).standard_normal((5, 16, 16)).astype(np.float32)
    crops = build_crops(amap.astype(np.float32), feats, None, DiscoverySettings(grid=4, s_min=0.0, s_max=1.0))
    assert crops.binarized.num_regions == 2
    assert crops.tokens.shape[1:] == (5, 4, 4) and crops.regions.shape[1:] == (2, 4, 4)
    centres = {((b.x0 + b.x1) // 2 // 10, (b.y0 + b.y1) // 2 // 10) for b in crops.boxes[:2]}
    assert centres == {(3, 3), (10, 9)}
    assert (crops.regions[:2, 1] == 1).all() and crops.areas[:2].min() > 0
    with pytest.raises(InputError):
        build_crops(amap.astype(np.float32), feats[0], None, DiscoverySettings())


def test_discovery_settings_round_trip_and_validation() -> None:
    s = DiscoverySettings(grid=6, s_min=0.5, s_max=2.0, reject_threshold=0.3)
    assert DiscoverySettings.from_dict(s.to_dict()) == s
    assert DiscoverySettings.from_dict(DiscoverySettings().to_dict()).reject_threshold == float("-inf")
    with pytest.raises(ConfigError):
        DiscoverySettings(s_min=2.0, s_max=1.0)
    with pytest.raises(ConfigError, match="unknown"):
        DiscoverySettings.from_dict({"grid": 4, "nope": 1})


def test_merge_crops_weights_by_area() -> None:
    logits = np.array([[10.0, 0.0], [0.0, 10.0]])
    one = merge_crops(logits[:1], np.array([50.0]), kappa=10.0, temperature=50.0)
    assert one.class_id == 0 and one.score == pytest.approx(1.0)
    big_second = merge_crops(logits, np.array([1.0, 10000.0]), kappa=10.0, temperature=50.0)
    alpha = softmax(np.sqrt([1.0, 10000.0]) / 50.0)
    np.testing.assert_allclose(big_second.cosines, alpha @ (logits / 10.0))
    assert big_second.class_id == 1


# ----------------------------------------------------------------------------- losses and K


def test_sinkhorn_balances_the_classes() -> None:
    cosines = (0.3 * torch.randn(40, 4) + torch.tensor([0.5, 0.0, 0.0, 0.0])).clamp(-1, 1)  # biased to class 0
    assert (cosines.argmax(1) == 0).float().mean() > 0.5
    q = sinkhorn(cosines, 0.05, 50)
    torch.testing.assert_close(q.sum(1), torch.ones(40))
    torch.testing.assert_close(q.sum(0), torch.full((4,), 10.0), atol=0.5, rtol=0)
    assert torch.isfinite(sinkhorn(torch.tensor([[10.0, -10.0], [-10.0, 10.0]]), 0.05, 3)).all()


def test_contrastive_losses_prefer_aligned_views() -> None:
    p = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    other = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    assert info_nce(p, p, 0.2) < info_nce(p, other, 0.2)
    labels = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    grouped = torch.nn.functional.normalize(torch.eye(16)[labels] + 0.01 * torch.randn(8, 16), dim=1)
    assert supcon(grouped, labels, 0.1) < supcon(p, labels, 0.1)


def test_k_estimation_recovers_separated_clusters(rng: np.random.Generator) -> None:
    k = int(rng.integers(2, 6))
    centres = np.linalg.qr(rng.standard_normal((16, 16)))[0][:k]
    x = np.concatenate([c + 0.05 * rng.standard_normal((20, 16)) for c in centres])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    est, table = estimate_num_classes(x, 7, rng)
    assert est == k, table
    labels, _ = spherical_kmeans(x, k, rng)
    from sklearn.metrics import silhouette_score

    assert silhouette_cosine(x, labels) == pytest.approx(silhouette_score(x, labels, metric="cosine"), abs=1e-9)


def test_a_map_without_mebin_regions_still_centres_the_crop_on_its_peak() -> None:
    yy, xx = np.mgrid[0:128, 0:128]
    weak = (0.2 * np.exp(-((xx - 100) ** 2 + (yy - 20) ** 2) / 30.0)).astype(np.float32)  # below s_min
    feats = np.zeros((3, 16, 16), np.float32)
    crops = build_crops(weak, feats, None, DiscoverySettings(grid=4, s_min=0.5, s_max=1.0, fallback_fraction=0.01))
    assert crops.binarized.num_regions == 0
    b = crops.boxes[0]
    assert b.x0 <= 100 < b.x1 and b.y0 <= 20 < b.y1 and b.area < 128 * 128 / 4
    assert crops.regions[0, 0].max() > 0  # the peak's tokens are marked anomalous for the guidance
    whole = build_crops(weak, feats, None, DiscoverySettings(grid=4, s_min=0.5, s_max=1.0))  # default: AnomalyNCD
    assert whole.boxes[0].to_list() == [0, 0, 128, 128]


def test_descriptors_join_the_embedding_with_their_weight(rng: np.random.Generator) -> None:
    cfg = ClassifierConfig(in_channels=6, grid=4, embed_dim=16, num_heads=2, num_classes=3, descriptor_dim=12,
                           descriptor_weight=0.25)
    net = DefectClassifierNet(cfg).eval()
    tokens = torch.from_numpy(rng.standard_normal((5, 6, 4, 4)).astype(np.float32))
    regions = torch.rand(5, 2, 4, 4)
    desc = torch.from_numpy(rng.standard_normal((5, 12)).astype(np.float32))
    with torch.no_grad():
        z, logits = net(tokens, regions, desc)
        z_tok = torch.nn.functional.normalize(net.features(tokens, regions), dim=-1)
    assert z.shape == (5, 28) and logits.shape == (5, 3) and cfg.output_dim == 28
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(5))
    # the token part keeps its direction; before normalisation it carries (1 - beta) of the squared norm
    joint = torch.cat([z_tok * 0.75 ** 0.5, desc * (0.25 / 12) ** 0.5], dim=-1)
    torch.testing.assert_close(z, torch.nn.functional.normalize(joint, dim=-1))
    # other descriptors, other embedding and logits
    with torch.no_grad():
        z2, _ = net(tokens, regions, -desc)
    assert not torch.allclose(z, z2)
    with pytest.raises(ValueError, match="descriptors"):
        net(tokens, regions)
    with pytest.raises(ConfigError, match="descriptor"):
        ClassifierConfig(descriptor_weight=1.0)


def test_holdout_split_keeps_each_group_and_small_groups_whole() -> None:
    from protoinspect.training.train_discovery import holdout_split

    labels = [0] * 10 + [1] * 3 + [-1] * 20
    fit, held = holdout_split(labels, 0.2, seed=0)
    assert sorted(fit + held) == list(range(33)) and not set(fit) & set(held)
    assert [labels[i] for i in held].count(0) == 2 and [labels[i] for i in held].count(-1) == 4
    assert 1 not in [labels[i] for i in held]
    assert holdout_split(labels, 0.0, seed=0) == (list(range(33)), [])
    assert holdout_split(labels, 0.2, seed=0) == (fit, held)
