"""The wire side of the Triton client backend: a tritonclient connection (gRPC or HTTP) and typed errors.

:class:`TritonConnection` talks to one model of one Triton Inference Server through ``tritonclient.grpc`` or
``tritonclient.http`` (imported lazily: ``pip install 'protoinspect[serving]'``). Every failure of the
library is turned into a ProtoInspect error by :func:`translate_error`:

======================================================== =====================================================
tritonclient / socket failure                            ProtoInspect error
======================================================== =====================================================
gRPC ``UNAVAILABLE`` (connect / resolve failed), HTTP     :class:`~protoinspect.sdk.errors.ServerError` "no Triton
``ConnectionRefusedError`` / ``gaierror`` / ``OSError``   server at URL": how to start one and which port
gRPC ``DEADLINE_EXCEEDED`` (``client_timeout``), HTTP     ``ServerError`` naming ``timeout_s`` and how to raise it
``TimeoutError`` (``network_timeout``)
unknown model, no available / ready version (any code)    ``ServerError`` "model ... is not ready or not served"
``INVALID_ARGUMENT`` / HTTP 400, or the inspector         :class:`~protoinspect.sdk.errors.InputError` (the
model's ``InputError`` answer (wrong dtype, bad shape)    server refused the frames)
anything else from the server                             ``ServerError`` with the server's status and message
======================================================== =====================================================

Thread safety: the HTTP client of tritonclient must not be shared between threads, so each thread that calls
gets its own client (gRPC likewise, for symmetry); :meth:`TritonConnection.close` closes all of them.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np
from protoinspect.sdk import triton_tensors
from protoinspect.sdk._imports import require
from protoinspect.sdk.errors import ConfigError, InputError, ProtoInspectError, ServerError

logger = logging.getLogger(__name__)

PROTOCOLS: tuple[str, ...] = ("grpc", "http")
#: Triton's default ports: gRPC 8001, HTTP 8000
DEFAULT_URLS: dict[str, str] = {"grpc": "localhost:8001", "http": "localhost:8000"}
_MODEL_PROBLEMS = ("unknown model", "no available version", "not ready", "not found", "is not available",
                   "failed to load", "unavailable model")


def protocol_module(protocol: str) -> ModuleType:
    """``tritonclient.grpc`` or ``tritonclient.http`` (MissingDependencyError with the install hint if absent).

    Raises:
        ConfigError: ``protocol`` is not ``"grpc"`` or ``"http"``.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
    return require(f"tritonclient.{protocol}")


def server_exception_type() -> type[BaseException]:
    """tritonclient's ``InferenceServerException``."""
    return require("tritonclient.utils").InferenceServerException  # type: ignore[no-any-return]


def translate_error(exc: BaseException, *, url: str, protocol: str, model: str, version: str, timeout_s: float,
                    what: str) -> ProtoInspectError | None:
    """The typed error for a tritonclient / socket failure during ``what``; None: not a server failure.

    See the module table for the mapping.
    """
    if isinstance(exc, ProtoInspectError):
        return exc
    where = f"Triton server at {url} ({protocol})"
    named = f"model '{model}'" + (f" version {version}" if version else "")
    down = (f"no {where}: {{}}. Start it with `tritonserver --model-repository DIR` (DIR written by "
            "`protoinspect export-triton BUNDLE --repo DIR`) or PyTriton, and check url= (Triton listens for gRPC "
            "on port 8001 and HTTP on 8000 by default); nothing was inspected, and there is no local fallback")
    late = (f"the {where} did not answer {what} within timeout_s={timeout_s:g} s: raise it with "
            "Inspector.from_bundle(..., backend='triton', timeout_s=...) or give the server more model instances "
            "(export-triton --instances) or more servers for this load; nothing was inspected locally")
    unready = (f"{named} is not ready or not served by the {where}: {{}}. Check the server log and "
               f"`curl HOST:8000/v2/models/{model}/ready`; the repository must hold it (`protoinspect export-triton "
               "BUNDLE --repo DIR`) and the server must have loaded it (restart it, or load_model with "
               "--model-control-mode=explicit)")
    if isinstance(exc, server_exception_type()):
        status = str(exc.status() or "")  # type: ignore[attr-defined]
        msg = str(exc.message() or exc)  # type: ignore[attr-defined]
        low = msg.lower()
        if "DEADLINE_EXCEEDED" in status or "deadline exceeded" in low:
            return ServerError(late)
        if any(p in low for p in _MODEL_PROBLEMS) and "inspector:" not in low:
            return ServerError(unready.format(f"[{status}] {msg}" if status else msg))
        if "UNAVAILABLE" in status or "503" == status:
            return ServerError(down.format(f"[{status}] {msg}"))
        if "INVALID_ARG" in status or status == "400" or "inspector: inputerror" in low:
            return InputError(f"the {where} refused the frames sent to {named}: [{status}] {msg}")
        return ServerError(f"the {where} failed during {what} on {named}: [{status}] {msg}")
    if isinstance(exc, (TimeoutError, socket.timeout)) or "timeout" in type(exc).__name__.lower():
        return ServerError(late)
    if isinstance(exc, OSError):  # ConnectionRefusedError, ConnectionResetError, socket.gaierror, ...
        return ServerError(down.format(f"{type(exc).__name__}: {exc}"))
    return None


def _version_text(version: Any) -> str:
    return "" if version is None else str(version)


