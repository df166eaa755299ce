"""Backend registry: name -> implementation (imported lazily), and the one-time ``"auto"`` resolution."""

from __future__ import annotations

import importlib
import inspect
import os
from typing import Any

from protoinspect.sdk.backends.base import Backend, as_bundle, has_onnx
from protoinspect.sdk.backends.classifier_base import ClassifierBackendBase
from protoinspect.sdk.bundle import Bundle, load_bundle
from protoinspect.sdk.errors import ConfigError, MissingDependencyError

#: backend name -> "module:Class"; the module is imported only when the backend is created.
BACKENDS: dict[str, str] = {
    "onnxruntime": "protoinspect.sdk.backends.ort_backend:OnnxRuntimeBackend",
    "torch": "protoinspect.sdk.backends.torch_backend:TorchBackend",
    "tensorrt": "protoinspect.sdk.backends.trt_backend:TensorRTBackend",
}
#: backend name -> "module:Class" of the runtime of the bundle's defect classifier (the same names: an
#: Inspector runs its classifier on the same kind of runtime as its detector).
CLASSIFIER_BACKENDS: dict[str, str] = {
    "onnxruntime": "protoinspect.sdk.backends.ort_classifier:OnnxRuntimeClassifier",
    "torch": "protoinspect.sdk.backends.torch_classifier:TorchClassifier",
    "tensorrt": "protoinspect.sdk.backends.trt_classifier:TensorRTClassifier",
}
# "auto" never picks tensorrt: an engine must be built on the target first (export/build_engine.py).
_CHOICES = f"auto, {', '.join(BACKENDS)}"


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def resolve_backend_name(name: str, bundle: Bundle | str | os.PathLike[str]) -> str:
    """Resolve ``"auto"`` to a concrete backend name; other names are checked and returned unchanged.

    ``"auto"`` picks ``"onnxruntime"`` when the bundle has an exported ``detector.onnx`` and onnxruntime
    imports, else ``"torch"`` when torch imports. The caller logs the result once.

    Args:
        name: ``"auto"`` or a key of :data:`BACKENDS`.
        bundle: a loaded bundle or a bundle directory (read without hashing its files).

    Returns:
        A key of :data:`BACKENDS`.

    Raises:
        ConfigError: an unknown name.
        MissingDependencyError: ``"auto"`` and neither backend can run.
    """
    if name != "auto" and name not in BACKENDS:
        msg = f"unknown backend {name!r}: choose one of {_CHOICES}"
        raise ConfigError(msg)
    if name != "auto":
        return name
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle, verify=False)
    if has_onnx(bundle) and _importable("onnxruntime"):
        return "onnxruntime"
    if _importable("torch"):
        return "torch"
    onnx_state = "has detector.onnx" if has_onnx(bundle) else f"has no detector.onnx (run `protoinspect export {bundle.path}`)"
    msg = (
        f"no backend can run bundle {bundle.path} (it {onnx_state}): install onnxruntime "
        "(pip install 'protoinspect[onnx]') or torch (pip install 'protoinspect[torch]')"
    )
    raise MissingDependencyError(msg)


def create_backend(name: str, bundle: Bundle | str | os.PathLike[str], **kwargs: Any) -> Backend:
    """Create a backend by name (``"auto"`` is resolved first; read the choice from ``backend.name``).

    Args:
        name: ``"auto"`` or a key of :data:`BACKENDS`.
        bundle: a loaded bundle or a bundle directory (loaded and verified once).
        **kwargs: the backend's keyword options (``device`` for all; see each backend class).

    Returns:
        The backend, ready to ``run``.

    Raises:
        ConfigError: an unknown name, or an option the chosen backend does not take.
        MissingDependencyError, BundleError, BackendError: from the backend's constructor.
    """
    if name == "auto" and not isinstance(bundle, Bundle):
        bundle = as_bundle(bundle)  # load and verify once, for resolving and for the backend
    resolved = resolve_backend_name(name, bundle)
    return _construct(BACKENDS[resolved], resolved, bundle, kwargs)


def create_classifier_backend(name: str, bundle: Bundle | str | os.PathLike[str], **kwargs: Any) -> ClassifierBackendBase:
    """Create the runtime of the bundle's defect classifier by backend name (no ``"auto"``: name the detector's).

    Args:
        name: a key of :data:`CLASSIFIER_BACKENDS` (``"onnxruntime"``: ``classifier.onnx``; ``"torch"``: the
            weights; ``"tensorrt"``: the classifier engine ``export/build_engine.py`` builds).
        bundle: a loaded bundle or a bundle directory (loaded and verified once).
        **kwargs: the runtime's keyword options (``device`` for all).

    Raises:
        ConfigError: an unknown name or an option the runtime does not take.
        MissingDependencyError, BundleError, BackendError: from the runtime's constructor.
    """
    if name not in CLASSIFIER_BACKENDS:
        raise ConfigError(f"unknown classifier backend {name!r}: choose one of {', '.join(CLASSIFIER_BACKENDS)}")
    return _construct(CLASSIFIER_BACKENDS[name], name, as_bundle(bundle), kwargs)


def _construct(target: str, name: str, bundle: Bundle | str | os.PathLike[str], kwargs: dict[str, Any]) -> Any:
    """Import ``module:Class`` and call it with the bundle and ``kwargs`` (unknown options: ConfigError)."""
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    try:
        inspect.signature(cls).bind(bundle, **kwargs)
    except TypeError:
        params = [p for p in inspect.signature(cls).parameters.values() if p.kind is p.KEYWORD_ONLY]
        unknown = sorted(set(kwargs) - {p.name for p in params})
        msg = f"backend {name!r} does not take option(s) {unknown}; it takes: {', '.join(p.name for p in params)}"
        raise ConfigError(msg) from None
    return cls(bundle, **kwargs)
