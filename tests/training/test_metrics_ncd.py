"""NCD clustering metrics (training/metrics_ncd.py) against scikit-learn and hand computations.

Random labelings are drawn fresh every run; the seed is in every assertion message.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from protoinspect.training.metrics_ncd import ari, cluster_accuracy, ncd_metrics, nmi


def _seeded() -> tuple[int, np.random.Generator]:
    seed = int(np.random.SeedSequence().entropy % 2**63)
    return seed, np.random.default_rng(seed)


def _brute_force_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Best accuracy over every injective mapping of predicted clusters to (padded) true classes."""
    classes, clusters = np.unique(y_true), np.unique(y_pred)
    d = max(classes.size, clusters.size)
    targets = list(classes) + [None] * (d - classes.size)
    best = 0
    for perm in itertools.permutations(targets, clusters.size):
        mapping = dict(zip(clusters, perm))
        best = max(best, sum(mapping[p] == t for p, t in zip(y_pred, y_true)))
    return best / y_true.size


def test_nmi_and_ari_match_sklearn_on_random_labelings() -> None:
    seed, rng = _seeded()
    for _ in range(300):
        n = int(rng.integers(1, 300))
        k_true, k_pred = int(rng.integers(1, 9)), int(rng.integers(1, 12))
        y_true = rng.integers(0, k_true, n)
        y_pred = rng.integers(0, k_pred, n)
        if rng.random() < 0.3:  # a noisy copy: high agreement
            y_pred = np.where(rng.random(n) < 0.8, y_true, y_pred)
        info = f"seed={seed} n={n} k_true={k_true} k_pred={k_pred}"
        assert nmi(y_true, y_pred) == pytest.approx(normalized_mutual_info_score(y_true, y_pred), abs=1e-12), info
        assert ari(y_true, y_pred) == pytest.approx(adjusted_rand_score(y_true, y_pred), abs=1e-12), info


def test_cluster_accuracy_matches_brute_force() -> None:
    seed, rng = _seeded()
    for _ in range(100):
        n = int(rng.integers(1, 40))
        y_true = rng.integers(0, int(rng.integers(1, 5)), n)
        y_pred = rng.integers(0, int(rng.integers(1, 6)), n)
        expected = _brute_force_accuracy(y_true, y_pred)
        assert cluster_accuracy(y_true, y_pred) == pytest.approx(expected, abs=1e-12), f"seed={seed}"


def test_hand_computed_accuracy() -> None:
    # pred 1 -> true 0 (2 right), pred 0 -> true 1 (2 right, the 2 is lost): 4 / 5
    assert cluster_accuracy([0, 0, 1, 1, 2], [1, 1, 0, 0, 0]) == pytest.approx(0.8)
    # more clusters than classes: pred 2 has no class left -> 3 of 4
    assert cluster_accuracy([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(0.75)
    # contingency (pred x true) [[3, 2], [2, 0]]: greedy 0->0 gives 3 + 0, the assignment 0->1, 1->0 gives 2 + 2
    assert cluster_accuracy([0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 1, 1]) == pytest.approx(4 / 7)


def test_permutation_invariance() -> None:
    seed, rng = _seeded()
    y_true = rng.integers(0, 5, 200)
    y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, 6, 200))
    base = ncd_metrics(y_true, y_pred)
    relabel_pred = rng.permutation(6)[y_pred] + 10
    relabel_true = rng.permutation(5)[y_true] * 3 - 7
    for t, p in [(y_true, relabel_pred), (relabel_true, y_pred), (relabel_true, relabel_pred)]:
        got = ncd_metrics(t, p)
        for key in base:
            assert got[key] == pytest.approx(base[key], abs=1e-12), f"seed={seed} {key}"
    order = rng.permutation(200)  # shuffling the samples changes nothing either
    got = ncd_metrics(y_true[order], y_pred[order])
    assert all(got[k] == pytest.approx(base[k], abs=1e-12) for k in base), f"seed={seed}"


def test_perfect_and_degenerate_cases() -> None:
    assert ncd_metrics([0, 0, 1, 1, 2], [5, 5, 3, 3, 9]) == {"nmi": 1.0, "ari": 1.0, "f1": 1.0}
    assert ncd_metrics([4, 4, 4], [1, 1, 1]) == {"nmi": 1.0, "ari": 1.0, "f1": 1.0}  # one cluster both sides
    assert ncd_metrics([7], [3]) == {"nmi": 1.0, "ari": 1.0, "f1": 1.0}  # a single image
    one_side = ([0, 0, 1, 1], [0, 0, 0, 0])  # predictions do not split: no information
    assert nmi(*one_side) == normalized_mutual_info_score(*one_side) == 0.0
    assert ari(*one_side) == adjusted_rand_score(*one_side) == 0.0
    assert cluster_accuracy(*one_side) == 0.5
    singletons = ([0, 1, 2, 3], [0, 1, 2, 3])
    assert ncd_metrics(*singletons) == {"nmi": 1.0, "ari": 1.0, "f1": 1.0}
    independent = ([0, 0, 1, 1], [0, 1, 0, 1])
    assert nmi(*independent) == 0.0 and ari(*independent) == pytest.approx(adjusted_rand_score(*independent))


def test_string_labels() -> None:
    y_true = ["crack", "crack", "blowhole", "fray", "fray", "fray"]
    y_pred = ["c2", "c2", "c0", "c1", "c1", "c0"]
    codes_true, codes_pred = [1, 1, 0, 2, 2, 2], [2, 2, 0, 1, 1, 0]
    assert ncd_metrics(y_true, y_pred) == ncd_metrics(codes_true, codes_pred)
    assert nmi(y_true, y_pred) == pytest.approx(normalized_mutual_info_score(y_true, y_pred), abs=1e-12)
    assert ari(y_true, y_pred) == pytest.approx(adjusted_rand_score(y_true, y_pred), abs=1e-12)
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(5 / 6)
    assert cluster_accuracy(np.array(y_true, dtype=object), y_pred) == pytest.approx(5 / 6)


@pytest.mark.parametrize("fn", [nmi, ari, cluster_accuracy, ncd_metrics])
def test_invalid_inputs_raise_value_errors(fn) -> None:
    from protoinspect.sdk.errors import InputError

    for y_true, y_pred in [([0, 1, 1], [0, 1]), ([], []), ([[0, 1]], [[0, 1]]), ([0.0, np.nan], [0, 1]),
                           (np.array([1, "a", None], dtype=object), [0, 1, 2])]:
        with pytest.raises(InputError) as excinfo:
            fn(y_true, y_pred)
        assert isinstance(excinfo.value, ValueError)
