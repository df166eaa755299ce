"""The classifier-graph contract: what every runtime that executes a bundle's defect classifier offers.

The classifier graph (``classifier.onnx``, its torch weights, or a TensorRT engine built from it) takes
``tokens`` (n x C x G x G float32 crop features) and ``regions`` (n x 2 x G x G float32: per token the
fraction of anomalous and of object pixels) and returns ``embedding`` (n x D unit vectors) and
``logits`` (n x K, ``kappa * cosine`` to the class prototypes). The runtimes are created through
:func:`protoinspect.sdk.backends.registry.create_classifier_backend`, by the same name as the detector's.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np

from protoinspect.sdk.backends.runtime_lifecycle import RuntimeLifecycle
from protoinspect.sdk.bundle import Bundle
from protoinspect.sdk.errors import BundleError, InputError

CLASSIFIER_ONNX_FILE = "classifier.onnx"
CLASSIFIER_INPUTS = ("tokens", "regions")
CLASSIFIER_OUTPUTS = ("embedding", "logits")
CLASSIFIER_LOGITS = "logits"


def has_classifier(bundle: Bundle) -> bool:
    """Whether the bundle carries a defect classifier (``protoinspect.training.train_discovery``)."""
    return bundle.manifest.discovery is not None


def require_classifier(bundle: Bundle) -> None:
    """Raise :class:`BundleError` (with the command that adds one) when the bundle has no classifier."""
    if not has_classifier(bundle):
        raise BundleError(f"{bundle.path}: no defect classifier; train one with "
                          "`protoinspect train-discovery`")


def check_classifier_inputs(inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Validate classifier inputs: ``tokens`` n x C x G x G and ``regions`` n x 2 x G x G float32, n >= 1.

    Returns:
        The arrays, C-contiguous (copied only when they were not).

    Raises:
        InputError: naming the missing / unexpected name, type, dtype, rank or shape mismatch.
    """
    if not isinstance(inputs, Mapping) or sorted(inputs) != sorted(CLASSIFIER_INPUTS):
        got = sorted(inputs) if isinstance(inputs, Mapping) else type(inputs).__name__
        raise InputError(f"the classifier takes exactly {list(CLASSIFIER_INPUTS)}, got {got}")
    out = {}
    for name in CLASSIFIER_INPUTS:
        arr = inputs[name]
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or arr.ndim != 4 or arr.shape[0] == 0:
            got = f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
            raise InputError(f"classifier input '{name}' must be a non-empty n x C x G x G float32 array, got {got}")
        out[name] = arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
    tokens, regions = out["tokens"], out["regions"]
    if regions.shape[0] != tokens.shape[0] or regions.shape[1] != 2 or regions.shape[2:] != tokens.shape[2:]:
        raise InputError(f"classifier inputs disagree: tokens {tokens.shape}, regions {regions.shape} "
                         "(need n x C x G x G and n x 2 x G x G)")
    return out


class ClassifierBackendBase(RuntimeLifecycle):
    """Shared part of the classifier runtimes: input checks, closed state, context manager.

    Subclasses set ``name`` and implement :meth:`_run` (validated inputs -> ``{"logits": n x K}`` at
    least), :meth:`_release` and :meth:`describe`.
    """

    bundle: Bundle
    input_names: tuple[str, ...] = CLASSIFIER_INPUTS
    output_names: tuple[str, ...] = CLASSIFIER_OUTPUTS

    def _init_base(self, bundle: Bundle, device: str) -> None:
        self.bundle = bundle
        self.device = device
        self._open()

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Classify n crops.

        Args:
            inputs: ``{"tokens": n x C x G x G, "regions": n x 2 x G x G}`` float32.

        Returns:
            At least ``{"logits": n x K float32}`` on the host.

        Raises:
            InputError: inputs that break the contract.
            BackendError: the runtime is closed or failed.
        """
        self._require_open()
        return self._run(check_classifier_inputs(inputs))

    @abstractmethod
    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Execute validated inputs."""
