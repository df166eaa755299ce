"""TensorRT runtime of a bundle's defect classifier: the ``classifier.<precision>.sm<cc>.engine`` that
``export/build_engine.py`` builds next to the detector's engine (see :mod:`.classifier_base`).

Loading checks the engine's sidecar against the running TensorRT version, the GPU and the sha256 of
the bundle's ``classifier.onnx`` exactly like the detector's engine, and refuses a mismatch with the
rebuild command. No torch and no onnxruntime: a Jetson that runs engines needs tensorrt and pycuda only.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
from protoinspect.sdk.backends.base import as_bundle
from protoinspect.sdk.backends.classifier_base import (
    CLASSIFIER_INPUTS,
    CLASSIFIER_LOGITS,
    CLASSIFIER_ONNX_FILE,
    ClassifierBackendBase,
    classifier_input_names,
    require_classifier,
)
from protoinspect.sdk.backends.trt_bundle_engine import BundleEngine, open_bundle_engine
from protoinspect.sdk.backends.trt_sidecar import rebuild_command
from protoinspect.sdk.bundle import Bundle
from protoinspect.sdk.errors import BundleError

logger = logging.getLogger(__name__)


class TensorRTClassifier(ClassifierBackendBase):
    """Executes the prebuilt TensorRT engine of ``classifier.onnx``; crops beyond the profile's maximum
    batch run in chunks."""

    name = "tensorrt"

    def __init__(self, bundle: Bundle | str | os.PathLike[str], *, device: str = "cuda:0",
                 engine: str | None = None) -> None:
        """Load and check the classifier engine built for this GPU.

        Args:
            bundle: a loaded bundle or a bundle directory (then loaded and verified).
            device: ``"cuda"`` or ``"cuda:N"``.
            engine: engine file name; None picks the classifier engine of this GPU's compute capability.

        Raises:
            MissingDependencyError: tensorrt or pycuda is not installed.
            ConfigError: an unknown device or GPU, an unknown ``engine``, several candidates.
            BundleError: no classifier or ``classifier.onnx``; no classifier engine for this GPU, or one
                built for another TensorRT, GPU or ONNX file (with the build command); an engine that
                does not take ``tokens``/``regions`` and give ``logits``.
            MissingPluginError: a plugin the engine needs is not registered.
            BackendError: TensorRT cannot deserialize the engine or CUDA fails.
        """
        bundle = as_bundle(bundle)
        require_classifier(bundle)
        self._engine = open_bundle_engine(bundle, CLASSIFIER_ONNX_FILE, device, what="classifier graph", engine=engine,
                                          check=lambda opened: _check_contract(opened, bundle))
        self._runner = self._engine.runner
        self._dtypes = {s.name: s.dtype for s in self._runner.inputs}
        self._init_base(bundle, device)
        logger.info("TensorRT %s classifier engine %s on %s", self._engine.tensorrt_version, self._engine.engine_file,
                    self._engine.gpu.name)

    @property
    def engine_file(self) -> str:
        """The bundle file of the engine in use."""
        return self._engine.engine_file

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # the engine's own I/O types (float32, or float16 for a strongly typed fp16 build)
        feed = {n: inputs[n].astype(self._dtypes[n], copy=False) for n in self.input_names}
        n = feed[CLASSIFIER_INPUTS[0]].shape[0]
        _, max_batch = self._runner.batch_range
        parts = [self._runner.run({k: np.ascontiguousarray(v[i:i + max_batch]) for k, v in feed.items()},
                                  outputs=[CLASSIFIER_LOGITS]) for i in range(0, n, max_batch)]
        return {CLASSIFIER_LOGITS: np.concatenate([p[CLASSIFIER_LOGITS] for p in parts]).astype(np.float32)}

    def _release(self) -> None:
        self._engine.close()

    def describe(self) -> dict[str, Any]:
        """``backend``, ``device``, ``engine_file``, ``precision``, ``tensorrt``, ``batch_range``, ``closed``."""
        lo, hi = self._runner.batch_range
        return {"backend": self.name, "device": self.device, "engine_file": self._engine.engine_file,
                "precision": self._engine.sidecar["precision"], "tensorrt": self._engine.tensorrt_version,
                "batch_range": [lo, hi], "closed": self.closed}


def _check_contract(engine: BundleEngine, bundle: Bundle) -> None:
    """Check that the engine takes the bundle's classifier inputs and gives ``logits``."""
    names = sorted(s.name for s in engine.runner.inputs)
    outputs = [s.name for s in engine.runner.outputs]
    expected = classifier_input_names(bundle)
    if names != sorted(expected) or CLASSIFIER_LOGITS not in outputs:
        raise BundleError(f"engine {engine.engine_file} takes {names} and gives {outputs}, expected "
                          f"{list(expected)} -> '{CLASSIFIER_LOGITS}': rebuild it with "
                          f"`{rebuild_command(bundle.path, str(engine.sidecar['precision']))}`")