class TritonConnection:
    """One model on one Triton server, through tritonclient (one client per calling thread).

    Args:
        url: ``host:port`` without a scheme.
        protocol: ``"grpc"`` or ``"http"``.
        model: the model name in the server's repository (``"inspector"``).
        timeout_s: seconds any call may take (gRPC ``client_timeout``; HTTP connection and network timeouts).

    Raises:
        ConfigError: an unknown protocol or a url with a scheme.
        MissingDependencyError: tritonclient is not installed.
    """

    def __init__(self, url: str, protocol: str, model: str, timeout_s: float) -> None:
        if not isinstance(url, str) or not url.strip() or "://" in url:
            raise ConfigError(f"url must be 'host:port' without a scheme (e.g. {DEFAULT_URLS.get(protocol, 'localhost:8001')!r}), "
                              f"got {url!r}")
        self.module = protocol_module(protocol)
        self.url, self.protocol, self.model, self.timeout_s = url, protocol, model, float(timeout_s)
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    def client(self) -> Any:
        """This thread's tritonclient ``InferenceServerClient`` (created on first use)."""
        client = getattr(self._local, "client", None)
        if client is None:
            with self._lock:
                if self._closed:
                    raise ServerError(f"the connection to {self.url} is closed: create a new inspector")
                if self.protocol == "http":
                    client = self.module.InferenceServerClient(self.url, connection_timeout=self.timeout_s,
                                                               network_timeout=self.timeout_s)
                else:
                    client = self.module.InferenceServerClient(self.url)
                self._clients.append(client)
            self._local.client = client
        return client

    def call(self, what: str, method: str, *args: Any, version: str = "", **kwargs: Any) -> Any:
        """``client.method(*args, **kwargs)`` with the timeout, failures translated (see :func:`translate_error`)."""
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout_s
        try:
            return getattr(self.client(), method)(*args, **kwargs)
        except Exception as exc:
            typed = translate_error(exc, url=self.url, protocol=self.protocol, model=self.model, version=version,
                                    timeout_s=self.timeout_s, what=what)
            if typed is None or typed is exc:
                raise
            raise typed from exc

    def check_ready(self, version: str) -> None:
        """Server live, server ready, model (version) ready; else ServerError naming which and the fix."""
        where = f"Triton server at {self.url} ({self.protocol})"
        if not self.call("the liveness check", "is_server_live"):
            raise ServerError(f"the {where} is not live: check its log, restart it")
        if not self.call("the readiness check", "is_server_ready"):
            raise ServerError(f"the {where} is not ready (still loading models, or shutting down): wait and retry, "
                              "or check its log")
        if not self.call("the model readiness check", "is_model_ready", self.model, version, version=version):
            named = f"model '{self.model}'" + (f" version {version}" if version else "")
            raise ServerError(f"{named} is not ready on the {where}: the repository must hold it (`protoinspect "
                              "export-triton BUNDLE --repo DIR`) and the server must have loaded it (restart it, or "
                              "load_model with --model-control-mode=explicit); see the server log for load errors")

    def model_config(self, version: str) -> dict[str, Any]:
        """The served model's configuration as JSON (``parameters``, ``max_batch_size``, ``version_policy``...)."""
        if self.protocol == "grpc":
            answer = self.call("the model configuration request", "get_model_config", self.model, version,
                               as_json=True, version=version)
            answer = answer.get("config", answer) if isinstance(answer, Mapping) else answer
        else:
            answer = self.call("the model configuration request", "get_model_config", self.model, version,
                               version=version)
        if not isinstance(answer, Mapping):
            raise ServerError(f"the Triton server at {self.url} answered the configuration of model '{self.model}' "
                              f"with {type(answer).__name__}, not a JSON object")
        return dict(answer)

    def infer(self, batch: np.ndarray, version: str) -> tuple[dict[str, np.ndarray], str]:
        """Send one ``FRAME`` batch (N x H x W x C uint8); return the outputs and the version that answered."""
        m = self.module
        frames = m.InferInput(triton_tensors.INPUT_FRAME, list(batch.shape), "UINT8")
        if self.protocol == "http":
            frames.set_data_from_numpy(batch, binary_data=True)
            wanted = [m.InferRequestedOutput(name, binary_data=True) for name in triton_tensors.OUTPUTS]
        else:
            frames.set_data_from_numpy(batch)
            wanted = [m.InferRequestedOutput(name) for name in triton_tensors.OUTPUTS]
        result = self.call("the inference request", "infer", self.model, [frames], model_version=version,
                           outputs=wanted, version=version)
        outputs: dict[str, np.ndarray] = {}
        for name in triton_tensors.OUTPUTS:
            array = result.as_numpy(name)
            if array is not None:
                outputs[name] = array
        response = result.get_response()
        served = response.get("model_version") if isinstance(response, Mapping) else getattr(response, "model_version", None)
        return outputs, _version_text(served)

    def close(self) -> None:
        """Close every thread's client; idempotent (a client that fails to close is logged, not raised)."""
        with self._lock:
            clients, self._clients, self._closed = self._clients, [], True
        for client in clients:
            try:
                client.close()
            except Exception as exc:  # noqa: BLE001 - closing must not mask the caller's own error
                logger.warning("closing a tritonclient client of %s failed: %s", self.url, exc)


__all__ = ["DEFAULT_URLS", "PROTOCOLS", "TritonConnection", "protocol_module", "server_exception_type",
           "translate_error"]
