"""Image-level metrics against scikit-learn and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from protoinspect.training.metrics import (
    auroc,
    average_precision,
    f1_max,
    image_metrics,
)

# ------------------------------------------------------------------------ helpers


def _sk_f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    """F1-max the way anomalib / ADer compute it from sklearn's PR curve."""
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    return float(np.nanmax(f1))


def _random_image_case(
    rng: np.random.Generator, kind: str, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Random binary labels (both classes present) and scores of a given flavour."""
    labels = rng.random(n) < rng.uniform(0.1, 0.9)
    labels[0], labels[1] = True, False
    if kind == "continuous":
        scores = rng.normal(size=n) + 0.8 * labels
    elif kind == "float32":
        scores = (rng.normal(size=n) + 0.5 * labels).astype(np.float32)
    elif kind == "heavy_ties":  # integer scores in 0..4: most samples tie
        scores = rng.integers(0, 5, size=n) + labels * rng.integers(0, 2, size=n)
    else:  # "all_equal"
        scores = np.full(n, 3.0)
    return labels, scores


# ------------------------------------------------------------- image-level metrics

KINDS = ["continuous", "float32", "heavy_ties", "all_equal"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(6))
def test_image_metrics_match_sklearn(kind: str, seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    labels, scores = _random_image_case(rng, kind, n=int(rng.integers(2, 400)))
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision(labels, scores) == pytest.approx(
        average_precision_score(labels, scores), abs=1e-12
    )
    assert f1_max(labels, scores) == pytest.approx(_sk_f1_max(labels, scores), abs=1e-12)


def test_perfect_and_inverted_separation() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    assert auroc(labels, scores) == 1.0
    assert average_precision(labels, scores) == 1.0
    assert f1_max(labels, scores) == 1.0
    assert auroc(labels, -scores) == 0.0


def test_tiny_hand_computed_case() -> None:
    # labels [0, 1, 1], scores [0.5, 0.5, 0.2]
    # AUROC: pairs (pos, neg) = (0.5, 0.5) tie -> 1/2, (0.2, 0.5) -> 0; (1/2 + 0) / 2 = 0.25
    # PR curve, thresholds high to low:
    #   t = 0.5: TP 1, FP 1 -> P = 1/2, R = 1/2, F1 = 2*1 / (1 + 1 + 2) = 0.5
    #   t = 0.2: TP 2, FP 1 -> P = 2/3, R = 1,   F1 = 2*2 / (2 + 1 + 2) = 0.8
    # AP = (1/2 - 0) * 1/2 + (1 - 1/2) * 2/3 = 1/4 + 1/3 = 7/12
    labels, scores = [0, 1, 1], [0.5, 0.5, 0.2]
    assert auroc(labels, scores) == pytest.approx(0.25, abs=1e-15)
    assert average_precision(labels, scores) == pytest.approx(7 / 12, abs=1e-15)
    assert f1_max(labels, scores) == pytest.approx(0.8, abs=1e-15)
    assert image_metrics(labels, scores) == pytest.approx(
        {"image_auroc": 0.25, "image_ap": 7 / 12, "image_f1_max": 0.8}
    )


def test_label_encodings_and_return_types() -> None:
    rng = np.random.default_rng(7)
    labels, scores = _random_image_case(rng, "continuous", 50)
    ref = image_metrics(labels, scores)
    for enc in (labels.astype(int), labels.astype(np.float32), labels.tolist()):
        assert image_metrics(enc, scores) == ref
    assert set(ref) == {"image_auroc", "image_ap", "image_f1_max"}
    assert all(type(v) is float for v in ref.values())


def test_only_positives_is_allowed_for_ap_and_f1() -> None:
    assert average_precision([1, 1], [0.3, 0.1]) == average_precision_score([1, 1], [0.3, 0.1])
    assert f1_max([1, 1], [0.3, 0.1]) == 1.0


@pytest.mark.parametrize(
    ("labels", "scores", "match"),
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], "only one class"),
        ([0, 0, 0], [0.1, 0.2, 0.3], "only one class"),
        ([0, 1, 1], [0.1, 0.2], "differ in length"),
        ([0, 1, 1], [0.1, np.nan, 0.3], "NaN"),
        ([0, 1, 1], [0.1, np.inf, 0.3], "infinite"),
        ([0, 1, 2], [0.1, 0.2, 0.3], "0/1"),
        ([], [], "empty"),
        ([[0, 1]], [[0.1, 0.2]], "1-D"),
    ],
)
def test_auroc_errors(labels: list, scores: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        auroc(labels, scores)


def test_ap_and_f1_errors() -> None:
    for fn in (average_precision, f1_max, image_metrics):
        with pytest.raises(ValueError, match="anomalous|one class"):
            fn([0, 0], [0.1, 0.2])
        with pytest.raises(ValueError, match="NaN"):
            fn([0, 1], [0.1, np.nan])
        with pytest.raises(ValueError, match="length"):
            fn([0, 1], [0.1])


