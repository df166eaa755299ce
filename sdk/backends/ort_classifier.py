"""ONNX Runtime runtime of a bundle's defect classifier (``classifier.onnx``, see :mod:`.classifier_base`)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from protoinspect.sdk._imports import require
from protoinspect.sdk.backends.base import as_bundle, parse_device
from protoinspect.sdk.backends.classifier_base import (
    CLASSIFIER_LOGITS,
    CLASSIFIER_ONNX_FILE,
    ClassifierBackendBase,
    classifier_input_names,
    require_classifier,
)
from protoinspect.sdk.backends.ort_backend import PROVIDERS, check_available, open_session
from protoinspect.sdk.bundle import Bundle
from protoinspect.sdk.errors import BackendError, BundleError, ConfigError


class OnnxRuntimeClassifier(ClassifierBackendBase):
    """Runs ``classifier.onnx`` with onnxruntime on the CPU or a CUDA GPU.

    A frame has a handful of crops of G x G tokens: by default one intra-op thread without
    spin-waiting, so the classifier never takes cores from the detector's session between frames
    (two spinning thread pools on two cores halve both).
    """

    name = "onnxruntime"

    def __init__(self, bundle: Bundle | str | os.PathLike[str], *, device: str = "cpu",
                 intra_op_threads: int = 1) -> None:
        """Create the session.

        Args:
            bundle: a loaded bundle or a bundle directory (then loaded and verified).
            device: ``"cpu"`` or ``"cuda"`` / ``"cuda:N"`` (the CUDA execution provider).
            intra_op_threads: onnxruntime intra-op threads (>= 1).

        Raises:
            BundleError: no classifier, or no ``classifier.onnx`` (the message has the export command).
            ConfigError: an unknown device or a bad thread count.
            MissingDependencyError: onnxruntime or the requested provider is missing.
            BackendError: onnxruntime cannot create the session or enabled another provider.
        """
        ort = require("onnxruntime")
        bundle = as_bundle(bundle)
        require_classifier(bundle)
        kind, index = parse_device(device, ("cpu", "cuda"))
        if isinstance(intra_op_threads, bool) or not isinstance(intra_op_threads, int) or intra_op_threads < 1:
            raise ConfigError(f"intra_op_threads must be a positive integer, got {intra_op_threads!r}")
        if CLASSIFIER_ONNX_FILE not in bundle.manifest.files:
            raise BundleError(f"{bundle.path} has no {CLASSIFIER_ONNX_FILE}: run `protoinspect export {bundle.path}`")
        providers: list[tuple[str, dict[str, Any]]] = (
            [(PROVIDERS["cpu"], {})] if kind == "cpu" else [(PROVIDERS["cuda"], {"device_id": index or 0})])
        check_available(ort, providers, device)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session, self._providers = open_session(
            ort, bundle.read_bytes(CLASSIFIER_ONNX_FILE), options, providers, device=device,
            where=str(bundle.path / CLASSIFIER_ONNX_FILE))
        names = [i.name for i in self._session.get_inputs()]
        outputs = [o.name for o in self._session.get_outputs()]
        expected = classifier_input_names(bundle)
        if sorted(names) != sorted(expected) or CLASSIFIER_LOGITS not in outputs:
            raise BundleError(f"{bundle.path / CLASSIFIER_ONNX_FILE} takes {names} and gives {outputs}, expected "
                              f"{list(expected)} -> '{CLASSIFIER_LOGITS}': re-export it with "
                              f"`protoinspect export {bundle.path}`")
        self.output_names = tuple(outputs)
        self._ort_version = ort.__version__
        self._threads = intra_op_threads
        self._init_base(bundle, device)

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            (logits,) = self._session.run([CLASSIFIER_LOGITS], inputs)
        except Exception as exc:
            raise BackendError(f"onnxruntime failed to run {CLASSIFIER_ONNX_FILE} on {self.device}: "
                               f"{type(exc).__name__}: {exc}") from exc
        return {CLASSIFIER_LOGITS: logits}

    def _release(self) -> None:
        self._session = None

    def describe(self) -> dict[str, Any]:
        """``backend``, ``device``, ``providers``, ``onnxruntime``, ``model_file``, ``intra_op_threads``, ``closed``."""
        return {"backend": self.name, "device": self.device, "providers": list(self._providers),
                "onnxruntime": self._ort_version, "model_file": CLASSIFIER_ONNX_FILE,
                "intra_op_threads": self._threads, "closed": self.closed}
