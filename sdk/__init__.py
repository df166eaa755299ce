"""ProtoInspect runtime SDK: pre-processing, model bundles, models and errors."""

from __future__ import annotations

from sdk.errors import (
    BundleError,
    ConfigError,
    DatasetError,
    InputError,
    MissingDependencyError,
    ProtoInspectError,
)
from sdk.preprocess import PreprocessSpec

__version__ = "0.1.0"

__all__ = [
    "BundleError",
    "ConfigError",
    "DatasetError",
    "InputError",
    "MissingDependencyError",
    "PreprocessSpec",
    "ProtoInspectError",
    "__version__",
]
