"""ONNX Runtime backend: runs the bundle's exported ``detector.onnx`` on CPU, CUDA or TensorRT.

The requested execution provider must be available and must become the session's first provider;
otherwise construction raises (onnxruntime's own fallback to CPU is never accepted).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from protoinspect.sdk._imports import require
from protoinspect.sdk.backends.base import (
    DETECTOR_FEATURES,
    DETECTOR_INPUT,
    DETECTOR_OUTPUTS,
    BackendBase,
    GraphOutputs,
    as_bundle,
    onnx_file_name,
    parse_device,
)
from protoinspect.sdk.bundle import Bundle
from protoinspect.sdk.errors import BackendError, BundleError, ConfigError, MissingDependencyError

logger = logging.getLogger(__name__)

#: device kind -> onnxruntime execution provider
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
#: Folder inside the bundle that holds TensorRT engines built by onnxruntime (one sub-folder per
#: ONNX sha256 and precision, so a re-exported graph never picks up a stale engine).
TRT_CACHE_DIR = "trt_engine_cache"
GPU_INSTALL_HINT = (
    "pip uninstall -y onnxruntime && pip install onnxruntime-gpu "
    "(the CUDA 12 build; onnxruntime and onnxruntime-gpu must not be installed together)"
)

ProviderSpec = str | tuple[str, dict[str, Any]]


class OnnxRuntimeBackend(BackendBase):
    """Executes ``detector.onnx`` with onnxruntime.

    Example::

        with OnnxRuntimeBackend("bundles/tile", device="cuda:0") as backend:
            out = backend.run({"image": batch})  # N x H x W x 3 uint8 RGB
            out["anomaly_map"], out["score"]      # N x 1 x H x W float32, N float32
    """

    name = "onnxruntime"

    def __init__(
        self,
        bundle: Bundle | str | os.PathLike[str],
        *,
        device: str = "cpu",
        providers: Sequence[ProviderSpec] | None = None,
        intra_op_threads: int | None = None,
        fp16: bool = False,
    ) -> None:
        """Create an onnxruntime session for the bundle's exported graph.

        Args:
            bundle: a loaded :class:`~protoinspect.sdk.bundle.Bundle` or a bundle directory (then loaded and verified).
            device: ``"cpu"`` (CPUExecutionProvider), ``"cuda"`` / ``"cuda:N"`` (CUDAExecutionProvider
                on GPU N) or ``"tensorrt"`` / ``"tensorrt:N"`` (TensorrtExecutionProvider with
                CUDAExecutionProvider for nodes TensorRT does not take; engines are cached in
                ``BUNDLE/trt_engine_cache/``).
            providers: an explicit onnxruntime provider list (names or ``(name, options)`` pairs) that
                replaces the one derived from ``device``; ``device`` is then only reported. Its first
                entry must become the session's first provider.
            intra_op_threads: onnxruntime intra-op threads (None: onnxruntime's default, one per
                physical core).
            fp16: let TensorRT build fp16 engines (``device="tensorrt"`` only).

        Raises:
            MissingDependencyError: onnxruntime is not installed, or the requested provider is not in
                ``onnxruntime.get_available_providers()`` (``pip install onnxruntime-gpu``).
            BundleError: the bundle has no exported graph (run ``protoinspect export BUNDLE``), the
                graph does not match the detector contract, or the TensorRT cache cannot be created.
            ConfigError: an unknown device, bad thread count or ``fp16`` without TensorRT.
            BackendError: onnxruntime could not create the session, or silently chose another
                provider than the one requested.
        """
        ort = require("onnxruntime")
        bundle = as_bundle(bundle)
        kind, index = parse_device(device, tuple(PROVIDERS))
        if isinstance(intra_op_threads, bool) or not (
            intra_op_threads is None or (isinstance(intra_op_threads, int) and intra_op_threads >= 1)
        ):
            msg = f"intra_op_threads must be a positive integer or None, got {intra_op_threads!r}"
            raise ConfigError(msg)
        if fp16 and (kind != "tensorrt" or providers is not None):
            msg = f"fp16=True needs device='tensorrt' (got device={device!r}); the CPU and CUDA providers run the fp32 graph"
            raise ConfigError(msg)

        file_name = onnx_file_name(bundle)
        if file_name not in bundle.manifest.files:
            msg = (
                f"bundle {bundle.path} has no exported graph '{file_name}': run `protoinspect export {bundle.path}` "
                "to add it, or use the torch backend"
            )
            raise BundleError(msg)
        self._ort = ort
        self._file_name = file_name
        self._sha256 = str(bundle.manifest.files[file_name]["sha256"])
        self._fp16 = bool(fp16)
        self._engine_cache: Path | None = None

        if providers is not None:
            provider_list = _check_provider_list(providers)
        else:
            provider_list = self._device_providers(bundle, kind, index)
        check_available(ort, provider_list, device)
        if self._engine_cache is not None:
            try:
                self._engine_cache.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                msg = f"cannot create the TensorRT engine cache {self._engine_cache} (is the bundle read-only?): {exc}"
                raise BundleError(msg) from exc

        model = bundle.read_bytes(file_name)  # checks size and sha256 against the manifest
        options = ort.SessionOptions()
        if intra_op_threads is not None:
            options.intra_op_num_threads = intra_op_threads
        session, active = open_session(ort, model, options, provider_list, device=device,
                                       where=str(bundle.path / file_name))
        self._session = session
        self._providers = list(active)
        self._intra_op_threads = intra_op_threads
        inputs, outputs = _check_graph(session, bundle, file_name)
        self._init_base(bundle, device, inputs, outputs)
        self._output_list = list(outputs)
        gpu = providers is None and kind in ("cuda", "tensorrt")
        self._features_device: tuple[str, int] = ("cuda", index or 0) if gpu else ("cpu", 0)
        logger.debug("onnxruntime session for %s on %s (providers %s)", bundle.path / file_name, device, active)

    def _device_providers(self, bundle: Bundle, kind: str, index: int | None) -> list[tuple[str, dict[str, Any]]]:
        device_id = 0 if index is None else index
        if kind == "cpu":
            return [(PROVIDERS["cpu"], {})]
        if kind == "cuda":
            return [(PROVIDERS["cuda"], {"device_id": device_id})]
        precision = "fp16" if self._fp16 else "fp32"
        self._engine_cache = bundle.path / TRT_CACHE_DIR / f"{self._sha256[:16]}-{precision}"
        trt_options = {
            "device_id": device_id,
            "trt_fp16_enable": self._fp16,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(self._engine_cache),
        }
        return [(PROVIDERS["tensorrt"], trt_options), (PROVIDERS["cuda"], {"device_id": device_id})]

    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outputs = self._session.run(self._output_list, inputs)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            msg = f"onnxruntime failed to run {self._file_name} on {self.device}: {type(exc).__name__}: {exc}"
            raise BackendError(msg) from exc
        return dict(zip(self.output_names, outputs))

    def _run_lazy(self, inputs: dict[str, np.ndarray]) -> GraphOutputs:
        """One run through an IO binding: the map and score land in host memory, ``features`` stays where
        the session computed it (the GPU for ``cuda``/``tensorrt`` devices) until read."""
        try:
            binding = self._session.io_binding()
            for name, arr in inputs.items():
                binding.bind_cpu_input(name, arr)
            for name in self._output_list:
                if name == DETECTOR_FEATURES:
                    binding.bind_output(name, *self._features_device)
                else:
                    binding.bind_output(name, "cpu")
            self._session.run_with_iobinding(binding)
            values = dict(zip(self._output_list, binding.get_outputs()))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            msg = f"onnxruntime failed to run {self._file_name} on {self.device}: {type(exc).__name__}: {exc}"
            raise BackendError(msg) from exc
        return GraphOutputs(self.output_names, lambda name: values[name].numpy())

    def _release(self) -> None:
        self._session = None

    def describe(self) -> dict[str, Any]:
        """What runs where, JSON-safe.

        Returns:
            ``backend``, ``device``, ``provider`` (the active first provider), ``providers`` (all
            active, in priority order), ``onnxruntime``
            (version), ``model_file``, ``model_sha256``, ``bundle_id``, ``bundle_path``,
            ``input_names``, ``output_names``, ``image_size``, ``intra_op_threads``, ``fp16``,
            ``engine_cache`` (TensorRT only, else None) and ``closed``.
        """
        return {
            "backend": self.name,
            "device": self.device,
            "provider": self._providers[0],
            "providers": list(self._providers),
            "onnxruntime": self._ort.__version__,
            "model_file": self._file_name,
            "model_sha256": self._sha256,
            "bundle_id": self.bundle.manifest.bundle_id,
            "bundle_path": str(self.bundle.path),
            "input_names": list(self.input_names),
            "output_names": list(self.output_names),
            "image_size": list(self.image_size),
            "intra_op_threads": self._intra_op_threads,
            "fp16": self._fp16,
            "engine_cache": None if self._engine_cache is None else str(self._engine_cache),
            "closed": self.closed,
        }



def check_available(ort: Any, provider_list: list[tuple[str, dict[str, Any]]], device: str) -> None:
    """Raise :class:`MissingDependencyError` (naming the install) for a provider this onnxruntime lacks."""
    available = ort.get_available_providers()
    for provider, _ in provider_list:
        if provider not in available:
            raise _unavailable(provider, device, ort.__version__, available)


def open_session(ort: Any, model: bytes, options: Any, provider_list: list[tuple[str, dict[str, Any]]], *,
                 device: str, where: str) -> tuple[Any, list[str]]:
    """An onnxruntime session whose first provider is the requested one (never its silent CPU fallback).

    Returns:
        (session, active providers).

    Raises:
        BackendError: onnxruntime cannot create the session, or enabled another first provider.
    """
    try:
        session = ort.InferenceSession(model, options, providers=provider_list)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        msg = (f"onnxruntime {ort.__version__} cannot create a session for {where} with "
               f"{[p for p, _ in provider_list]}: {type(exc).__name__}: {exc}")
        raise BackendError(msg) from exc
    active = session.get_providers()
    requested = provider_list[0][0]
    if not active or active[0] != requested:
        msg = (
            f"onnxruntime did not enable {requested} for device {device!r} (active providers: {active}); "
            "it falls back silently when the provider's libraries (CUDA, cuDNN, TensorRT) cannot be loaded "
            "or no GPU is visible: see onnxruntime's warnings above, and check the CUDA/cuDNN/TensorRT "
            f"versions onnxruntime {ort.__version__} needs"
        )
        raise BackendError(msg)
    return session, list(active)


def _unavailable(provider: str, device: str, version: str, available: list[str]) -> MissingDependencyError:
    if provider in (PROVIDERS["cuda"], PROVIDERS["tensorrt"]):
        extra = " and TensorRT 10 (pip install tensorrt)" if provider == PROVIDERS["tensorrt"] else ""
        fix = f"{GPU_INSTALL_HINT}{extra}, or use device='cpu'"
    else:
        fix = "install the onnxruntime build that ships it, or choose another provider"
    msg = f"onnxruntime {version} has no {provider} for device {device!r} (available: {available}): {fix}"
    return MissingDependencyError(msg)


def _check_provider_list(providers: Sequence[ProviderSpec]) -> list[tuple[str, dict[str, Any]]]:
    if isinstance(providers, str) or not isinstance(providers, Sequence) or not providers:
        msg = f"providers must be a non-empty list of provider names or (name, options) pairs, got {providers!r}"
        raise ConfigError(msg)
    out = []
    for p in providers:
        if isinstance(p, str):
            out.append((p, {}))
        elif isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], dict):
            out.append((p[0], dict(p[1])))
        else:
            msg = f"providers entries must be a name or a (name, options dict) pair, got {p!r}"
            raise ConfigError(msg)
    return out


def _check_graph(session: Any, bundle: Bundle, file_name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The graph's I/O names, after checking them against the detector contract and the bundle's size."""
    h, w = bundle.manifest.preprocess_spec.image_size
    inputs = session.get_inputs()
    outputs = tuple(o.name for o in session.get_outputs())
    problems = []
    if [i.name for i in inputs] != [DETECTOR_INPUT]:
        problems.append(f"inputs are {[i.name for i in inputs]}, expected ['{DETECTOR_INPUT}']")
    else:
        image = inputs[0]
        if image.type != "tensor(uint8)" or list(image.shape[1:]) != [h, w, 3]:
            problems.append(f"input '{DETECTOR_INPUT}' is {image.type} {image.shape}, expected tensor(uint8) [N, {h}, {w}, 3]")
    if outputs not in (DETECTOR_OUTPUTS, (*DETECTOR_OUTPUTS, DETECTOR_FEATURES)):
        problems.append(f"outputs are {list(outputs)}, expected {list(DETECTOR_OUTPUTS)} (+ '{DETECTOR_FEATURES}')")
    if problems:
        msg = (
            f"{bundle.path / file_name} does not match the bundle's detector contract ({'; '.join(problems)}): "
            f"re-export it with `protoinspect export {bundle.path}`"
        )
        raise BundleError(msg)
    return (DETECTOR_INPUT,), outputs
