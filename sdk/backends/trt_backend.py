"""TensorRT backend: runs the bundle's prebuilt detector engine with pycuda device buffers on one stream.

Engines are built with ``python export/build_engine.py BUNDLE --precision fp16`` on the target machine
(TensorRT engines are specific to the TensorRT version and GPU architecture). Loading checks the
engine's sidecar against the running TensorRT version, the GPU's compute capability and the sha256 of
the bundle's ``detector.onnx``, and refuses a mismatch with the exact rebuild command.

A Jetson that only runs engines needs tensorrt, pycuda, numpy and opencv; no torch. The second GPU
path, ONNX Runtime's TensorRT execution provider with its engine cache, is
``OnnxRuntimeBackend(bundle, device="tensorrt:0", fp16=True)``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from protoinspect.sdk.backends.base import (
    DETECTOR_FEATURES,
    DETECTOR_INPUT,
    DETECTOR_OUTPUTS,
    BackendBase,
    GraphOutputs,
    as_bundle,
    onnx_file_name,
)
from protoinspect.sdk.backends.trt_bundle_engine import BundleEngine, open_bundle_engine
from protoinspect.sdk.backends.trt_sidecar import rebuild_command
from protoinspect.sdk.bundle import Bundle
from protoinspect.sdk.errors import BundleError

logger = logging.getLogger(__name__)


class TensorRTBackend(BackendBase):
    """Executes a prebuilt TensorRT engine of ``detector.onnx``.

    Example::

        with TensorRTBackend("bundles/tile", device="cuda:0", cuda_graph=True) as backend:
            out = backend.run({"image": batch})  # N x H x W x 3 uint8 RGB, any N
            out["anomaly_map"], out["score"]      # N x 1 x H x W float32, N float32
    """

    name = "tensorrt"

    def __init__(
        self,
        bundle: Bundle | str | os.PathLike[str],
        *,
        device: str = "cuda:0",
        cuda_graph: bool = False,
        engine: str | None = None,
    ) -> None:
        """Load and check the bundle's detector engine for this GPU.

        Args:
            bundle: a loaded :class:`~protoinspect.sdk.bundle.Bundle` or a bundle directory (then loaded and verified).
            device: ``"cuda"`` or ``"cuda:N"``.
            cuda_graph: capture the engine's launch in a CUDA graph per batch size and replay it
                (lower launch overhead at batch 1).
            engine: engine file name in the bundle; None picks the detector engine built for this
                GPU's compute capability (there must be exactly one).

        Raises:
            MissingDependencyError: tensorrt or pycuda is not installed.
            ConfigError: an unknown device, no such GPU, an unknown ``engine``, several candidates.
            BundleError: no exported graph, no engine for this GPU, a corrupt sidecar, or an engine
                built for another TensorRT version, GPU architecture or ONNX file (the message has the
                rebuild command), or an engine that does not match the detector contract.
            MissingPluginError: the engine's sidecar lists a non-AOT plugin that is not registered
                (register it with ``trt_runtime.add_plugin_registrar`` first).
            BackendError: TensorRT cannot deserialize the engine or CUDA fails.
        """
        bundle = as_bundle(bundle)
        self._engine = open_bundle_engine(bundle, onnx_file_name(bundle), device, what="exported graph", engine=engine,
                                          cuda_graph=cuda_graph, check=lambda opened: _check_contract(opened, bundle))
        self._runner = self._engine.runner
        self._init_base(bundle, device, (DETECTOR_INPUT,), tuple(s.name for s in self._runner.outputs))
        logger.info("TensorRT %s engine %s on %s (sm %s), batch %s..%s, cuda_graph=%s", self._engine.tensorrt_version,
                    self._engine.engine_file, self._engine.gpu.name, self._engine.gpu.compute_capability,
                    *self._runner.batch_range, cuda_graph)

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run in chunks of at most the profile's max batch, so any batch size works."""
        images = inputs[DETECTOR_INPUT]
        _, max_batch = self._runner.batch_range
        if images.shape[0] <= max_batch:
            return self._runner.run({DETECTOR_INPUT: images})
        parts = [self._runner.run({DETECTOR_INPUT: images[i:i + max_batch]}) for i in range(0, len(images), max_batch)]
        return {name: np.concatenate([p[name] for p in parts]) for name in self.output_names}

    def _run_lazy(self, inputs: dict[str, np.ndarray]) -> GraphOutputs:
        """One run that copies the map and score to the host; ``features`` stays in the engine's device
        buffer until read (valid until the next run). A batch beyond the profile's maximum runs in chunks
        that reuse the buffers, so there every output is copied at once."""
        images = inputs[DETECTOR_INPUT]
        if images.shape[0] > self._runner.batch_range[1]:
            return GraphOutputs.ready(self._run(inputs))
        now = [name for name in self.output_names if name != DETECTOR_FEATURES]
        host = self._runner.run({DETECTOR_INPUT: images}, outputs=now)
        run = self._runner.runs

        def fetch(name: str) -> np.ndarray:
            return host[name] if name in host else self._runner.fetch(name, run)

        return GraphOutputs(self.output_names, fetch)

    def _release(self) -> None:
        self._engine.close()

    def describe(self) -> dict[str, Any]:
        """What runs where, JSON-safe: backend, device, GPU, TensorRT version, engine file and its sidecar's
        precision / profile / DLA core / build time, bundle id, I/O names, image size, cuda_graph, closed."""
        lo, hi = self._runner.batch_range
        engine, sidecar = self._engine, self._engine.sidecar
        return {
            "backend": self.name, "device": self.device, "gpu": engine.gpu.name,
            "compute_capability": engine.gpu.compute_capability, "tensorrt": engine.tensorrt_version,
            "engine_file": engine.engine_file, "precision": sidecar["precision"],
            "dla_core": sidecar["dla_core"], "batch_range": [lo, hi], "built_utc": sidecar["built_utc"],
            "model_file": sidecar["onnx_file"], "model_sha256": sidecar["onnx_sha256"],
            "bundle_id": self.bundle.manifest.bundle_id, "bundle_path": str(self.bundle.path),
            "input_names": list(self.input_names), "output_names": list(self.output_names),
            "image_size": list(self.image_size), "cuda_graph": self._runner.cuda_graph, "closed": self.closed,
        }


def _check_contract(engine: BundleEngine, bundle: Bundle) -> None:
    """Check the engine's I/O against the detector contract and the bundle's model size."""
    runner, engine_file = engine.runner, engine.engine_file
    h, w = bundle.manifest.preprocess_spec.image_size
    names = [s.name for s in runner.inputs]
    outputs = tuple(s.name for s in runner.outputs)
    problems = []
    if names != [DETECTOR_INPUT]:
        problems.append(f"inputs are {names}, expected ['{DETECTOR_INPUT}']")
    else:
        spec = runner.inputs[0]
        if spec.dtype != np.uint8 or list(spec.shape[1:]) != [h, w, 3]:
            problems.append(f"input '{DETECTOR_INPUT}' is {spec.dtype} {list(spec.shape)}, expected uint8 [N, {h}, {w}, 3]")
    if outputs not in (DETECTOR_OUTPUTS, (*DETECTOR_OUTPUTS, DETECTOR_FEATURES)):
        problems.append(f"outputs are {list(outputs)}, expected {list(DETECTOR_OUTPUTS)} (+ '{DETECTOR_FEATURES}')")
    if problems:
        raise BundleError(f"engine {engine_file} does not match the detector contract ({'; '.join(problems)}): "
                          f"rebuild it with `{rebuild_command(bundle.path, 'fp16')}`")
