"""Opening one of a bundle's prebuilt TensorRT engines for this GPU: the loading the detector backend
(:mod:`.trt_backend`) and the classifier runtime (:mod:`.trt_classifier`) share.

The engine is picked by the ONNX file it was built from and this GPU's compute capability; its sidecar is
checked against the running TensorRT version, the GPU and the ONNX file's sha256 before the engine is
deserialized, and a mismatch is refused with the rebuild command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protoinspect.sdk._imports import require
from protoinspect.sdk.backends.base import parse_device
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


@dataclass
class BundleEngine:
    """An open engine of a bundle and what it was checked against.

    Attributes:
        runner: executes the engine.
        gpu: the GPU it runs on (released by :meth:`close`).
        engine_file: the engine's file name in the bundle.
        sidecar: the engine's checked sidecar (precision, profile, DLA core, build time, ...).
        tensorrt_version: the running TensorRT's version.
    """

    runner: EngineRunner
    gpu: CudaDevice
    engine_file: str
    sidecar: dict[str, Any]
    tensorrt_version: str

    def close(self) -> None:
        """Free the engine's buffers and context, then release the GPU."""
        self.runner.close()
        self.gpu.release()


def open_bundle_engine(bundle: Bundle, onnx_file: str, device: str, *, what: str, engine: str | None = None,
                       cuda_graph: bool = False, check: Callable[[BundleEngine], None] | None = None) -> BundleEngine:
    """Select, check and deserialize the bundle's engine of ``onnx_file`` for the GPU of ``device``.

    Args:
        bundle: a loaded bundle.
        onnx_file: the exported graph the engine was built from (``detector.onnx``, ``classifier.onnx``).
        device: ``"cuda"`` or ``"cuda:N"``.
        what: how messages name the graph when the bundle lacks it (``"exported graph"``, ``"classifier"``).
        engine: engine file name in the bundle; None picks the engine of ``onnx_file`` built for this GPU's
            compute capability (there must be exactly one).
        cuda_graph: capture the engine's launch in a CUDA graph per input-shape set and replay it.
        check: called with the open engine before it is returned (e.g. its I/O against a contract); what it
            raises closes the engine and propagates.

    Raises:
        MissingDependencyError: tensorrt or pycuda is not installed.
        ConfigError: an unknown device, no such GPU, an unknown ``engine``, several candidates.
        BundleError: no ``onnx_file`` in the bundle, no engine of it for this GPU, a corrupt sidecar, or an
            engine built for another TensorRT version, GPU architecture or ONNX file (with the rebuild command).
        MissingPluginError: the sidecar lists a non-AOT plugin that is not registered.
        BackendError: TensorRT cannot deserialize the engine or CUDA fails.
    """
    trt = require("tensorrt")
    cuda = require("pycuda.driver")
    _, index = parse_device(device, ("cuda",))
    if onnx_file not in bundle.manifest.files:
        raise BundleError(f"bundle {bundle.path} has no {what} '{onnx_file}': run `protoinspect export "
                          f"{bundle.path}`, then `{rebuild_command(bundle.path, 'fp16')}`")
    gpu = CudaDevice(cuda, 0 if index is None else index)
    runner: EngineRunner | None = None
    try:
        engine_file = select_engine(bundle.manifest.tensorrt, onnx_file, gpu.compute_capability,
                                    bundle_dir=bundle.path, engine=engine)
        sidecar_name = sidecar_file_name(engine_file)
        sidecar = read_sidecar(bundle.read_bytes(sidecar_name), sidecar_name)
        check_sidecar(sidecar, bundle_dir=bundle.path, tensorrt_version=trt.__version__,
                      compute_capability=gpu.compute_capability,
                      onnx_sha256=str(bundle.manifest.files[onnx_file]["sha256"]))
        runner = EngineRunner(trt, cuda, gpu, bundle.read_bytes(engine_file), cuda_graph=cuda_graph,
                              name=engine_file, plugins=runtime_plugins(sidecar))
        opened = BundleEngine(runner, gpu, engine_file, sidecar, trt.__version__)
        if check is not None:
            check(opened)
    except BaseException:
        if runner is not None:
            runner.close()
        gpu.release()
        raise
    return opened
