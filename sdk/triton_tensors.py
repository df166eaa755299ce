"""The tensors of the Triton ``inspector`` model: an :class:`InspectionResult` to and from named numpy arrays.

The ``inspector`` model of a Triton model repository (``protoinspect export-triton``, see
:mod:`protoinspect.export.triton_repository`) takes raw camera frames and answers what an in-process
:class:`~protoinspect.sdk.inspector.Inspector` returns. The conversion lives here, in numpy only, so the
server side (the Python-backend ``model.py``), the client backend and the tests share one definition.

Tensors (shapes without the batch axis; the model has ``max_batch_size > 0``, so every tensor gets a
leading batch axis ``N`` on the wire, one entry per frame of the request):

============== ======== =========== ==========================================================================
name           dtype    dims        content
============== ======== =========== ==========================================================================
FRAME (input)  UINT8    [-1,-1,-1]  H x W x C frame, C = 3 (``InspectorConfig.color_order``, BGR by default)
                                    or 1 (gray); all frames of one request share H and W
VERDICT        BYTES    [1]         ``b"OK"``, ``b"ANOMALOUS"`` or ``b"REJECTED"``
SCORE          FP32     [1]         image-level anomaly score
MODEL_MAP      FP32     [H', W']    anomaly map at the model's input size (``result.model_map``)
FRAME_SIZE     INT32    [2]         (H, W) of the frame (``result.frame_size``)
DEFECTS        BYTES    [1]         UTF-8 JSON list of ``Defect.to_dict()``: class id/name, novelty, score,
                                    ``bbox_xyxy`` in frame pixels, area, class score
IMAGE_CLASS_ID INT32    [1]         the frame's class id after merging its regions; -1: none
IMAGE_CLASS_NAME BYTES  [1]         its class name; ``b""``: none
RESULT_INFO    BYTES    [1]         UTF-8 JSON: bundle_id, frame_index, timings_ms, over_budget, mask_empty,
                                    mask_reused
============== ======== =========== ==========================================================================

The object mask is not sent (frame-sized; the client's result has ``mask=None``); the frame-resolution map
is made on the client from ``MODEL_MAP`` on first access of ``result.anomaly_map``, as in process.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
from protoinspect.sdk.errors import InputError
from protoinspect.sdk.result import Defect, InspectionResult, Verdict

INPUT_FRAME = "FRAME"
VERDICT = "VERDICT"
SCORE = "SCORE"
MODEL_MAP = "MODEL_MAP"
FRAME_SIZE = "FRAME_SIZE"
DEFECTS = "DEFECTS"
IMAGE_CLASS_ID = "IMAGE_CLASS_ID"
IMAGE_CLASS_NAME = "IMAGE_CLASS_NAME"
RESULT_INFO = "RESULT_INFO"
#: IMAGE_CLASS_ID of a frame without a class
NO_CLASS = -1

#: output name -> (Triton data type, dims without the batch axis; None: the model map's [H', W'])
OUTPUTS: dict[str, tuple[str, list[int] | None]] = {
    VERDICT: ("TYPE_STRING", [1]),
    SCORE: ("TYPE_FP32", [1]),
    MODEL_MAP: ("TYPE_FP32", None),
    FRAME_SIZE: ("TYPE_INT32", [2]),
    DEFECTS: ("TYPE_STRING", [1]),
    IMAGE_CLASS_ID: ("TYPE_INT32", [1]),
    IMAGE_CLASS_NAME: ("TYPE_STRING", [1]),
    RESULT_INFO: ("TYPE_STRING", [1]),
}
#: the input: (Triton data type, dims without the batch axis)
INPUT: tuple[str, str, list[int]] = (INPUT_FRAME, "TYPE_UINT8", [-1, -1, -1])


def _bytes(text: str) -> np.ndarray:
    return np.array([text.encode("utf-8")], dtype=object)


def _json_num(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):  # "nan" / "inf" / "-inf" of Defect.to_dict
        return float(value)
    return float(value)


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        return bytes(value).decode("utf-8")
    return str(value)


def frame_batch(array: Any) -> np.ndarray:
    """Check a ``FRAME`` input batch (N x H x W x C uint8) and return it.

    Raises:
        InputError: not uint8 (naming the dtype received and the one expected), or not 4-D with C in (1, 3).
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise InputError(f"input '{INPUT_FRAME}' must be UINT8 (raw camera frames), got {array.dtype}: send "
                         "np.uint8 frames (np.clip(x, 0, 255).astype(np.uint8))")
    if array.ndim != 4 or array.shape[3] not in (1, 3) or 0 in array.shape[1:3]:
        raise InputError(f"input '{INPUT_FRAME}' must be N x H x W x C with C = 3 (color) or 1 (gray), "
                         f"got shape {tuple(array.shape)}")
    return array


