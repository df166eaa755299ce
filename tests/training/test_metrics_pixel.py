"""Pixel AUROC and AUPRO against references and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from protoinspect.training.metrics import (
    aupro,
    pixel_auroc,
    pixel_metrics,
)

# ------------------------------------------------------------------------ helpers


def _blob_masks(
    rng: np.random.Generator, n: int, h: int, w: int, p_empty: float = 0.25
) -> np.ndarray:
    """Random irregular blob masks (several components per image, some images empty)."""
    masks = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        if rng.random() < p_empty:
            continue
        field = ndimage.gaussian_filter(rng.random((h, w)), sigma=max(1.0, h / 16))
        masks[i] = field > np.quantile(field, rng.uniform(0.8, 0.97))
    if not masks.any():
        masks[0, h // 2, w // 2] = True
    return masks


def _random_pixel_case(
    rng: np.random.Generator, n: int = 5, h: int = 20, w: int = 24, ties: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Random blob masks and maps that are informative but imperfect."""
    masks = _blob_masks(rng, n, h, w)
    maps = rng.normal(size=(n, h, w)) + 1.2 * masks
    if ties:  # coarse quantisation: many ties, also across anomalous/normal pixels
        maps = np.round(maps * 2) / 2
    return masks, maps


def _reference_pro_curve(
    masks: np.ndarray, maps: np.ndarray, thresholds: np.ndarray | None = None
) -> tuple[list[float], list[float]]:
    """Slow, obviously-correct PRO curve: one pass per threshold, overlap per component.

    Thresholds default to every unique score; returns (FPRs, PROs) from the highest
    threshold down, starting at (0, 0) for a threshold above every score.
    """
    regions = []  # (image index, component mask)
    for i, mask in enumerate(masks):
        lab, k = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(i, lab == j) for j in range(1, k + 1)]
    normal = ~masks
    if thresholds is None:
        thresholds = np.unique(maps)
    fprs, pros = [0.0], [0.0]
    for t in np.sort(thresholds)[::-1]:
        pred = maps >= t
        fprs.append((pred & normal).sum() / normal.sum())
        pros.append(np.mean([(pred[i] & r).sum() / r.sum() for i, r in regions]))
    return fprs, pros


def _reference_area(fprs: list[float], pros: list[float], max_fpr: float) -> float:
    """Trapezoid area under the curve from FPR 0 to max_fpr (interpolated there), / max_fpr."""
    area = 0.0
    for k in range(1, len(fprs)):
        x0, x1, y0, y1 = fprs[k - 1], fprs[k], pros[k - 1], pros[k]
        if x0 >= max_fpr:
            break
        if x1 <= max_fpr:
            area += (x1 - x0) * (y0 + y1) / 2
        else:  # interpolate the curve at exactly max_fpr
            y = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            area += (max_fpr - x0) * (y0 + y) / 2
            break
    return area / max_fpr


def _reference_aupro(
    masks: np.ndarray, maps: np.ndarray, max_fpr: float = 0.3, thresholds: np.ndarray | None = None
) -> float:
    """Slow reference AUPRO (see :func:`_reference_pro_curve`)."""
    return _reference_area(*_reference_pro_curve(masks, maps, thresholds), max_fpr)


# ------------------------------------------------------------------- pixel AUROC


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64, np.uint8])
@pytest.mark.parametrize("seed", range(4))
def test_pixel_auroc_matches_sklearn(dtype: type, seed: int) -> None:
    rng = np.random.default_rng(2000 + seed)
    masks, maps = _random_pixel_case(rng, n=4, h=16, w=20)
    if np.issubdtype(dtype, np.integer):
        maps = np.clip(np.round(maps * 2) + 4, 0, 12)  # heavy ties
    maps = maps.astype(dtype)
    expected = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-6)
    assert pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-12)  # in fact exact


def test_pixel_auroc_mask_encodings_and_single_image() -> None:
    rng = np.random.default_rng(3)
    masks, maps = _random_pixel_case(rng, n=3)
    ref = pixel_auroc(masks, maps)
    assert pixel_auroc(masks.astype(np.uint8) * 255, maps) == ref  # 0/255 masks
    assert pixel_auroc(masks.astype(np.float32), maps.astype(np.float16)) == pytest.approx(
        roc_auc_score(masks.ravel(), maps.astype(np.float16).ravel()), abs=1e-12
    )
    i = int(np.argmax(masks.any(axis=(1, 2))))
    m2 = masks[i].copy()
    m2[0, 0] = False
    m2[-1, -1] = True
    assert pixel_auroc(m2, maps[i]) == pytest.approx(roc_auc_score(m2.ravel(), maps[i].ravel()))


def test_pixel_auroc_perfect_inverted_constant() -> None:
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, 2:4, 2:5] = True
    maps = masks.astype(np.float32)
    assert pixel_auroc(masks, maps) == 1.0
    assert pixel_auroc(masks, -maps) == 0.0
    assert pixel_auroc(masks, np.zeros_like(maps)) == 0.5


