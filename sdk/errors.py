"""Typed errors raised by ProtoInspect: every user-facing failure is one of these."""

from __future__ import annotations


class ProtoInspectError(Exception):
    """Base class of every error ProtoInspect raises on purpose."""


class InputError(ProtoInspectError, ValueError):
    """A frame or argument is invalid (wrong shape, dtype, empty, ...)."""


class DatasetError(ProtoInspectError, ValueError):
    """A dataset folder, image or mask is missing, unreadable or inconsistent; names the file."""


class BundleError(ProtoInspectError):
    """A model bundle is missing, corrupt, tampered with or from an incompatible version."""


class BundleSignatureError(BundleError):
    """A bundle's signature check failed: unsigned, signed by an untrusted key, changed after signing, a
    corrupt signature file, or an unreadable / wrong key file; the message names which."""


class ConfigError(ProtoInspectError, ValueError):
    """A configuration value is invalid."""


class MissingDependencyError(ProtoInspectError, ImportError):
    """An optional dependency is not installed; the message says what to install."""


class ExportError(ProtoInspectError):
    """Exporting a model failed a check: ONNX/torch parity above tolerance or a TensorRT-incompatible graph."""


class BackendError(ProtoInspectError, RuntimeError):
    """A runtime backend failed while executing a graph, or was used after ``close()``."""


class ServerError(BackendError):
    """A remote inference server (Triton) is unreachable, timed out, does not serve the model, is not ready or
    failed; the message names the server URL, what happened and the fix. There is never a fallback to local
    inference after it."""


class MissingPluginError(BackendError):
    """A TensorRT engine needs a plugin that is not registered in this process; the message names the plugin,
    how to register it (``trt_runtime.add_plugin_registrar``) and the rebuild without plugins."""


def report_error(exc: BaseException) -> int:
    """Print a typed ProtoInspect error for a command-line user (``error: ...`` on stderr); return exit code 2."""
    import sys

    print(f"error: {exc}", file=sys.stderr)
    return 2