def result_to_tensors(result: InspectionResult) -> dict[str, np.ndarray]:
    """One result as the ``inspector`` model's outputs, without the batch axis (see the module table)."""
    info = {"bundle_id": str(result.bundle_id), "frame_index": int(result.frame_index),
            "timings_ms": {str(k): float(v) for k, v in result.timings_ms.items()},
            "over_budget": bool(result.over_budget), "mask_empty": bool(result.mask_empty),
            "mask_reused": bool(result.mask_reused)}
    size = result.frame_size if result.frame_size is not None else result.model_map.shape
    return {
        VERDICT: _bytes(result.verdict.value),
        SCORE: np.array([result.anomaly_score], dtype=np.float32),
        MODEL_MAP: np.ascontiguousarray(result.model_map, dtype=np.float32),
        FRAME_SIZE: np.array([int(size[0]), int(size[1])], dtype=np.int32),
        DEFECTS: _bytes(json.dumps([d.to_dict() for d in result.defects])),
        IMAGE_CLASS_ID: np.array([NO_CLASS if result.image_class_id is None else int(result.image_class_id)],
                                 dtype=np.int32),
        IMAGE_CLASS_NAME: _bytes(result.image_class_name or ""),
        RESULT_INFO: _bytes(json.dumps({k: _finite(v) for k, v in info.items()})),
    }


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def results_to_tensors(results: Sequence[InspectionResult]) -> dict[str, np.ndarray]:
    """Results of one request's frames stacked along a leading batch axis (what the model answers).

    Raises:
        InputError: no results, or model maps of different shapes (one bundle gives one model size).
    """
    if not results:
        raise InputError("no results to convert: a request holds at least one frame")
    per = [result_to_tensors(r) for r in results]
    shapes = {t[MODEL_MAP].shape for t in per}
    if len(shapes) != 1:
        raise InputError(f"model maps of different shapes in one batch: {sorted(shapes)}")
    return {name: np.stack([t[name] for t in per]) for name in OUTPUTS}


def _defect(d: Mapping[str, Any]) -> Defect:
    return Defect(class_id=None if d.get("class_id") is None else int(d["class_id"]),
                  class_name=d.get("class_name"), is_novel=bool(d.get("is_novel", False)),
                  score=float(_json_num(d["score"])),  # type: ignore[arg-type]
                  bbox_xyxy=tuple(int(v) for v in d["bbox_xyxy"]),  # type: ignore[arg-type]
                  area_px=int(d["area_px"]), class_score=_json_num(d.get("class_score")))


def tensors_to_result(tensors: Mapping[str, Any], index: int | None = None) -> InspectionResult:
    """Rebuild an :class:`InspectionResult` from the model's outputs (``mask`` is None: not sent).

    Args:
        tensors: output name -> array, as :func:`result_to_tensors` (``index=None``) or
            :func:`results_to_tensors` / the server (``index``: which frame of the batch).
        index: position in the batch axis; None: the arrays have no batch axis.

    Raises:
        InputError: an output is missing, or a verdict / JSON field cannot be read (naming it).
    """
    missing = [name for name in OUTPUTS if name not in tensors]
    if missing:
        raise InputError(f"inspector outputs {missing} missing (got {sorted(tensors)}): is the server's "
                         "'inspector' model from the same ProtoInspect version?")
    t = {name: np.asarray(tensors[name]) if index is None else np.asarray(tensors[name])[index] for name in OUTPUTS}
    try:
        verdict = Verdict(_text(t[VERDICT].reshape(-1)[0]))
        info = json.loads(_text(t[RESULT_INFO].reshape(-1)[0]))
        defects = tuple(_defect(d) for d in json.loads(_text(t[DEFECTS].reshape(-1)[0])))
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"cannot read the inspector's outputs: {exc}") from exc
    class_id = int(t[IMAGE_CLASS_ID].reshape(-1)[0])
    class_name = _text(t[IMAGE_CLASS_NAME].reshape(-1)[0])
    size = t[FRAME_SIZE].reshape(-1)
    return InspectionResult(
        verdict=verdict, anomaly_score=float(t[SCORE].reshape(-1)[0]),
        model_map=np.asarray(t[MODEL_MAP], dtype=np.float32), mask=None, defects=defects,
        timings_ms=MappingProxyType({str(k): float(v) for k, v in info.get("timings_ms", {}).items()}),
        over_budget=bool(info.get("over_budget", False)), bundle_id=str(info.get("bundle_id", "")),
        frame_index=int(info.get("frame_index", 0)), mask_empty=bool(info.get("mask_empty", False)),
        mask_reused=bool(info.get("mask_reused", False)),
        image_class_id=None if class_id == NO_CLASS else class_id, image_class_name=class_name or None,
        frame_size=(int(size[0]), int(size[1])))


def tensors_to_results(tensors: Mapping[str, Any]) -> list[InspectionResult]:
    """Every frame's result of a batched answer (:func:`results_to_tensors`' inverse)."""
    if VERDICT not in tensors:
        raise InputError(f"inspector output '{VERDICT}' missing (got {sorted(tensors)})")
    return [tensors_to_result(tensors, i) for i in range(len(np.asarray(tensors[VERDICT])))]


__all__ = ["DEFECTS", "FRAME_SIZE", "IMAGE_CLASS_ID", "IMAGE_CLASS_NAME", "INPUT", "INPUT_FRAME", "MODEL_MAP",
           "NO_CLASS", "OUTPUTS", "RESULT_INFO", "SCORE", "VERDICT", "frame_batch", "result_to_tensors",
           "results_to_tensors", "tensors_to_result", "tensors_to_results"]
