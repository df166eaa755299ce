"""Torch detector forward latency for one frame (pytest-benchmark; medians, no assertions on time).

    python -m pytest benchmarks/bench_detector.py --benchmark-only --benchmark-columns=median,iqr,ops

Uses the bundle in $PROTOINSPECT_BUNDLE when set (trained weights), else the default architecture with
random weights (same cost); the ONNX Runtime case needs a bundle with ``detector.onnx``. Threads: $PROTOINSPECT_THREADS (default 2, the target machine).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from protoinspect.sdk.models.prototype_detector import DetectorConfig, PrototypeDetectorNet
from protoinspect.sdk.preprocess import PreprocessSpec, preprocess_frame


@pytest.fixture(scope="module")
def detector() -> tuple[torch.nn.Module, PreprocessSpec]:
    torch.set_num_threads(int(os.environ.get("PROTOINSPECT_THREADS", "2")))
    path = os.environ.get("PROTOINSPECT_BUNDLE")
    if path:
        from protoinspect.sdk.bundle import load_bundle
        from protoinspect.sdk.models.loading import load_detector_net

        bundle = load_bundle(path)
        return load_detector_net(bundle), bundle.manifest.preprocess_spec
    return PrototypeDetectorNet(DetectorConfig()).eval(), PreprocessSpec()


@pytest.mark.parametrize("part", ["full", "encoder", "decoder"])
def test_forward_one_frame(benchmark, detector, part: str) -> None:
    net, spec = detector
    frame = np.random.default_rng(0).integers(0, 256, (*spec.image_size, 3), dtype=np.uint8)
    x = torch.from_numpy(preprocess_frame(frame, spec))[None]
    with torch.inference_mode():  # what a torch runtime uses
        feats = net.encoder(x)
        fn = {"full": lambda: net(x), "encoder": lambda: net.encoder(x), "decoder": lambda: net.decoder(feats)}[part]
        for _ in range(5):
            fn()
        benchmark.extra_info["threads"] = torch.get_num_threads()
        benchmark.extra_info["input"] = list(x.shape)
        benchmark.pedantic(fn, rounds=50, iterations=1)


def test_onnxruntime_forward_one_frame(benchmark, detector) -> None:
    """The exported graph (uint8 RGB in) on ONNX Runtime's CPU provider, same thread count."""
    path = os.environ.get("PROTOINSPECT_BUNDLE")
    if not path or not os.path.isfile(os.path.join(path, "detector.onnx")):
        pytest.skip("set PROTOINSPECT_BUNDLE to a bundle exported with `protoinspect export`")
    import onnxruntime as ort

    _, spec = detector
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(os.path.join(path, "detector.onnx"), options, providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).integers(0, 256, (1, *spec.image_size, 3), dtype=np.uint8)
    for _ in range(5):
        session.run(None, {"image": image})
    benchmark.extra_info["threads"] = options.intra_op_num_threads
    benchmark.pedantic(lambda: session.run(None, {"image": image}), rounds=50, iterations=1)


def test_preprocess_one_frame(benchmark, detector) -> None:
    _, spec = detector
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    benchmark.pedantic(lambda: preprocess_frame(frame, spec), rounds=100, iterations=1)
