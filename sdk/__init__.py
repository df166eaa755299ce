"""ProtoInspect runtime SDK: the Inspector, its config and results, pre-processing, model bundles and errors."""

from __future__ import annotations

from protoinspect.sdk.config import InspectorConfig
from protoinspect.sdk.errors import (
    BackendError,
    BundleError,
    ConfigError,
    DatasetError,
    ExportError,
    InputError,
    MissingDependencyError,
    ProtoInspectError,
    ServerError,
)
from protoinspect.sdk.frame_queue import FrameQueue, QueueFullError, StreamClosedError, StreamCounts, StreamItem
from protoinspect.sdk.inspector import Inspector
from protoinspect.sdk.live_stream import LiveInspector
from protoinspect.sdk.preprocess import PreprocessSpec
from protoinspect.sdk.remote_inspector import TritonInspector
from protoinspect.sdk.result import Defect, InspectionResult, Verdict

__version__ = "0.2.0"

__all__ = [
    "BackendError",
    "BundleError",
    "ConfigError",
    "DatasetError",
    "Defect",
    "ExportError",
    "FrameQueue",
    "InputError",
    "InspectionResult",
    "Inspector",
    "InspectorConfig",
    "LiveInspector",
    "MissingDependencyError",
    "PreprocessSpec",
    "ProtoInspectError",
    "QueueFullError",
    "ServerError",
    "StreamClosedError",
    "StreamCounts",
    "StreamItem",
    "TritonInspector",
    "Verdict",
    "__version__",
]
