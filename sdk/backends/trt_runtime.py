"""Running a serialized TensorRT engine with pycuda: device buffers, one stream, optional CUDA graphs.

:class:`CudaDevice` wraps one GPU's primary context (pushed around every use, so a runner can be
called from any thread); :class:`EngineRunner` deserializes an engine, allocates a device buffer and a
page-locked host buffer per I/O tensor at the optimisation profile's maximum shape, and executes with
``IExecutionContext.execute_async_v3`` on its own stream: inputs are copied host -> device
asynchronously, the engine is enqueued (or its captured CUDA graph launched), the requested outputs are
copied back and the stream is synchronised once; the other outputs stay on the GPU until the next run, where
``EngineRunner.fetch`` copies one when it is wanted. Used by :mod:`protoinspect.sdk.backends.trt_backend`,
:mod:`protoinspect.sdk.backends.trt_classifier` and the parity check of ``export/build_engine.py``.

The ``trt`` and ``cuda`` arguments are the imported ``tensorrt`` and ``pycuda.driver`` modules; they
are passed in (never imported here) so that the module imports without either.

Engines with plugin layers: plugins are defined at build time (``protoinspect.export.trt_plugins``), which
this runtime never imports. An application hands their registration over with
:func:`add_plugin_registrar`; :func:`ensure_plugins` runs it before an engine that needs the plugins is
deserialized and checks TensorRT's plugin registry, raising
:class:`~protoinspect.sdk.errors.MissingPluginError` for a plugin still missing. AOT plugins need nothing
here: TensorRT embeds their kernels in the engine.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from protoinspect.sdk.errors import BackendError, ConfigError, InputError, MissingPluginError, ProtoInspectError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorSpec:
    """One I/O tensor of an engine.

    Attributes:
        name: tensor name.
        is_input: True for inputs.
        dtype: numpy dtype (``trt.nptype`` of the engine's type).
        shape: engine shape; -1 marks a dynamic dimension.
        profile: (min, opt, max) shapes of optimisation profile 0 (inputs only).
    """

    name: str
    is_input: bool
    dtype: np.dtype
    shape: tuple[int, ...]
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None


def tensor_specs(trt: Any, engine: Any) -> list[TensorSpec]:
    """The engine's I/O tensors in engine order (``num_io_tensors`` / ``get_tensor_*`` API of TensorRT >= 8.5)."""
    specs = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        profile = None
        if is_input:
            lo, opt, hi = engine.get_tensor_profile_shape(name, 0)
            profile = (tuple(int(v) for v in lo), tuple(int(v) for v in opt), tuple(int(v) for v in hi))
        specs.append(TensorSpec(name, is_input, np.dtype(trt.nptype(engine.get_tensor_dtype(name))),
                                tuple(int(v) for v in engine.get_tensor_shape(name)), profile))
    return specs


#: plugin namespace -> the callable that registers that namespace's TensorRT plugins in this process
_PLUGIN_REGISTRARS: dict[str, Callable[[], object]] = {}
_REGISTRARS_RUN: set[str] = set()


def add_plugin_registrar(namespace: str, registrar: Callable[[], object]) -> None:
    """Tell the runtime how to register the TensorRT plugins of ``namespace`` (the hook that replaces an import).

    ``registrar()`` runs at most once per process (again only if it raised), right before the first engine
    that needs a plugin of ``namespace`` is deserialized. Adding a registrar for a namespace replaces the
    previous one. Examples::

        from protoinspect.export.trt_plugins import PLUGIN_NAMESPACE, register_plugins
        add_plugin_registrar(PLUGIN_NAMESPACE, register_plugins)
        add_plugin_registrar("acme", lambda: tensorrt.get_plugin_registry().load_library("libacme_plugins.so"))

    Args:
        namespace: the plugin namespace (``"protoinspect"`` in ``"protoinspect::prototype_attention"``).
        registrar: a callable without arguments that registers the plugins with TensorRT.

    Raises:
        ConfigError: an empty namespace or a registrar that is not callable.
    """
    if not isinstance(namespace, str) or not namespace or "::" in namespace:
        raise ConfigError(f"plugin namespace must be a non-empty string without '::', got {namespace!r}")
    if not callable(registrar):
        raise ConfigError(f"plugin registrar for {namespace!r} must be callable, got {type(registrar).__name__}")
    _PLUGIN_REGISTRARS[namespace] = registrar
    _REGISTRARS_RUN.discard(namespace)


def registered_plugin_ids(trt: Any) -> set[str] | None:
    """``"namespace::name"`` of every plugin creator in TensorRT's plugin registry; None when this TensorRT
    cannot list them (then nothing can be checked before deserializing)."""
    get_registry = getattr(trt, "get_plugin_registry", None)
    if get_registry is None:
        return None
    registry = get_registry()
    creators = getattr(registry, "all_creators", None)  # TensorRT >= 10
    if creators is None:
        creators = getattr(registry, "plugin_creator_list", None)
    if creators is None:
        return None
    return {f"{getattr(c, 'plugin_namespace', '')}::{c.name}" for c in creators}


def ensure_plugins(trt: Any, plugin_ids: Sequence[str], *, name: str = "engine") -> None:
    """Run the registrars of the namespaces in ``plugin_ids``, then check that TensorRT knows every plugin.

    Args:
        trt: the ``tensorrt`` module.
        plugin_ids: ``"namespace::name"`` of the plugins the engine needs registered at run time.
        name: the engine, used in messages.

    Raises:
        MissingPluginError: a plugin is not in TensorRT's registry after the registrars ran.
        BackendError: a registrar raised something that is not a ProtoInspect error.
    """
    if not plugin_ids:
        return
    for namespace in sorted({pid.split("::", 1)[0] for pid in plugin_ids}):
        registrar = _PLUGIN_REGISTRARS.get(namespace)
        if registrar is None or namespace in _REGISTRARS_RUN:
            continue
        try:
            registrar()
        except ProtoInspectError:
            raise
        except Exception as exc:  # noqa: BLE001 - user code and tensorrt raise their own types
            raise BackendError(f"registering the TensorRT plugins of namespace {namespace!r} for {name} failed: "
                               f"{type(exc).__name__}: {exc}") from exc
        _REGISTRARS_RUN.add(namespace)
    available = registered_plugin_ids(trt)
    if available is None:
        logger.debug("TensorRT %s cannot list its plugin creators; not checking %s", trt.__version__, list(plugin_ids))
        return
    missing = sorted(set(plugin_ids) - available)
    if missing:
        namespace = missing[0].split("::", 1)[0]
        hint = (" (ProtoInspect's attention plugins: protoinspect.export.trt_plugins.register_plugins)"
                if namespace == "protoinspect" else "")
        msg = (f"{name} needs the TensorRT plugin(s) {missing}, which are not registered in this process. Register "
               f"them before loading the engine: protoinspect.sdk.backends.trt_runtime.add_plugin_registrar("
               f"{namespace!r}, fn) with the function that defines them{hint}, or a fn calling "
               "tensorrt.get_plugin_registry().load_library(PATH) for a C++ plugin library. Or rebuild the engine "
               "from the default export, which has no plugin layers (python export/build_engine.py BUNDLE).")
        raise MissingPluginError(msg)


class CudaDevice:
    """The primary CUDA context of GPU ``index``; ``with device:`` makes it current for the block."""

    def __init__(self, cuda: Any, index: int = 0) -> None:
        """Retain the primary context of GPU ``index``.

        Raises:
            ConfigError: no GPU with that index.
            BackendError: the CUDA driver cannot be initialised.
        """
        self._cuda = cuda
        try:
            cuda.init()
            count = cuda.Device.count()
        except Exception as exc:  # noqa: BLE001 - pycuda raises its own error types
            raise BackendError(f"cannot initialise CUDA through pycuda: {type(exc).__name__}: {exc}") from exc
        if not 0 <= index < count:
            raise ConfigError(f"no CUDA device {index}: this machine has {count} (use cuda:0 .. cuda:{max(count - 1, 0)})")
        self.index = index
        self.device = cuda.Device(index)
        self.context = self.device.retain_primary_context()
        self.name = str(self.device.name())
        major, minor = self.device.compute_capability()
        self.compute_capability = f"{int(major)}.{int(minor)}"

    def __enter__(self) -> CudaDevice:
        self.context.push()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._cuda.Context.pop()

    def release(self) -> None:
        """Drop this object's reference to the primary context."""
        self.context.detach()


class EngineRunner:
    """Executes one serialized engine on one :class:`CudaDevice` (profile 0; any shape inside it)."""

    def __init__(self, trt: Any, cuda: Any, device: CudaDevice, engine_bytes: bytes, *,
                 cuda_graph: bool = False, name: str = "engine", plugins: Sequence[str] = ()) -> None:
        """Deserialize the engine and allocate buffers for the profile's maximum shapes.

        Args:
            trt: the ``tensorrt`` module.
            cuda: the ``pycuda.driver`` module.
            device: the GPU to run on.
            engine_bytes: a serialized engine (``build_serialized_network`` output).
            cuda_graph: capture ``execute_async_v3`` in a CUDA graph per input-shape set and replay it.
            name: used in messages.
            plugins: ``"namespace::name"`` of the plugins the engine needs registered at run time
                (see :func:`ensure_plugins`; AOT plugins are embedded in the engine and not listed).

        Raises:
            MissingPluginError: a plugin in ``plugins`` is not registered (see :func:`add_plugin_registrar`).
            BackendError: TensorRT cannot deserialize the engine (version / GPU mismatch, corrupt file)
                or create an execution context.
            ConfigError: ``cuda_graph=True`` with a pycuda that has no stream capture.
        """
        self._trt, self._cuda, self.device, self.name = trt, cuda, device, name
        self.cuda_graph = bool(cuda_graph)
        self._graphs: dict[tuple[tuple[int, ...], ...], Any] = {}
        self._last_shapes: dict[str, tuple[int, ...]] = {}
        self._output_shapes: dict[str, tuple[int, ...]] = {}
        #: how many times :meth:`run` has started; :meth:`fetch` reads outputs of the latest run only
        self.runs = 0
        ensure_plugins(trt, plugins, name=name)
        with device:
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(engine_bytes)
            if self.engine is None:
                uses = f"; it uses the plugins {list(plugins)}, check their registration" if plugins else ""
                raise BackendError(f"TensorRT {trt.__version__} could not deserialize {name} (see its log above): "
                                   "the engine was built by another TensorRT version or for another GPU, or is "
                                   f"corrupt{uses}")
            self.context = self.engine.create_execution_context()
            if self.context is None:
                raise BackendError(f"TensorRT could not create an execution context for {name} (out of GPU memory?)")
            self.tensors = tensor_specs(trt, self.engine)
            self.inputs = [t for t in self.tensors if t.is_input]
            self.outputs = [t for t in self.tensors if not t.is_input]
            self.stream = cuda.Stream()
            if self.cuda_graph and not hasattr(self.stream, "begin_capture"):
                raise ConfigError("cuda_graph=True needs pycuda >= 2021.1 (Stream.begin_capture); upgrade pycuda "
                                  "or use cuda_graph=False")
            for spec in self.inputs:
                self.context.set_input_shape(spec.name, spec.profile[2])
            self._device_buffers: dict[str, Any] = {}
            self._host_buffers: dict[str, np.ndarray] = {}
            for spec in self.tensors:
                shape = tuple(int(v) for v in self.context.get_tensor_shape(spec.name))
                self._device_buffers[spec.name] = cuda.mem_alloc(max(1, int(np.prod(shape)) * spec.dtype.itemsize))
                self._host_buffers[spec.name] = cuda.pagelocked_empty(shape, spec.dtype)
                self.context.set_tensor_address(spec.name, int(self._device_buffers[spec.name]))
            self._last_shapes = {spec.name: spec.profile[2] for spec in self.inputs}
        logger.debug("TensorRT engine %s: %s", name, [(t.name, t.shape, t.dtype.name) for t in self.tensors])

    @property
    def batch_range(self) -> tuple[int, int]:
        """(min, max) batch size of profile 0 over all inputs."""
        return max(s.profile[0][0] for s in self.inputs), min(s.profile[2][0] for s in self.inputs)

    def _check(self, inputs: dict[str, np.ndarray]) -> None:
        names = [s.name for s in self.inputs]
        if sorted(inputs) != sorted(names):
            raise InputError(f"{self.name} takes inputs {names}, got {sorted(inputs)}")
        for spec in self.inputs:
            arr = inputs[spec.name]
            lo, _, hi = spec.profile
            if arr.dtype != spec.dtype:
                raise InputError(f"{self.name} input '{spec.name}' must be {spec.dtype}, got {arr.dtype}")
            if arr.ndim != len(hi) or any(not a <= d <= b for a, d, b in zip(lo, arr.shape, hi)):
                raise InputError(f"{self.name} input '{spec.name}' has shape {arr.shape}, outside the engine's "
                                 f"optimisation profile (min {lo}, max {hi}); rebuild with a larger --max-batch")

    def run(self, inputs: dict[str, np.ndarray], outputs: Collection[str] | None = None) -> dict[str, np.ndarray]:
        """Execute once: input name -> array (shapes inside the profile) in, output name -> new host array out.

        Args:
            inputs: every input of the engine, its dtype, a shape inside the profile.
            outputs: the outputs to copy to the host now (default: all of them). The others stay in the
                runner's device buffers, where :meth:`fetch` copies them later, until the next run.

        Raises:
            InputError: missing / unexpected names, wrong dtype, a shape outside the profile, an unknown output.
            BackendError: closed, or TensorRT / CUDA failed.
        """
        self._require_open()
        self._check(inputs)
        names = [s.name for s in self.outputs] if outputs is None else list(outputs)
        unknown = sorted(set(names) - {s.name for s in self.outputs})
        if unknown:
            raise InputError(f"{self.name} has no outputs {unknown}; its outputs are {[s.name for s in self.outputs]}")
        self.runs += 1  # from here on, outputs of earlier runs are gone
        with self._cuda_errors("running"), self.device:
            for spec in self.inputs:
                arr = inputs[spec.name]
                staged = self._host_buffers[spec.name].reshape(-1)[: arr.size].reshape(arr.shape)
                np.copyto(staged, arr)
                self._cuda.memcpy_htod_async(self._device_buffers[spec.name], staged, self.stream)
                if self._last_shapes.get(spec.name) != arr.shape:
                    if not self.context.set_input_shape(spec.name, arr.shape):
                        raise BackendError(f"TensorRT rejected shape {arr.shape} for input '{spec.name}'")
                    self._last_shapes[spec.name] = arr.shape
            self._enqueue(tuple(inputs[s.name].shape for s in self.inputs))
            self._output_shapes = {s.name: tuple(int(v) for v in self.context.get_tensor_shape(s.name))
                                   for s in self.outputs}
            return self._to_host(names)

    def fetch(self, name: str, run: int) -> np.ndarray:
        """Copy output ``name`` of run number ``run`` (:attr:`runs` right after that run) to the host.

        Raises:
            InputError: the engine has no output ``name``.
            BackendError: closed; the runner has run again since (its buffers hold a later run's
                outputs), or CUDA failed.
        """
        self._require_open()
        if name not in self._output_shapes:
            raise InputError(f"{self.name} has no output '{name}'; its outputs are {[s.name for s in self.outputs]}")
        if run != self.runs:
            raise BackendError(f"output '{name}' of run {run} of {self.name} is gone: the runner has run "
                               f"{self.runs - run} more time(s) since; read outputs before the next run")
        with self._cuda_errors("copying an output of"), self.device:
            return self._to_host([name])[name]

    def _require_open(self) -> None:
        if self.context is None:
            raise BackendError(f"{self.name} runner is closed")

    @contextlib.contextmanager
    def _cuda_errors(self, doing: str) -> Iterator[None]:
        """Turn what pycuda / tensorrt raise into :class:`BackendError`."""
        try:
            yield
        except (InputError, BackendError):
            raise
        except Exception as exc:  # noqa: BLE001 - pycuda / tensorrt raise their own types
            raise BackendError(f"{doing} {self.name} failed: {type(exc).__name__}: {exc}") from exc

    def _to_host(self, names: list[str]) -> dict[str, np.ndarray]:
        """Copy the last run's outputs ``names`` device -> host on the stream (one synchronisation)."""
        staged = {}
        for name in names:
            shape = self._output_shapes[name]
            flat = self._host_buffers[name].reshape(-1)[: int(np.prod(shape))]
            self._cuda.memcpy_dtoh_async(flat, self._device_buffers[name], self.stream)
            staged[name] = (flat, shape)
        self.stream.synchronize()
        return {name: flat.reshape(shape).copy() for name, (flat, shape) in staged.items()}

    def _enqueue(self, key: tuple[tuple[int, ...], ...]) -> None:
        handle = self.stream.handle
        if not self.cuda_graph:
            if not self.context.execute_async_v3(handle):
                raise BackendError(f"TensorRT execute_async_v3 failed for {self.name} (see its log)")
            return
        graph = self._graphs.get(key)
        if graph is None:
            # one plain enqueue first: TensorRT finishes shape-dependent setup outside the capture
            if not self.context.execute_async_v3(handle):
                raise BackendError(f"TensorRT execute_async_v3 failed for {self.name} (see its log)")
            self.stream.begin_capture()
            ok = self.context.execute_async_v3(handle)
            captured = self.stream.end_capture()
            if not ok:
                raise BackendError(f"TensorRT execute_async_v3 failed during CUDA graph capture of {self.name}")
            graph = captured.instantiate()
            self._graphs[key] = graph
            logger.debug("captured a CUDA graph of %s for input shapes %s", self.name, key)
        graph.launch(self.stream)

    def close(self) -> None:
        """Free device buffers, graphs, context and engine (idempotent)."""
        if self.context is None:
            return
        with self.device:
            self._graphs.clear()
            for buf in self._device_buffers.values():
                buf.free()
            self._device_buffers.clear()
            self._host_buffers.clear()
            self.context = None
            self.engine = None
            self._runtime = None
