"""Anomaly-centred crops and region merging (sdk/stages/crops.py), against hand-computed boxes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from protoinspect.sdk.errors import ConfigError, InputError
from protoinspect.sdk.stages.crops import (
    CropBox,
    CropSettings,
    anomaly_crop_boxes,
    crop_areas,
    crop_scores,
    kept_crop_count,
    merge_region_probabilities,
    region_crops,
)


def _mask(shape: tuple[int, int], *rects: tuple[int, int, int, int]) -> np.ndarray:
    """Bool mask with filled rectangles given as (x, y, w, h)."""
    m = np.zeros(shape, bool)
    for x, y, w, h in rects:
        m[y:y + h, x:x + w] = True
    return m


def _boxes(mask: np.ndarray, num_regions: int, **kw) -> list[list[int]]:
    return [b.to_list() for b in anomaly_crop_boxes(mask, num_regions, CropSettings(**kw))]


def test_one_square_blob_in_the_middle() -> None:
    # bbox (40, 40, 20, 20), S = 100: centre (50, 50), rho = min(max(int(20 * 1.1 / 2) = 11, 10), 50) = 11
    assert _boxes(_mask((100, 100), (40, 40, 20, 20)), 1) == [[39, 39, 61, 61]]


def test_blob_near_a_corner_is_shifted_inside() -> None:
    # bbox (90, 0, 10, 10): centre (95, 5), rho = max(5, 10) = 10 -> x 85..105 -> 80..100, y -5..15 -> 0..20
    assert _boxes(_mask((100, 100), (90, 0, 10, 10)), 1) == [[80, 0, 100, 20]]


def test_tiny_blob_gets_the_minimum_size() -> None:
    # bbox (20, 50, 3, 3), S = 200: centre (21, 51), rho = max(int(1.65) = 1, int(20.0) = 20) = 20
    assert _boxes(_mask((200, 200), (20, 50, 3, 3)), 1) == [[1, 31, 41, 71]]


def test_two_close_blobs_are_merged_and_resquared() -> None:
    # boxes (22, 32, 42, 52) and (32, 32, 52, 52) overlap (gap 0 < floor(0.01 * 100) = 1): union
    # (22, 32, 52, 52) is 30 x 20 -> height grown by 5 + 5 -> (22, 27, 52, 57)
    assert _boxes(_mask((100, 100), (30, 40, 5, 5), (40, 40, 5, 5)), 2) == [[22, 27, 52, 57]]


def test_merge_threshold_is_floor_of_d_times_s() -> None:
    # S = 400 -> threshold floor(4.0) = 4 px. A: bbox (100, 100, 10, 10) -> rho 40 -> (65, 65, 145, 145).
    # B at x = 183: centre (188, 105) -> (148, 65, 228, 145), gap 3 < 4: merged; union 163 x 80 -> height
    # grown by 41 above and 42 below.
    assert _boxes(_mask((400, 400), (100, 100, 10, 10), (183, 100, 10, 10)), 2) == [[65, 24, 228, 187]]
    # B one pixel further: gap 4, not < 4: two far-enough blobs give two boxes (equal areas: by (y0, x0))
    assert _boxes(_mask((400, 400), (100, 100, 10, 10), (184, 100, 10, 10)), 2) == [
        [65, 65, 145, 145], [149, 65, 229, 145]]


def test_two_far_blobs_give_two_boxes() -> None:
    got = _boxes(_mask((100, 100), (10, 10, 6, 6), (80, 80, 6, 6)), 2)
    # centres (13, 13) and (83, 83), rho 10: (3, 3, 23, 23) and (73, 73, 93, 93)
    assert got == [[3, 3, 23, 23], [73, 73, 93, 93]]


def test_merging_repeats_until_stable() -> None:
    # S = 400, rho = 40: A (65, 65, 145, 145) and B (115, 65, 195, 145) overlap; C (65, 160, 145, 240) is 15 px
    # from both. Round 1: A + B -> union 130 x 80 -> (65, 40, 195, 170), which now overlaps C. Round 2: union
    # (65, 40, 195, 240) is 130 x 200 -> width grown by 35 + 35.
    mask = _mask((400, 400), (100, 100, 10, 10), (150, 100, 10, 10), (100, 195, 10, 10))
    assert _boxes(mask, 3) == [[30, 40, 230, 240]]


def test_more_contours_than_kept_are_truncated_by_area() -> None:
    mask = _mask((300, 300), (20, 20, 80, 80), (200, 20, 60, 60), (20, 200, 20, 20), (200, 200, 10, 10))
    big, mid = [16, 16, 104, 104], [197, 17, 263, 83]  # rho 44 and 33
    small_a, small_b = [0, 180, 60, 240], [175, 175, 235, 235]  # rho 30 (minimum size), equal areas
    assert _boxes(mask, 1) == [big, mid]  # delta = 1 -> 1 + 1 extra crop
    assert _boxes(mask, 1, extra_crops=0) == [big]
    assert _boxes(mask, 3) == [big, mid, small_b, small_a]  # ties by (y0, x0)
    assert _boxes(mask, 10) == [big, mid, small_b, small_a]
    assert _boxes(mask, 0, extra_crops=0) == [big]  # at least one box


def test_empty_mask_gives_the_whole_image() -> None:
    assert _boxes(np.zeros((60, 90), bool), 0) == [[0, 0, 90, 60]]
    assert _boxes(np.zeros((60, 90), np.uint8), 3) == [[0, 0, 90, 60]]


def test_non_square_image() -> None:
    # H = 50, W = 200, S = 200: bbox (100, 20, 10, 10) -> centre (105, 25), rho = 20 -> square, inside
    assert _boxes(_mask((50, 200), (100, 20, 10, 10)), 1) == [[85, 5, 125, 45]]
    # 60 x 40 blob: rho = 33, side 66 > H = 50 -> clamped to the full height (not square)
    assert _boxes(_mask((50, 200), (20, 5, 60, 40)), 1) == [[17, 0, 83, 50]]
    # tall image: the width is the short side
    assert _boxes(_mask((200, 50), (5, 20, 40, 60)), 1) == [[0, 17, 50, 83]]


def test_crop_scores_and_areas() -> None:
    norm = np.zeros((40, 40), np.float32)
    norm[5, 5], norm[30, 30] = 127.5, 255.0
    mask = _mask((40, 40), (0, 0, 10, 10), (28, 28, 4, 4))
    boxes = [CropBox(0, 0, 10, 10), CropBox(25, 25, 40, 40), CropBox(12, 12, 20, 20)]
    scores = crop_scores(norm, boxes)
    assert scores.dtype == np.float32 and scores.tolist() == [0.5, 1.0, 0.0]
    areas = crop_areas(mask, boxes)
    assert areas.dtype == np.int64 and areas.tolist() == [100, 16, 0]
    assert crop_scores(norm, []).shape == (0,) and crop_areas(mask, []).shape == (0,)
    with pytest.raises(InputError):
        crop_scores(norm, [CropBox(0, 0, 41, 10)])
    with pytest.raises(InputError):
        crop_areas(mask, [(0, 0, 10, 10)])  # type: ignore[list-item]
    with pytest.raises(InputError):
        crop_scores(np.full((4, 4), np.nan, np.float32), [CropBox(0, 0, 2, 2)])


def test_crop_box_properties_and_validation() -> None:
    box = CropBox(2, 3, 12, 8)
    assert (box.width, box.height, box.area, box.to_list()) == (10, 5, 50, [2, 3, 12, 8])
    for bad in [(0, 0, 0, 5), (5, 0, 4, 5), (-1, 0, 4, 5), (0.0, 0, 4, 5), (True, 0, 4, 5)]:
        with pytest.raises(InputError):
            CropBox(*bad)  # type: ignore[arg-type]


def test_merge_region_probabilities_by_hand() -> None:
    probs = np.array([[0.7, 0.3], [0.2, 0.8]])
    # sqrt(100) / 10 = 1, sqrt(400) / 10 = 2 -> alpha = (1, e) / (1 + e)
    a1, a2 = 1 / (1 + math.e), math.e / (1 + math.e)
    got = merge_region_probabilities(probs, np.array([100, 400]), 10.0)
    np.testing.assert_allclose(got, [0.7 * a1 + 0.2 * a2, 0.3 * a1 + 0.8 * a2], rtol=1e-12)
    # equal areas -> plain mean; a huge area dominates without overflow
    np.testing.assert_allclose(merge_region_probabilities(probs, np.array([5, 5]), 50.0), [0.45, 0.55])
    np.testing.assert_allclose(merge_region_probabilities(probs, np.array([0, 1e12]), 1.0), probs[1])
    one = merge_region_probabilities(np.array([[0.1, 0.6, 0.3]]), np.array([7]), 50.0)
    assert one.tolist() == [0.1, 0.6, 0.3]


@pytest.mark.parametrize(("probs", "areas", "temperature"), [
    (np.zeros((0, 3)), np.zeros(0), 50.0),  # no crop
    (np.array([0.5, 0.5]), np.array([1.0]), 50.0),  # 1-D probs
    (np.ones((2, 3)), np.ones(3), 50.0),  # area count mismatch
    (np.ones((2, 3)), np.array([1.0, -1.0]), 50.0),  # negative area
    (np.array([[np.nan, 1.0], [0.0, 1.0]]), np.ones(2), 50.0),
    (np.ones((2, 3)), np.ones(2), 0.0),
    (np.ones((2, 3)), np.ones(2), float("inf")),
])
def test_merge_region_probabilities_rejects_bad_input(probs, areas, temperature) -> None:
    with pytest.raises(InputError):
        merge_region_probabilities(probs, areas, temperature)


def test_bad_masks_and_counts() -> None:
    for bad in [np.zeros((4, 4), np.float32), np.zeros((4, 4, 1), bool), np.zeros((0, 4), bool)]:
        with pytest.raises(InputError):
            anomaly_crop_boxes(bad, 1)
    with pytest.raises(ConfigError):
        anomaly_crop_boxes(np.zeros((4, 4), bool), 1, {"padding": 0.1})  # type: ignore[arg-type]
    for bad_count in (-1, 1.5, True):
        with pytest.raises(InputError):
            anomaly_crop_boxes(np.zeros((4, 4), bool), bad_count)  # type: ignore[arg-type]


def test_settings_round_trip_and_validation() -> None:
    s = CropSettings(padding=0.2, min_size=0.05, merge_distance=0.02, extra_crops=0, merge_temperature=100.0)
    assert CropSettings.from_dict(s.to_dict()) == s
    assert CropSettings().to_dict() == {"padding": 0.1, "min_size": 0.1, "merge_distance": 0.01, "extra_crops": 1,
                                        "merge_temperature": 50.0}
    for bad in [{"padding": -0.1}, {"min_size": 1.5}, {"merge_distance": float("nan")}, {"extra_crops": -1},
                {"extra_crops": 1.0}, {"merge_temperature": 0.0}, {"merge_temperature": float("inf")},
                {"padding": "0.1"}, {"extra_crops": True}]:
        with pytest.raises(ConfigError):
            CropSettings(**bad)
    with pytest.raises(ConfigError, match="unknown"):
        CropSettings.from_dict({"padding": 0.1, "pad": 0.2})


def test_mebin_mask_to_crops_end_to_end() -> None:
    from protoinspect.sdk.stages.mebin import mebin

    yy, xx = np.mgrid[:128, :128]
    centres = [(30, 30), (90, 100)]
    amap = sum(np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 6.0**2)) for cy, cx in centres).astype(np.float32)
    result = mebin(amap, 0.05, 1.0)
    boxes = anomaly_crop_boxes(result.mask, result.num_regions)
    assert result.num_regions == 2 and len(boxes) == 2
    for cy, cx in centres:
        assert sum(b.x0 <= cx < b.x1 and b.y0 <= cy < b.y1 for b in boxes) == 1
    assert (crop_scores(result.normalized, boxes) > 0.95).all()
    assert (crop_areas(result.mask, boxes) > 50).all()


def _labels(mask: np.ndarray) -> tuple[int, np.ndarray]:
    import cv2

    return cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)


def test_region_crops_know_their_regions() -> None:
    # two close blobs merge into one crop (both labels), a far one keeps its own, and a blob nested in a
    # ring's hole belongs to the ring's crop
    mask = _mask((200, 200), (30, 40, 5, 5), (40, 40, 5, 5), (150, 150, 10, 10))
    ring = np.zeros((200, 200), bool)
    ring[100:130, 20:50] = True
    ring[105:125, 25:45] = False
    ring[112:118, 32:38] = True  # nested inside the hole
    mask |= ring
    count, labels = _labels(mask)
    crops = region_crops(mask, CropSettings(), labels)
    assert sorted(label for c in crops for label in c.labels) == list(range(1, count))  # each region in one crop
    by_label = {label: c for c in crops for label in c.labels}
    assert by_label[labels[41, 31]] is by_label[labels[41, 41]]  # the merged pair
    assert by_label[labels[114, 34]] is by_label[labels[100, 20]]  # nested blob -> the ring's crop
    assert len(crops) == 3
    assert [c.box for c in crops] == anomaly_crop_boxes(mask, 10)  # the same boxes as training's, all kept
    assert region_crops(np.zeros((10, 10), bool), CropSettings(), np.zeros((10, 10), np.int32)) == []


def test_region_crops_match_anomaly_crop_boxes_on_random_masks(rng: np.random.Generator) -> None:
    import cv2

    for _ in range(50):
        h, w = (int(v) for v in rng.integers(20, 120, 2))
        blurred = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), float(rng.uniform(0.5, 3)))
        mask = blurred > rng.uniform(0.45, 0.6)
        count, labels = _labels(mask)
        crops = region_crops(mask, CropSettings(), labels)
        members = [label for c in crops for label in c.labels]
        assert sorted(members) == list(range(1, count))
        k = int(rng.integers(0, 5))
        assert anomaly_crop_boxes(mask, k) == ([c.box for c in crops[:kept_crop_count(k, CropSettings())]]
                                               or [CropBox(0, 0, w, h)])
