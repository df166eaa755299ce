"""ProtoInspect runtime SDK: pre-processing, model bundles, models and errors."""

from __future__ import annotations

from sdk.errors import (
    BackendError,
    BundleError,
    ConfigError,
    DatasetError,
    ExportError,
    InputError,
    MissingDependencyError,
    ProtoInspectError,
)
from sdk.preprocess import PreprocessSpec

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "BundleError",
    "ConfigError",
    "DatasetError",
    "ExportError",
    "InputError",
    "MissingDependencyError",
    "PreprocessSpec",
    "ProtoInspectError",
    "__version__",
]
