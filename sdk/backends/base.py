"""The backend contract: what every runtime that executes the detector graph offers, and its input checks.

The detector graph takes ``image`` (N x H x W x 3 uint8 RGB at the bundle's model size) and returns
``anomaly_map`` (N x 1 x H x W float32), ``score`` (N float32) and ``features`` (N x C x H/8 x W/8
float32, for the defect classifier; absent from graphs exported before it existed); the normalisation
is part of the graph.
"""

from __future__ import annotations

import os
import re
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from protoinspect.sdk.backends.runtime_lifecycle import RuntimeLifecycle
from protoinspect.sdk.bundle import Bundle, load_bundle
from protoinspect.sdk.errors import ConfigError, InputError

#: Name of the detector graph's only input and of its outputs (the contract of ``detector.onnx``).
DETECTOR_INPUT = "image"
DETECTOR_OUTPUTS = ("anomaly_map", "score")
#: Optional third output: the fused encoder feature map (N x C x H/8 x W/8 float32) the defect
#: classifier takes its tokens from; graphs exported before it existed lack it.
DETECTOR_FEATURES = "features"
#: Default file name of the exported graph inside a bundle (``manifest.onnx.file`` wins).
DETECTOR_ONNX_FILE = "detector.onnx"

_DEVICE = re.compile(r"^(?P<kind>[a-z]+)(?::(?P<index>\d+))?$")


