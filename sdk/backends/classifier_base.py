"""The classifier-graph contract: what every runtime that executes a bundle's defect classifier offers.

The classifier graph (``classifier.onnx``, its torch weights, or a TensorRT engine built from it) takes
``tokens`` (n x C x G x G float32 crop features), ``regions`` (n x 2 x G x G float32: per token the
fraction of anomalous and of object pixels) and, when trained with them, ``descriptors`` (n x D float32
standardised region descriptors) and returns ``embedding`` (n x D unit vectors) and
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
#: the inputs of a classifier trained with region descriptors (``DiscoverySettings.uses_descriptors``)
CLASSIFIER_INPUTS_WITH_DESCRIPTORS = ("tokens", "regions", "descriptors")
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


def classifier_input_names(bundle: Bundle) -> tuple[str, ...]:
    """The input names of the bundle's classifier graph (with ``descriptors`` when it takes them)."""
    require_classifier(bundle)
    section = bundle.manifest.discovery
    assert section is not None
    return CLASSIFIER_INPUTS_WITH_DESCRIPTORS if section.settings.uses_descriptors else CLASSIFIER_INPUTS


def check_classifier_inputs(inputs: Mapping[str, Any],
                            names: tuple[str, ...] = CLASSIFIER_INPUTS) -> dict[str, np.ndarray]:
    """Validate classifier inputs: ``tokens`` n x C x G x G and ``regions`` n x 2 x G x G float32, n >= 1,
    and ``descriptors`` n x D float32 when ``names`` has it.

    Returns:
        The arrays, C-contiguous (copied only when they were not).

    Raises:
        InputError: naming the missing / unexpected name, type, dtype, rank or shape mismatch.
    """
    if not isinstance(inputs, Mapping) or sorted(inputs) != sorted(names):
        got = sorted(inputs) if isinstance(inputs, Mapping) else type(inputs).__name__
        raise InputError(f"the classifier takes exactly {list(names)}, got {got}")
    out = {}
    if "descriptors" in names:
        d = inputs["descriptors"]
        if not isinstance(d, np.ndarray) or d.dtype != np.float32 or d.ndim != 2 or not np.isfinite(d).all():
            got = f"{d.dtype} {d.shape}" if isinstance(d, np.ndarray) else type(d).__name__
            raise InputError(f"classifier input 'descriptors' must be a finite n x D float32 array, got {got}")
        out["descriptors"] = np.ascontiguousarray(d)
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
    if "descriptors" in out and out["descriptors"].shape[0] != tokens.shape[0]:
        raise InputError(f"classifier inputs disagree: {tokens.shape[0]} crops of tokens, "
                         f"{out['descriptors'].shape[0]} rows of descriptors")
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
        self.input_names = classifier_input_names(bundle)
        self._open()

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Classify n crops.

        Args:
            inputs: ``{"tokens": n x C x G x G, "regions": n x 2 x G x G}`` float32, and
                ``"descriptors": n x D`` for a classifier with region descriptors (``input_names``).

        Returns:
            At least ``{"logits": n x K float32}`` on the host.

        Raises:
            InputError: inputs that break the contract.
            BackendError: the runtime is closed or failed.
        """
        self._require_open()
        return self._run(check_classifier_inputs(inputs, self.input_names))

    @abstractmethod
    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Execute validated inputs."""
