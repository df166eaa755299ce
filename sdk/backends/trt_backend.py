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

from protoinspect.sdk._imports import require
from protoinspect.sdk.backends.base import (
    DETECTOR_FEATURES,
    DETECTOR_INPUT,
    DETECTOR_OUTPUTS,
    BackendBase,
    as_bundle,
    onnx_file_name,
    parse_device,
)
from protoinspect.sdk.backends.trt_runtime import CudaDevice, EngineRunner
from protoinspect.sdk.backends.trt_sidecar import (
    check_sidecar,
    read_sidecar,
    rebuild_command,
    runtime_plugins,
    select_engine,
    sidecar_file_name,
)
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
        trt = require("tensorrt")
        cuda = require("pycuda.driver")
        bundle = as_bundle(bundle)
        _, index = parse_device(device, ("cuda",))
        file_name = onnx_file_name(bundle)
        if file_name not in bundle.manifest.files:
            raise BundleError(f"bundle {bundle.path} has no exported graph '{file_name}': run `protoinspect export "
                              f"{bundle.path}`, then `{rebuild_command(bundle.path, 'fp16')}`")
        gpu = CudaDevice(cuda, 0 if index is None else index)
        try:
            self._engine_file = select_engine(bundle.manifest.tensorrt, file_name, gpu.compute_capability,
                                              bundle_dir=bundle.path, engine=engine)
            sidecar_name = sidecar_file_name(self._engine_file)
            self._sidecar = read_sidecar(bundle.read_bytes(sidecar_name), sidecar_name)
            check_sidecar(self._sidecar, bundle_dir=bundle.path, tensorrt_version=trt.__version__,
                          compute_capability=gpu.compute_capability,
                          onnx_sha256=str(bundle.manifest.files[file_name]["sha256"]))
            self._runner = EngineRunner(trt, cuda, gpu, bundle.read_bytes(self._engine_file),
                                        cuda_graph=cuda_graph, name=self._engine_file,
                                        plugins=runtime_plugins(self._sidecar))
            outputs = _check_contract(self._runner, bundle, self._engine_file)
        except BaseException:
            if getattr(self, "_runner", None) is not None:
                self._runner.close()
            gpu.release()
            raise
        self._gpu = gpu
        self._trt_version = trt.__version__
        self._init_base(bundle, device, (DETECTOR_INPUT,), outputs)
        logger.info("TensorRT %s engine %s on %s (sm %s), batch %s..%s, cuda_graph=%s", trt.__version__,
                    self._engine_file, gpu.name, gpu.compute_capability, *self._runner.batch_range, cuda_graph)

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run in chunks of at most the profile's max batch, so any batch size works."""
        images = inputs[DETECTOR_INPUT]
        _, max_batch = self._runner.batch_range
        if images.shape[0] <= max_batch:
            out = self._runner.run({DETECTOR_INPUT: images})
            return {name: out[name] for name in self.output_names}
        parts = [self._runner.run({DETECTOR_INPUT: images[i:i + max_batch]}) for i in range(0, len(images), max_batch)]
        return {name: np.concatenate([p[name] for p in parts]) for name in self.output_names}

    def _release(self) -> None:
        self._runner.close()
        self._gpu.release()

    def describe(self) -> dict[str, Any]:
        """What runs where, JSON-safe: backend, device, GPU, TensorRT version, engine file and its sidecar's
        precision / profile / DLA core / build time, bundle id, I/O names, image size, cuda_graph, closed."""
        lo, hi = self._runner.batch_range
        return {
            "backend": self.name, "device": self.device, "gpu": self._gpu.name,
            "compute_capability": self._gpu.compute_capability, "tensorrt": self._trt_version,
            "engine_file": self._engine_file, "precision": self._sidecar["precision"],
            "dla_core": self._sidecar["dla_core"], "batch_range": [lo, hi], "built_utc": self._sidecar["built_utc"],
            "model_file": self._sidecar["onnx_file"], "model_sha256": self._sidecar["onnx_sha256"],
            "bundle_id": self.bundle.manifest.bundle_id, "bundle_path": str(self.bundle.path),
            "input_names": list(self.input_names), "output_names": list(self.output_names),
            "image_size": list(self.image_size), "cuda_graph": self._runner.cuda_graph, "closed": self.closed,
        }


def _check_contract(runner: EngineRunner, bundle: Bundle, engine_file: str) -> tuple[str, ...]:
    """The engine's output names, after checking its I/O against the detector contract and the bundle's size."""
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
    return outputs
