"""The Triton client backend: :class:`TritonInspector` sends frames to the ``inspector`` model of a Triton server.

``Inspector.from_bundle(BUNDLE, backend="triton", url="localhost:8001", protocol="grpc")`` returns a
:class:`TritonInspector` (a class of its own, not an :class:`~protoinspect.sdk.inspector.Inspector`) with the
Inspector's public surface: ``inspect`` (and calling it), ``inspect_batch``, ``warmup``, ``describe``,
``close``, ``config``, ``bundle`` and the context manager; so :class:`~protoinspect.sdk.live_stream.LiveInspector`
drives it like a local one (with ``workers=N`` for N requests in flight).

The local bundle is the source of truth for what the server must run. On connect: server live and ready,
model (version) ready, and the served model's ``parameters.bundle_id`` (written by ``protoinspect
export-triton``) equal to the local bundle's id; every answer is checked again (the model version that
answered, the bundle id in ``RESULT_INFO``). A mismatch is a :class:`~protoinspect.sdk.errors.BundleError`
naming both ids and the fix. Server down, timeouts, model not ready: :class:`~protoinspect.sdk.errors.ServerError`
(see :mod:`protoinspect.sdk.triton_client`). Nothing ever falls back to local inference: the client loads no
graph and needs no ONNX Runtime.

Frames are validated locally as the Inspector does (:func:`~protoinspect.sdk.preprocess.validate_frame`:
uint8, gray or 3 channels, non-empty) and sent as one contiguous copy. Colour order: frames are in this
client's ``config.color_order``; when the server's inspector expects the other order (its ``inspector_config``
parameter) the channels are swapped before sending. The settings that decide a result (thresholds, masker,
classification, ...) are the server's: a client config that sets one of them to a value other than the
server's is refused with a ConfigError (re-export with that config instead).
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType, TracebackType
from typing import Any

import numpy as np
from protoinspect.sdk import triton_tensors
from protoinspect.sdk.bundle import Bundle, load_bundle
from protoinspect.sdk.bundle_signing import load_signed_bundle
from protoinspect.sdk.config import InspectorConfig
from protoinspect.sdk.errors import BundleError, ConfigError, InputError, ProtoInspectError, ServerError
from protoinspect.sdk.preprocess import validate_frame
from protoinspect.sdk.result import InspectionResult
from protoinspect.sdk.triton_client import DEFAULT_URLS, PROTOCOLS, TritonConnection

#: InspectorConfig fields the server's inspector decides (a client cannot change them per request)
SERVER_FIELDS: tuple[str, ...] = (
    "masker", "roi_xyxy", "sam_checkpoint", "sam_model_type", "sam_box_xyxy", "sam_points", "mask_reuse_frames",
    "image_threshold", "pixel_threshold", "min_defect_area_px", "classify", "reject_outliers", "mask_every_frame")
DEFAULT_TIMEOUT_S = 30.0


def _params(model_config: Mapping[str, Any]) -> dict[str, str]:
    raw = model_config.get("parameters") or {}
    return {str(k): str(v.get("string_value", "")) if isinstance(v, Mapping) else str(v) for k, v in raw.items()}


def _specific_versions(model_config: Mapping[str, Any]) -> list[str]:
    policy = model_config.get("version_policy") or {}
    specific = policy.get("specific") if isinstance(policy, Mapping) else None
    versions = specific.get("versions", []) if isinstance(specific, Mapping) else []
    return [str(v) for v in versions]


def _version_arg(model_version: Any) -> str:
    if model_version is None or model_version == "":
        return ""
    if isinstance(model_version, bool) or not str(model_version).isdigit() or int(model_version) < 1:
        raise ConfigError(f"model_version must be an integer >= 1 (or '' for the server's choice), got {model_version!r}")
    return str(int(model_version))


def client_config(client: InspectorConfig | None, server: InspectorConfig) -> InspectorConfig:
    """The TritonInspector's config: the server's result settings with the client's frame and stream settings.

    Raises:
        ConfigError: the client sets a :data:`SERVER_FIELDS` value (other than its default) the server does not run.
    """
    if client is None:
        client = InspectorConfig()
    defaults = InspectorConfig()
    clashes = [f"{f}: client {getattr(client, f)!r}, server {getattr(server, f)!r}" for f in SERVER_FIELDS
               if getattr(client, f) != getattr(defaults, f) and getattr(client, f) != getattr(server, f)]
    if clashes:
        raise ConfigError("the server's inspector model runs other settings than this config asks for ("
                          + "; ".join(clashes) + "): export the bundle with this config (`protoinspect export-triton`, "
                          "export_triton_repository(..., inspector_config=...)) and reload the server, or leave these "
                          "settings out of the client's config")
    return replace(server, color_order=client.color_order, latency_budget_ms=client.latency_budget_ms,
                   frame_map=client.frame_map, trusted_keys=client.trusted_keys, drop_policy=client.drop_policy,
                   queue_size=client.queue_size, threads=client.threads)


class TritonInspector:
    """Inspects frames on a Triton Inference Server's ``inspector`` model; results as an in-process Inspector's.

    Build it with :meth:`from_bundle` (or ``Inspector.from_bundle(..., backend="triton")``). Thread-safe: calls
    from several threads run as concurrent requests (one tritonclient client per thread). ``frame_index`` of
    the results counts this client's frames (the server's own counter is replaced); ``timings_ms`` holds the
    server's stage timings plus ``"round_trip"`` (ms, the request as seen by the client, shared by a batch).
    """

    def __init__(self, bundle: Bundle, connection: TritonConnection, config: InspectorConfig, *,
                 server_config: InspectorConfig, model_version: str, max_batch_size: int) -> None:
        """Wrap an open, checked connection (see :meth:`from_bundle`, which does the checks)."""
        self.bundle = bundle
        self.connection = connection
        self.config = config
        self.server_config = server_config
        self.model_version = model_version
        self.max_batch_size = max(1, int(max_batch_size))
        self._swap = config.color_order != server_config.color_order
        self._lock = threading.Lock()
        self._frame_index = 0
        self._closed = False

    @classmethod
    def from_bundle(cls, path: str | os.PathLike[str], *, url: str | None = None, protocol: str = "grpc",
                    model: str = "inspector", model_version: int | str = "", timeout_s: float = DEFAULT_TIMEOUT_S,
                    config: InspectorConfig | None = None) -> TritonInspector:
        """Load the local bundle, connect, and check that the server serves exactly that bundle.

        Args:
            path: the bundle directory (``config.trusted_keys`` set: its signature is checked as in process).
            url: ``host:port`` without a scheme; None: ``localhost:8001`` (gRPC) / ``localhost:8000`` (HTTP).
            protocol: ``"grpc"`` (``tritonclient.grpc``) or ``"http"`` (``tritonclient.http``).
            model: the model name in the repository (``export-triton`` writes ``"inspector"``).
            model_version: the version to use (an integer; ``protoinspect_repository.json`` maps versions to
                bundle ids); ``""``: the one the server serves (pinned at connect when the config names one).
            timeout_s: seconds each call may take (connect checks and every inference request).
            config: frame and stream settings (``color_order``, ``drop_policy``, ``queue_size``,
                ``latency_budget_ms``, ``frame_map``, ``trusted_keys``); the result settings are the server's.

        Raises:
            ConfigError: an unknown protocol, a bad url / version / timeout, or result settings the server does not run.
            MissingDependencyError: tritonclient is not installed (``pip install 'protoinspect[serving]'``).
            BundleError: the local bundle is missing or corrupt, or the server serves another bundle or version.
            ServerError: no server at ``url``, a timeout, the server or the model not ready, or not an inspector model.
        """
        if config is not None and not isinstance(config, InspectorConfig):
            raise ConfigError(f"config must be an InspectorConfig, got {type(config).__name__}")
        if protocol not in PROTOCOLS:
            raise ConfigError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < float("inf"):
            raise ConfigError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"model must be a model name such as 'inspector', got {model!r}")
        version = _version_arg(model_version)
        keys = config.trusted_keys if config is not None else ()
        bundle = load_signed_bundle(path, keys)[0] if keys else load_bundle(path)
        connection = TritonConnection(DEFAULT_URLS[protocol] if url is None else url, protocol, model, timeout_s)
        try:
            connection.check_ready(version)
            served = connection.model_config(version)
            server_config, pinned, max_batch = cls._check_served(bundle, connection, served, version)
            return cls(bundle, connection, client_config(config, server_config), server_config=server_config,
                       model_version=pinned, max_batch_size=max_batch)
        except BaseException:
            connection.close()
            raise

    @staticmethod
    def _check_served(bundle: Bundle, connection: TritonConnection, served: Mapping[str, Any],
                      version: str) -> tuple[InspectorConfig, str, int]:
        """(server's InspectorConfig, version to pin, max batch size) of the served model, or a typed error."""
        params = _params(served)
        where = f"the Triton server at {connection.url}"
        local = bundle.manifest.bundle_id
        if "bundle_id" not in params or "inspector_config" not in params:
            raise ServerError(f"model '{connection.model}' on {where} is not a ProtoInspect inspector model (its "
                              "config has no bundle_id / inspector_config parameters): serve a repository written by "
                              "`protoinspect export-triton BUNDLE --repo DIR`, or pass model= the inspector's name")
        versions = _specific_versions(served)
        if params["bundle_id"] != local:
            raise BundleError(
                f"{where} serves model '{connection.model}' (version {version or ','.join(versions) or '?'}) with "
                f"bundle {params['bundle_id']}, but the local bundle {bundle.path} is {local}: export it with "
                f"`protoinspect export-triton {bundle.path} --repo DIR` (--overwrite to replace the old one) and "
                "reload the model on the server (restart it or load_model), or use the bundle the server runs")
        try:
            server_config = InspectorConfig.from_dict(json.loads(params["inspector_config"]))
        except (ValueError, ProtoInspectError) as exc:
            raise ServerError(f"model '{connection.model}' on {where} has an unreadable inspector_config parameter "
                              f"({exc}): re-export it with this ProtoInspect version") from exc
        pinned = version or (versions[0] if len(versions) == 1 else "")
        try:
            max_batch = int(served.get("max_batch_size", 1) or 1)
        except (TypeError, ValueError):
            max_batch = 1
        return server_config, pinned, max_batch

    # ------------------------------------------------------------------------------------ frames

    def inspect(self, frame: np.ndarray) -> InspectionResult:
        """Inspect one frame on the server (same arguments, result and InputError as ``Inspector.inspect``).

        Raises:
            InputError: the frame is invalid (checked locally; nothing is sent) or the server refused it.
            ServerError: server down, timeout, model not ready, an unreadable answer; the inspector is closed.
            BundleError: the answer came from another model version or bundle than the one checked at connect.
        """
        return self._run([self._prepare(frame)])[0]

    __call__ = inspect

    def inspect_batch(self, frames: Sequence[np.ndarray]) -> list[InspectionResult]:
        """Inspect frames in order; all are validated before any is sent (see :meth:`inspect` for errors).

        Frames of one shape go as one request (up to the model's ``max_batch_size``), so the server runs them
        as a batch; frame indices are consecutive.
        """
        prepared = [self._prepare(f) for f in frames]
        with self._lock:
            self._check_open()
            first, self._frame_index = self._frame_index, self._frame_index + len(prepared)
        results: list[InspectionResult] = []
        start = 0
        while start < len(prepared):
            stop = start + 1
            while (stop < len(prepared) and stop - start < self.max_batch_size
                   and prepared[stop].shape == prepared[start].shape):
                stop += 1
            results += self._request(prepared[start:stop], first + start)
            start = stop
        return results

    def warmup(self, num_frames: int = 3) -> None:
        """Send ``num_frames`` mid-gray model-size frames (first-request set-up); not counted in ``frame_index``.

        Raises:
            ConfigError: ``num_frames`` is not an integer >= 0.
            ServerError / BundleError: as :meth:`inspect`.
        """
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 0:
            raise ConfigError(f"num_frames must be an integer >= 0, got {num_frames!r}")
        h, w = self.bundle.manifest.preprocess_spec.image_size
        for _ in range(num_frames):
            self._request([np.full((h, w, 3), 128, dtype=np.uint8)], 0)

    def _prepare(self, frame: np.ndarray) -> np.ndarray:
        """A validated H x W x C contiguous copy in the server's colour order."""
        frame = validate_frame(frame)
        if frame.ndim == 2:
            return np.ascontiguousarray(frame)[:, :, None]
        return np.ascontiguousarray(frame[:, :, ::-1] if self._swap else frame)

    def _run(self, prepared: list[np.ndarray]) -> list[InspectionResult]:
        with self._lock:
            self._check_open()
            first, self._frame_index = self._frame_index, self._frame_index + len(prepared)
        return self._request(prepared, first)

    def _request(self, frames: list[np.ndarray], first_index: int) -> list[InspectionResult]:
        self._check_open()
        batch = frames[0][None] if len(frames) == 1 else np.stack(frames)
        t0 = time.perf_counter()
        outputs, answered = self.connection.infer(batch, self.model_version)
        round_trip = (time.perf_counter() - t0) * 1e3
        c = self.connection
        if self.model_version and answered and answered != self.model_version:
            raise BundleError(f"the Triton server at {c.url} answered with model '{c.model}' version {answered}, "
                              f"not version {self.model_version} checked at connect (bundle "
                              f"{self.bundle.manifest.bundle_id}): the server's repository changed; reconnect "
                              "(Inspector.from_bundle) after checking which bundle it serves")
        try:
            results = triton_tensors.tensors_to_results(outputs)
        except InputError as exc:
            raise ServerError(f"the answer of model '{c.model}' on the Triton server at {c.url} cannot be read "
                              f"({exc}): serve a repository exported by this ProtoInspect version") from exc
        if len(results) != len(frames):
            raise ServerError(f"the Triton server at {c.url} answered {len(results)} results for {len(frames)} frames")
        return [self._finish(r, first_index + i, round_trip) for i, r in enumerate(results)]

    def _finish(self, result: InspectionResult, index: int, round_trip: float) -> InspectionResult:
        local = self.bundle.manifest.bundle_id
        if result.bundle_id != local:
            raise BundleError(f"the Triton server at {self.connection.url} answered with bundle {result.bundle_id}, "
                              f"but the local bundle is {local}: export it with `protoinspect export-triton "
                              f"{self.bundle.path} --repo DIR` and reload the server's model")
        budget = self.config.latency_budget_ms
        timings = MappingProxyType({**result.timings_ms, "round_trip": round_trip})
        out = replace(result, frame_index=index, timings_ms=timings,
                      over_budget=result.over_budget or (budget is not None and round_trip > budget))
        if self.config.frame_map:
            out.anomaly_map  # noqa: B018 - made now, as an in-process Inspector with frame_map=True does
        return out

    # ------------------------------------------------------------------------------------ lifecycle

    def _check_open(self) -> None:
        if self._closed:
            raise ServerError("TritonInspector is closed: create a new one with "
                              "Inspector.from_bundle(..., backend='triton')")

    def describe(self) -> dict[str, Any]:
        """Versions, the server (url, protocol, model, version), bundle id, thresholds and config, JSON-safe."""
        import protoinspect.sdk

        manifest = self.bundle.manifest
        server = self.server_config
        c = self.connection
        return {
            "versions": {"protoinspect": protoinspect.sdk.__version__, "python": platform.python_version(),
                         "numpy": np.__version__, "tritonclient": _tritonclient_version()},
            "backend": {"name": "triton", "requested": "triton", "url": c.url, "protocol": c.protocol,
                        "model": c.model, "model_version": self.model_version, "timeout_s": c.timeout_s,
                        "max_batch_size": self.max_batch_size, "server_color_order": server.color_order},
            "bundle_id": manifest.bundle_id,
            "bundle_path": str(self.bundle.path),
            "input_size": list(manifest.preprocess_spec.image_size),
            "thresholds": {"image": _finite(server.image_threshold, manifest.thresholds["image"]),
                           "pixel": _finite(server.pixel_threshold, manifest.thresholds["pixel"]),
                           "bundle_image": float(manifest.thresholds["image"]),
                           "bundle_pixel": float(manifest.thresholds["pixel"])},
            "config": self.config.to_dict(),
            "closed": self._closed,
        }

    def close(self) -> None:
        """Close the connection (every thread's client); idempotent. Later calls raise ServerError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.connection.close()

    def __enter__(self) -> TritonInspector:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (f"TritonInspector(bundle={self.bundle.manifest.bundle_id!r}, url={self.connection.url!r}, "
                f"protocol={self.connection.protocol!r}, model={self.connection.model!r}, {state})")


REMOTE_ARGS: tuple[str, ...] = ("url", "protocol", "model", "model_version", "timeout_s")


def from_bundle_args(path: str | os.PathLike[str], device: str | None, config: InspectorConfig | None,
                     stages: Sequence[object], remote: Mapping[str, Any]) -> TritonInspector:
    """``Inspector.from_bundle(path, backend="triton", ...)``: check the arguments that mean nothing remotely.

    Raises:
        ConfigError: a device or stage given (the server's instance group and exported config decide them), or
            an argument other than :data:`REMOTE_ARGS`; then as :meth:`TritonInspector.from_bundle`.
    """
    if device is not None:
        raise ConfigError(f"device={device!r} does not apply to backend='triton': the server's instance group decides "
                          "(`protoinspect export-triton --kind cpu|gpu`)")
    if any(stage is not None for stage in stages):
        raise ConfigError("masker / regions / classifier / rejector run on the server with backend='triton': export the "
                          "bundle with the settings you need (`protoinspect export-triton`) instead of passing stages")
    unknown = sorted(set(remote) - set(REMOTE_ARGS))
    if unknown:
        raise ConfigError(f"unknown arguments {unknown} for backend='triton' (accepted: {', '.join(REMOTE_ARGS)})")
    return TritonInspector.from_bundle(path, config=config, **remote)


def _finite(value: float | None, default: float) -> float | str:
    v = float(default if value is None else value)
    return v if v not in (float("inf"), float("-inf")) else ("inf" if v > 0 else "-inf")


def _tritonclient_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("tritonclient")
    except Exception:  # noqa: BLE001 - a version string is informative only
        return None


__all__ = ["DEFAULT_TIMEOUT_S", "REMOTE_ARGS", "SERVER_FIELDS", "TritonInspector", "client_config", "from_bundle_args"]
