"""Every installed backend, end to end and per stage (pytest-benchmark; medians, no time assertions).

    PROTOINSPECT_BUNDLE=B python -m pytest benchmarks/bench_backends.py --benchmark-only \
        --benchmark-columns=median,iqr,ops

Backends: ``onnxruntime`` (CPU; needs ``detector.onnx``), ``torch`` (CPU, or ``cuda:0`` when torch sees
a GPU), ``tensorrt`` (needs tensorrt + pycuda, a CUDA GPU and an engine built for it by
``export/build_engine.py``); each is skipped with the reason when it cannot run here. Stages:

* ``preprocess``: a 480x640 BGR camera frame -> model-size RGB (``protoinspect.sdk.preprocess.resize_to_rgb``);
* ``graph-b1`` / ``graph-b8``: ``backend.run`` on 1 / 8 model-size images (the detector graph alone,
  host to host); frames/s of the batch in ``extra_info``;
* ``postprocess``: the model map -> frame resolution (``protoinspect.sdk.preprocess.resize_map``);
* ``inspect``: ``Inspector.inspect`` on the frame, fast path (``image_threshold=inf``), per-stage
  p50/p95 of ``result.timings_ms`` in ``extra_info``.

Correctness is asserted once before timing: every backend's map for the same frame matches
onnxruntime's within the fp32 engine tolerance of :mod:`protoinspect.export.trt_parity` (fp16 engines: their own).
$PROTOINSPECT_THREADS sets CPU threads (default 2).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bench_settings import bench_threads

from protoinspect.sdk import Inspector, InspectorConfig
from protoinspect.sdk.backends.registry import create_backend
from protoinspect.sdk.bundle import load_bundle
from protoinspect.sdk.preprocess import resize_map, resize_to_rgb

BACKENDS = ("onnxruntime", "torch", "tensorrt")
FRAME_SHAPE = (480, 640, 3)
STAGES = ("mask", "detect", "regions", "total")




def _skip_reason(name: str, bundle_path: Path) -> str | None:
    """Why backend ``name`` cannot run here (None: it can)."""
    if name == "onnxruntime":
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnxruntime is not installed"
        return None if (bundle_path / "detector.onnx").is_file() else "the bundle has no detector.onnx"
    if name == "torch":
        return None if importlib.util.find_spec("torch") is not None else "torch is not installed"
    if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("pycuda") is None:
        return "needs TensorRT and a CUDA GPU (tensorrt / pycuda not installed)"
    from protoinspect.sdk.backends.trt_sidecar import engine_entries

    if not engine_entries(load_bundle(bundle_path, verify=False).manifest.tensorrt, "detector.onnx"):
        return f"no TensorRT engine in the bundle: run python export/build_engine.py {bundle_path} --precision fp16"
    return None


def _device(name: str) -> str:
    if name == "tensorrt":
        return "cuda:0"
    if name == "torch":
        import torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"
    return "cpu"


def _kwargs(name: str) -> dict[str, Any]:
    if name == "onnxruntime":
        return {"intra_op_threads": bench_threads()}
    return {"threads": bench_threads()} if name == "torch" else {}


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest, bundle_path: Path) -> Any:
    """An open backend (module scope: created once per backend)."""
    reason = _skip_reason(str(request.param), bundle_path)
    if reason:
        pytest.skip(reason)
    b = create_backend(str(request.param), load_bundle(bundle_path), device=_device(str(request.param)),
                       **_kwargs(str(request.param)))
    yield b
    b.close()


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, FRAME_SHAPE, dtype=np.uint8)


@pytest.fixture(scope="module")
def reference_map(bundle_path: Path, frame: np.ndarray) -> np.ndarray | None:
    """onnxruntime's map of ``frame`` (None when onnxruntime cannot run the bundle)."""
    if _skip_reason("onnxruntime", bundle_path):
        return None
    bundle = load_bundle(bundle_path)
    with create_backend("onnxruntime", bundle, intra_op_threads=bench_threads()) as ort_backend:
        image = resize_to_rgb(frame, bundle.manifest.preprocess_spec, "bgr")
        return ort_backend.run({"image": image[None]})["anomaly_map"]


def _extra(benchmark: Any, backend: Any, stage: str) -> None:
    info = backend.describe()
    benchmark.extra_info.update({"backend": backend.name, "device": backend.device, "stage": stage,
                                 "precision": info.get("precision", "fp32"), "gpu": info.get("gpu"),
                                 "input": list(backend.image_size), "threads": bench_threads()})


@pytest.mark.benchmark(group="preprocess")
def test_preprocess(benchmark: Any, bundle_path: Path, frame: np.ndarray) -> None:
    """Camera frame -> model input (the same for every backend)."""
    spec = load_bundle(bundle_path, verify=False).manifest.preprocess_spec
    out = benchmark(resize_to_rgb, frame, spec, "bgr")
    assert out.shape == (*spec.image_size, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("batch", [1, 8])
def test_graph(benchmark: Any, backend: Any, frame: np.ndarray, reference_map: np.ndarray | None, batch: int) -> None:
    """``backend.run`` on ``batch`` model-size images (host arrays in and out)."""
    from protoinspect.export.trt_parity import PARITY_TOLERANCES

    spec = backend.bundle.manifest.preprocess_spec
    image = resize_to_rgb(frame, spec, "bgr")
    images = np.repeat(image[None], batch, axis=0)
    first = backend.run({"image": images})["anomaly_map"]
    if reference_map is not None:
        tol = PARITY_TOLERANCES[backend.describe().get("precision", "fp32")] * max(1.0, float(np.abs(reference_map).max()))
        assert float(np.abs(first[:1] - reference_map).max()) <= tol
    benchmark.group = f"graph-b{batch}"
    benchmark(backend.run, {"image": images})
    _extra(benchmark, backend, f"graph-b{batch}")
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["frames_per_s"] = round(batch / stats.stats.median, 1)


@pytest.mark.benchmark(group="postprocess")
def test_postprocess(benchmark: Any, bundle_path: Path) -> None:
    """Model map -> frame resolution."""
    h, w = load_bundle(bundle_path, verify=False).manifest.preprocess_spec.image_size
    amap = np.random.default_rng(1).random((h, w), dtype=np.float32)
    out = benchmark(resize_map, amap, FRAME_SHAPE[:2])
    assert out.shape == FRAME_SHAPE[:2]


def test_inspect(benchmark: Any, backend: Any, frame: np.ndarray) -> None:
    """``Inspector.inspect`` end to end, fast path, with per-stage p50/p95 in extra_info."""
    insp = Inspector(backend.bundle, _Unowned(backend), InspectorConfig(color_order="bgr", image_threshold=math.inf))
    for _ in range(5):
        insp.inspect(frame)
    calls: list[dict[str, float]] = []

    def once() -> str:
        result = insp.inspect(frame)
        calls.append(dict(result.timings_ms))
        return result.verdict.value

    benchmark.group = "inspect"
    assert benchmark(once) == "OK"
    _extra(benchmark, backend, "inspect")
    for stage in STAGES:
        values = [c.get(stage, 0.0) for c in calls]
        benchmark.extra_info[f"{stage}_p50_ms"] = round(float(np.percentile(values, 50)), 4)
        benchmark.extra_info[f"{stage}_p95_ms"] = round(float(np.percentile(values, 95)), 4)


class _Unowned:
    """Lends the module-scoped backend to an Inspector without letting it close the backend."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def close(self) -> None:
        pass