def _pixel_error_cases() -> list[tuple[np.ndarray, np.ndarray, str]]:
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, 1, 1] = True
    maps = np.random.default_rng(0).random((2, 4, 4))
    nan_maps = maps.copy()
    nan_maps[1, 2, 2] = np.nan
    return [
        (np.zeros_like(masks), maps, "only one class"),  # no anomalous pixel
        (np.ones_like(masks), maps, "only one class"),  # no normal pixel
        (masks, maps[:, :3], "differ in shape"),
        (masks, nan_maps, "NaN"),
        (masks[:, None], maps[:, None], r"\(N, H, W\)"),
    ]


@pytest.mark.parametrize("fn", [pixel_auroc, aupro, pixel_metrics])
def test_pixel_errors(fn) -> None:  # noqa: ANN001
    for masks, maps, match in _pixel_error_cases():
        with pytest.raises(ValueError, match=match):
            fn(masks, maps)


# ------------------------------------------------------------------------- AUPRO


def test_aupro_perfect_inverted_constant() -> None:
    masks = np.zeros((3, 10, 12), dtype=bool)
    masks[0, 1:4, 1:3] = True
    masks[0, 6:9, 7:11] = True
    masks[2, 5, 5] = True
    maps = np.where(masks, 0.9, 0.1)
    assert aupro(masks, maps) == pytest.approx(1.0, abs=1e-12)
    assert aupro(masks, -maps) == pytest.approx(0.0, abs=1e-12)
    # A constant map has one threshold: the curve jumps straight from (0, 0) to (1, 1),
    # so PRO(fpr) = fpr and the area up to 0.3 is 0.3^2 / 2 = 0.045; / 0.3 -> 0.15.
    const = np.full(maps.shape, 0.5)
    assert aupro(masks, const) == pytest.approx(0.15, abs=1e-12)
    assert aupro(masks, const, max_fpr=1.0) == pytest.approx(0.5, abs=1e-12)
    assert aupro(masks, const, max_fpr=0.1) == pytest.approx(0.05, abs=1e-12)


def test_aupro_hand_computed_two_components() -> None:
    # One 4x5 image, 20 pixels: component A = {(0,0)} (size 1), component B =
    # {(0,3), (0,4), (1,4)} (size 3, 8-connected); K = 2 regions, 16 normal pixels.
    masks = np.zeros((1, 4, 5), dtype=bool)
    masks[0, 0, 0] = True
    masks[0, 0, 3] = masks[0, 0, 4] = masks[0, 1, 4] = True
    maps = np.zeros((1, 4, 5))
    maps[0, 0, 0] = 0.9  # A
    maps[0, 0, 3], maps[0, 0, 4], maps[0, 1, 4] = 0.8, 0.5, 0.0  # B (last ties the normals)
    maps[0, 2, 0], maps[0, 2, 1] = 0.7, 0.6  # two high normal pixels; the other 14 are 0.0
    # Curve (FPR, PRO) over thresholds, PRO = (overlap_A + overlap_B) / 2:
    #   above 0.9: (0, 0)
    #   t = 0.9:  (0,    (1 + 0)/2   = 1/2)
    #   t = 0.8:  (0,    (1 + 1/3)/2 = 2/3)
    #   t = 0.7:  (1/16, 2/3)
    #   t = 0.6:  (2/16, 2/3)
    #   t = 0.5:  (2/16, (1 + 2/3)/2 = 5/6)
    #   t = 0.0:  (1,    1)
    # Area to 0.3: [0, 1/8] at PRO 2/3 -> 1/8 * 2/3 = 1/12; then the segment from
    # (1/8, 5/6) to (1, 1) is cut at 0.3: PRO(0.3) = 5/6 + (1/6)(0.3 - 0.125)/0.875
    # = 5/6 + 1/30 = 13/15, area 0.175 * (5/6 + 13/15)/2 = 0.175 * 51/60 = 0.14875.
    # Total 1/12 + 0.14875 = 557/2400; / 0.3 -> 557/720 = 0.773611...
    assert aupro(masks, maps) == pytest.approx(557 / 720, abs=1e-12)
    assert _reference_aupro(masks, maps) == pytest.approx(557 / 720, abs=1e-12)
    # With max_fpr = 0.1 the cut falls on the flat part: area 0.1 * 2/3, / 0.1 -> 2/3;
    # the same at exactly the vertices FPR = 1/16 and 1/8 (nothing to interpolate).
    for max_fpr in (0.1, 1 / 16, 1 / 8):
        assert aupro(masks, maps, max_fpr=max_fpr) == pytest.approx(2 / 3, abs=1e-12)
        both = pixel_metrics(masks, maps, max_fpr=max_fpr)
        assert both["aupro"] == pytest.approx(2 / 3, abs=1e-12)
    # max_fpr = 1: area = 1/12 + (7/8) * (5/6 + 1) / 2 = 1/12 + 77/96 = 85/96.
    assert aupro(masks, maps, max_fpr=1.0) == pytest.approx(85 / 96, abs=1e-12)
    # An extra image with an empty mask and all-zero scores adds 20 normal pixels at the
    # lowest score: FPRs above become 1/36 and 2/36, the last jump goes to (1, 1) from
    # (2/36, 5/6); area = 2/36 * 2/3 + (0.3 - 1/18) * (5/6 + PRO(0.3)) / 2.
    masks2 = np.concatenate([masks, np.zeros_like(masks)])
    maps2 = np.concatenate([maps, np.zeros_like(maps)])
    pro_03 = 5 / 6 + (1 / 6) * (0.3 - 1 / 18) / (1 - 1 / 18)
    expected = (2 / 36 * 2 / 3 + (0.3 - 1 / 18) * (5 / 6 + pro_03) / 2) / 0.3
    assert aupro(masks2, maps2) == pytest.approx(expected, abs=1e-12)


