"""PyTorch runtime of a bundle's defect classifier (its ``DefectClassifierNet`` weights; see :mod:`.classifier_base`)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from protoinspect.sdk._imports import require
from protoinspect.sdk.backends.base import as_bundle, parse_device
from protoinspect.sdk.backends.classifier_base import CLASSIFIER_OUTPUTS, ClassifierBackendBase, require_classifier
from protoinspect.sdk.bundle import Bundle
from protoinspect.sdk.errors import BackendError, MissingDependencyError


class TorchClassifier(ClassifierBackendBase):
    """Runs the classifier network eagerly with PyTorch on the CPU or a CUDA GPU (no export needed)."""

    name = "torch"

    def __init__(self, bundle: Bundle | str | os.PathLike[str], *, device: str = "cpu") -> None:
        """Load the weights onto ``device``.

        Args:
            bundle: a loaded bundle or a bundle directory (then loaded and verified).
            device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

        Raises:
            BundleError: no classifier, or weights that do not fit its recorded architecture.
            ConfigError: an unknown device.
            MissingDependencyError: torch / safetensors missing, or CUDA asked of a torch without it.
        """
        torch = require("torch")
        require("safetensors")
        from protoinspect.sdk.models.loading import load_classifier_net

        bundle = as_bundle(bundle)
        require_classifier(bundle)
        kind, index = parse_device(device, ("cpu", "cuda"))
        if kind == "cuda" and not torch.cuda.is_available():
            raise MissingDependencyError(f"device {device!r} requested but torch {torch.__version__} sees no CUDA GPU")
        self._torch = torch
        self._device = torch.device(kind if index is None else f"{kind}:{index}")
        self._net = load_classifier_net(bundle).to(self._device)
        self._init_base(bundle, device)

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        try:
            with torch.inference_mode():
                out = self._net(*(torch.from_numpy(inputs[n]).to(self._device) for n in self.input_names))
                return {name: t.to("cpu", torch.float32).numpy() for name, t in zip(CLASSIFIER_OUTPUTS, out)}
        except RuntimeError as exc:
            raise BackendError(f"torch failed to run the classifier on {self.device}: {exc}") from exc

    def _release(self) -> None:
        self._net = None

    def describe(self) -> dict[str, Any]:
        """``backend``, ``device``, ``torch`` (version), ``closed``."""
        return {"backend": self.name, "device": self.device, "torch": self._torch.__version__, "closed": self.closed}
