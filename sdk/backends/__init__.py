"""Runtimes that execute the detector graph (onnxruntime, torch); importing this imports neither."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from protoinspect.sdk.backends.base import DETECTOR_INPUT, DETECTOR_OUTPUTS, Backend, BackendBase, check_inputs
from protoinspect.sdk.backends.registry import BACKENDS, create_backend, resolve_backend_name

if TYPE_CHECKING:
    from protoinspect.sdk.backends.ort_backend import OnnxRuntimeBackend
    from protoinspect.sdk.backends.torch_backend import TorchBackend

_LAZY = {"OnnxRuntimeBackend": BACKENDS["onnxruntime"], "TorchBackend": BACKENDS["torch"]}


def __getattr__(name: str) -> Any:
    """Import a backend class on first access."""
    if name in _LAZY:
        import importlib

        module_name, class_name = _LAZY[name].split(":")
        return getattr(importlib.import_module(module_name), class_name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = [
    "BACKENDS",
    "DETECTOR_INPUT",
    "DETECTOR_OUTPUTS",
    "Backend",
    "BackendBase",
    "OnnxRuntimeBackend",
    "TorchBackend",
    "check_inputs",
    "create_backend",
    "resolve_backend_name",
]
