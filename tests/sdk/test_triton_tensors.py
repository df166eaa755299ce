"""InspectionResult <-> the Triton inspector's tensors (sdk/triton_tensors.py), without a server."""

from __future__ import annotations

import json
from types import MappingProxyType

import numpy as np
import pytest
from protoinspect.sdk.errors import InputError
from protoinspect.sdk.result import Defect, InspectionResult, Verdict
from protoinspect.sdk.triton_tensors import (
    DEFECTS,
    IMAGE_CLASS_ID,
    MODEL_MAP,
    OUTPUTS,
    VERDICT,
    frame_batch,
    result_to_tensors,
    results_to_tensors,
    tensors_to_result,
    tensors_to_results,
)


def make_result(i: int, classified: bool) -> InspectionResult:
    rng = np.random.default_rng(i)
    defects = (Defect(class_id=2 if classified else None, class_name="crack" if classified else None, is_novel=False,
                      score=0.875 + i, bbox_xyxy=(3, 4, 20, 30), area_px=99,
                      class_score=0.5 if classified else None),)
    return InspectionResult(
        verdict=Verdict.ANOMALOUS if classified else Verdict.OK, anomaly_score=0.25 * (i + 1),
        model_map=rng.random((8, 6), dtype=np.float32), mask=None, defects=defects if classified else (),
        timings_ms=MappingProxyType({"detect": 1.5, "total": 2.0}), over_budget=classified, bundle_id="abc",
        frame_index=i, image_class_id=2 if classified else None, image_class_name="crack" if classified else None,
        frame_size=(40, 30))


def test_round_trip_of_one_and_of_a_batch() -> None:
    results = [make_result(0, True), make_result(1, False)]
    one = result_to_tensors(results[0])
    assert set(one) == set(OUTPUTS) and one[MODEL_MAP].shape == (8, 6) and one[IMAGE_CLASS_ID].dtype == np.int32
    assert json.loads(one[DEFECTS][0])[0]["bbox_xyxy"] == [3, 4, 20, 30]
    batch = results_to_tensors(results)
    assert batch[VERDICT].shape == (2, 1) and batch[MODEL_MAP].shape == (2, 8, 6)
    for back, want in zip([tensors_to_result(one), *tensors_to_results(batch)[1:]], results):
        assert back.verdict == want.verdict and back.anomaly_score == pytest.approx(want.anomaly_score)
        np.testing.assert_array_equal(back.model_map, want.model_map)
        assert back.defects == want.defects and back.frame_size == (40, 30) and back.mask is None
        assert (back.image_class_id, back.image_class_name) == (want.image_class_id, want.image_class_name)
        assert (back.bundle_id, back.frame_index, back.over_budget) == ("abc", want.frame_index, want.over_budget)
        assert dict(back.timings_ms) == dict(want.timings_ms)


def test_bad_inputs_and_outputs() -> None:
    with pytest.raises(InputError, match="UINT8.*float32"):
        frame_batch(np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(InputError, match="N x H x W x C"):
        frame_batch(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="missing"):
        tensors_to_result({VERDICT: np.array([b"OK"], dtype=object)})
    bad = result_to_tensors(make_result(0, True))
    bad[VERDICT] = np.array([b"MAYBE"], dtype=object)
    with pytest.raises(InputError, match="cannot read"):
        tensors_to_result(bad)
    with pytest.raises(InputError, match="no results"):
        results_to_tensors([])