def test_aupro_uses_8_connectivity() -> None:
    # Mask pixels (0,0), (1,1), (1,2): one 8-connected region of size 3 (two regions
    # under 4-connectivity). Score 1 at (0,0), 0 elsewhere: the curve goes (0, 0) ->
    # (0, 1/3) -> (1, 1); PRO(0.3) = 1/3 + 2/3 * 0.3 = 8/15,
    # area = 0.3 * (1/3 + 8/15) / 2, / 0.3 -> 13/30. (4-connectivity would give 0.5 + ...)
    masks = np.zeros((1, 5, 5), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 1, 2] = True
    maps = np.zeros((1, 5, 5))
    maps[0, 0, 0] = 1.0
    assert aupro(masks, maps) == pytest.approx(13 / 30, abs=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_aupro_matches_reference(seed: int, ties: bool, dtype: type) -> None:
    rng = np.random.default_rng(3000 + seed)
    masks, maps = _random_pixel_case(rng, n=4, h=16, w=20, ties=ties)
    maps = maps.astype(dtype)
    fprs, pros = _reference_pro_curve(masks, maps)
    for max_fpr in (0.3, 0.05, 0.5, 1.0):
        expected = _reference_area(fprs, pros, max_fpr)
        assert aupro(masks, maps, max_fpr=max_fpr) == pytest.approx(expected, abs=1e-6)
        assert pixel_metrics(masks, maps, max_fpr=max_fpr)["aupro"] == pytest.approx(
            expected, abs=1e-6
        )


@pytest.mark.parametrize("num_thresholds", [2, 7, 100])
def test_aupro_threshold_grid_matches_reference(num_thresholds: int) -> None:
    rng = np.random.default_rng(4000 + num_thresholds)
    masks, maps = _random_pixel_case(rng, n=4, h=16, w=16)
    grid = np.linspace(maps.min(), maps.max(), num_thresholds)
    expected = _reference_aupro(masks, maps, thresholds=grid)
    assert aupro(masks, maps, num_thresholds=num_thresholds) == pytest.approx(expected, abs=1e-6)
    assert pixel_metrics(masks, maps, num_thresholds=num_thresholds)["aupro"] == pytest.approx(
        expected, abs=1e-6
    )


def test_pixel_metrics_match_separate_calls() -> None:
    rng = np.random.default_rng(5)
    masks, maps = _random_pixel_case(rng, n=6, ties=True)
    out = pixel_metrics(masks, maps.astype(np.float32))
    assert set(out) == {"pixel_auroc", "aupro"}
    assert all(type(v) is float for v in out.values())
    assert out["pixel_auroc"] == pixel_auroc(masks, maps.astype(np.float32))
    assert out["aupro"] == aupro(masks, maps.astype(np.float32))
    assert pixel_metrics(masks, maps, max_fpr=1.0)["aupro"] == aupro(masks, maps, max_fpr=1.0)


def test_pixel_metrics_do_not_modify_inputs() -> None:
    rng = np.random.default_rng(6)
    masks, maps = _random_pixel_case(rng, n=3)
    masks_copy, maps_copy = masks.copy(), maps.copy()
    pixel_metrics(masks, maps)
    aupro(masks, maps)
    pixel_auroc(masks, maps)
    np.testing.assert_array_equal(masks, masks_copy)
    np.testing.assert_array_equal(maps, maps_copy)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_fpr": 0.0}, "max_fpr"),
        ({"max_fpr": 1.5}, "max_fpr"),
        ({"num_thresholds": 1}, "num_thresholds"),
        ({"num_thresholds": 2.5}, "num_thresholds"),
        ({"num_thresholds": "100"}, "num_thresholds"),
    ],
)
def test_aupro_option_errors(kwargs: dict, match: str) -> None:
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 1, 1] = True
    with pytest.raises(ValueError, match=match):
        aupro(masks, np.random.default_rng(0).random((1, 4, 4)), **kwargs)
