"""Euclidean k-means and the descriptor clustering baseline."""

from __future__ import annotations

import numpy as np
import pytest

from protoinspect.sdk.errors import InputError
from protoinspect.sdk.stages.region_descriptors import DESCRIPTOR_NAMES
from protoinspect.training.metrics_ncd import ncd_metrics
from protoinspect.training.region_baseline import cluster_baseline, kmeans


def test_kmeans_separates_blobs(rng: np.random.Generator) -> None:
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = np.repeat(np.arange(3), 20)
    x = centres[truth] + rng.normal(0, 0.5, (60, 2))
    labels = kmeans(x, 3, rng)
    assert ncd_metrics(truth.tolist(), labels.tolist())["f1"] == 1.0
    assert set(kmeans(x, 1, rng).tolist()) == {0}


def test_kmeans_errors(rng: np.random.Generator) -> None:
    with pytest.raises(InputError):
        kmeans(np.zeros((3, 2)), 4, rng)
    with pytest.raises(InputError):
        kmeans(np.full((3, 2), np.nan), 2, rng)


def test_cluster_baseline_informative_vs_noise(rng: np.random.Generator) -> None:
    d = len(DESCRIPTOR_NAMES)
    types = ["a"] * 15 + ["b"] * 15
    good = rng.normal(0, 1, (30, d))
    good[15:, :3] += 6.0  # type b differs in three descriptors
    res = cluster_baseline(good, types, seeds=3)
    assert res["k"] == 2 and res["num_images"] == 30 and res["seeds"] == 3
    assert res["nmi"] > 0.8 and res["f1"] > 0.95 and 0 <= res["nmi_std"] < 0.1
    noise = cluster_baseline(rng.normal(0, 1, (30, d)), types, seeds=3)
    assert noise["nmi"] < res["nmi"]
    with pytest.raises(InputError):
        cluster_baseline(good[:3], types)


def test_cluster_baseline_columns(rng: np.random.Generator) -> None:
    d = len(DESCRIPTOR_NAMES)
    types = ["a"] * 12 + ["b"] * 12
    x = rng.normal(0, 1, (24, d))
    x[12:, 0] += 8.0  # only descriptor 0 separates the types
    assert cluster_baseline(x, types, seeds=2, columns=[0])["f1"] == 1.0
    assert cluster_baseline(x, types, seeds=2, columns=[1, 2])["f1"] < 1.0