class GraphOutputs(Mapping[str, np.ndarray]):
    """The outputs of one backend run, each brought to the host as a numpy array on first access.

    What a run leaves on the runtime's side (an ONNX Runtime value, a torch tensor, possibly on the
    GPU) is converted only when read, so an output nobody reads (the detector's ``features`` on OK
    frames) is never copied. Valid until the backend runs again: runtimes reuse their output buffers.

    Attributes:
        fetched: names converted so far, in order (what a run cost in host copies).
    """

    def __init__(self, names: tuple[str, ...], fetch: Callable[[str], np.ndarray]) -> None:
        """Args: names: the graph's output names; fetch: name -> host float array (called once per name)."""
        self._names = tuple(names)
        self._fetch = fetch
        self._host: dict[str, np.ndarray] = {}
        self.fetched: list[str] = []

    @classmethod
    def ready(cls, arrays: Mapping[str, np.ndarray]) -> GraphOutputs:
        """Outputs that are host arrays already (nothing left to defer)."""
        out = cls(tuple(arrays), arrays.__getitem__)
        return out

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(f"the graph has no output {name!r}; its outputs are {list(self._names)}")
        if name not in self._host:
            self._host[name] = self._fetch(name)
            self.fetched.append(name)
        return self._host[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


@runtime_checkable
class Backend(Protocol):
    """A runtime that executes the detector graph; it holds no thresholds and no pre/post-processing.

    Attributes:
        name: registry name (``"onnxruntime"``, ``"torch"``).
        device: the device it runs on as requested (``"cpu"``, ``"cuda:0"``, ``"tensorrt:0"``).
        input_names: graph input names, ``("image",)``.
        output_names: graph output names, ``("anomaly_map", "score")``.
    """

    name: str
    device: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Execute the graph once: input name -> array in, output name -> float32 array out."""
        ...

    def run_lazy(self, inputs: Mapping[str, np.ndarray]) -> GraphOutputs:
        """Execute the graph once; outputs are brought to the host only when read (see :class:`GraphOutputs`)."""
        ...

    def close(self) -> None:
        """Release the session / weights; later ``run`` calls raise :class:`BackendError`."""
        ...

    def describe(self) -> dict[str, Any]:
        """Versions, device / providers and the model file's sha256, JSON-safe."""
        ...


class BackendBase(RuntimeLifecycle):
    """Shared part of the concrete backends: input validation, closed state, context manager.

    Subclasses set ``name`` (class attribute), call :meth:`_init_base` and implement :meth:`_run`,
    :meth:`_release` and :meth:`describe`.
    """

    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    image_size: tuple[int, int]
    bundle: Bundle

    def _init_base(self, bundle: Bundle, device: str, input_names: tuple[str, ...],
                   output_names: tuple[str, ...]) -> None:
        self.bundle = bundle
        self.device = device
        self.input_names = tuple(input_names)
        self.output_names = tuple(output_names)
        self.image_size = tuple(bundle.manifest.preprocess_spec.image_size)  # type: ignore[assignment]
        self._open()

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Execute the graph on one batch.

        Args:
            inputs: ``{"image": N x H x W x 3 uint8 RGB}`` with H x W the bundle's model size
                (``manifest.preprocess.image_size``) and N >= 1; any strides.

        Returns:
            ``{"anomaly_map": N x 1 x H x W float32, "score": N float32}`` as numpy arrays on the host.

        Raises:
            InputError: a missing or unexpected input name, or an array of the wrong type, dtype,
                rank, channel count or size.
            BackendError: the backend is closed, or the runtime failed while executing.
        """
        return self._run(self._checked(inputs))

    def run_lazy(self, inputs: Mapping[str, np.ndarray]) -> GraphOutputs:
        """Like :meth:`run`, but each output is converted to a host array only when read.

        The result is valid until this backend runs again. Backends that have nothing to defer
        return their eager outputs.

        Raises:
            InputError, BackendError: as :meth:`run`.
        """
        return self._run_lazy(self._checked(inputs))

    def _checked(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._require_open()
        return check_inputs(inputs, self.input_names, self.image_size)

    @abstractmethod
    def _run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Execute validated, C-contiguous inputs."""

    def _run_lazy(self, inputs: dict[str, np.ndarray]) -> GraphOutputs:
        """Execute validated inputs, deferring the host copies; default: :meth:`_run`, nothing deferred."""
        return GraphOutputs.ready(self._run(inputs))

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"{type(self).__name__}(bundle={str(self.bundle.path)!r}, device={self.device!r}, {state})"


def check_inputs(inputs: Mapping[str, Any], input_names: tuple[str, ...],
                 image_size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Validate a backend's inputs: every name is an N x H x W x 3 uint8 RGB image batch at model size.

    Args:
        inputs: input name -> array.
        input_names: the names the graph takes (all of them required, no others allowed).
        image_size: (H, W) of the model input.

    Returns:
        input name -> the same arrays, C-contiguous (copied only when they were not).

    Raises:
        InputError: naming the problem (missing / unexpected names, type, dtype, rank, channels, size,
            empty batch).
    """
    if not isinstance(inputs, Mapping):
        msg = f"inputs must be a mapping of input name -> array ({', '.join(input_names)}), got {type(inputs).__name__}"
        raise InputError(msg)
    missing = [n for n in input_names if n not in inputs]
    extra = sorted(str(n) for n in inputs if n not in input_names)
    if missing or extra:
        parts = ([f"missing {missing}"] if missing else []) + ([f"unexpected {extra}"] if extra else [])
        msg = f"inputs {' and '.join(parts)}: the graph takes exactly {list(input_names)}"
        raise InputError(msg)
    h, w = image_size
    out: dict[str, np.ndarray] = {}
    for name in input_names:
        arr = inputs[name]
        if not isinstance(arr, np.ndarray):
            msg = f"input '{name}' must be a numpy.ndarray, got {type(arr).__name__}"
            raise InputError(msg)
        if arr.dtype != np.uint8:
            msg = (
                f"input '{name}' must be uint8 (N x {h} x {w} x 3 RGB, the graph normalises itself), got {arr.dtype}; "
                "pass resize_to_rgb() output, not normalised floats"
            )
            raise InputError(msg)
        if arr.ndim != 4:
            hint = f" (one frame: add the batch axis, e.g. {name}[None])" if arr.ndim == 3 else ""
            msg = f"input '{name}' must be 4-D N x {h} x {w} x 3, got {arr.ndim}-D shape {arr.shape}{hint}"
            raise InputError(msg)
        if arr.shape[3] != 3:
            msg = f"input '{name}' must have 3 channels last (N x {h} x {w} x 3 RGB), got shape {arr.shape}"
            raise InputError(msg)
        if arr.shape[1:3] != (h, w):
            msg = (
                f"input '{name}' is {arr.shape[1]}x{arr.shape[2]} but the model takes {h}x{w} (H x W): "
                "resize with protoinspect.sdk.preprocess.resize_to_rgb"
            )
            raise InputError(msg)
        if arr.shape[0] == 0:
            msg = f"input '{name}' is an empty batch (shape {arr.shape}): give at least one image"
            raise InputError(msg)
        out[name] = arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
    return out


def as_bundle(bundle: Bundle | str | os.PathLike[str]) -> Bundle:
    """A loaded :class:`Bundle` (loaded and sha256-verified when given a path)."""
    return bundle if isinstance(bundle, Bundle) else load_bundle(bundle)


def parse_device(device: str, kinds: tuple[str, ...]) -> tuple[str, int | None]:
    """Split ``"cuda:1"`` into ``("cuda", 1)`` and ``"cpu"`` into ``("cpu", None)``.

    Args:
        device: the requested device string.
        kinds: device kinds the backend supports (``"cpu"``, ``"cuda"``, ``"tensorrt"``).

    Raises:
        ConfigError: not a string of the form ``KIND`` or ``KIND:INDEX`` with a supported KIND, or an
            index on ``"cpu"``.
    """
    m = _DEVICE.match(device.strip().lower()) if isinstance(device, str) else None
    if m is None or m["kind"] not in kinds or (m["kind"] == "cpu" and m["index"] is not None):
        choices = ", ".join(k if k == "cpu" else f"{k}, {k}:N" for k in kinds)
        msg = f"unknown device {device!r}: choose one of {choices}"
        raise ConfigError(msg)
    return m["kind"], (int(m["index"]) if m["index"] is not None else None)


def onnx_file_name(bundle: Bundle) -> str:
    """File name of the bundle's exported detector graph (``manifest.onnx.file``, else the default name)."""
    record = bundle.manifest.onnx
    return record.file if record is not None and record.file else DETECTOR_ONNX_FILE


def has_onnx(bundle: Bundle) -> bool:
    """Whether the bundle lists an exported detector graph."""
    return onnx_file_name(bundle) in bundle.manifest.files
