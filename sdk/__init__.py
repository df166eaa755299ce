"""ProtoInspect runtime SDK: the Inspector, its config and results, pre-processing, model bundles and errors."""

from __future__ import annotations

from sdk.config import InspectorConfig
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
from sdk.inspector import Inspector
from sdk.preprocess import PreprocessSpec
from sdk.result import Defect, InspectionResult, Verdict

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "BundleError",
    "ConfigError",
    "DatasetError",
    "Defect",
    "ExportError",
    "InputError",
    "InspectionResult",
    "Inspector",
    "InspectorConfig",
    "MissingDependencyError",
    "PreprocessSpec",
    "ProtoInspectError",
    "Verdict",
    "__version__",
]
