"""Triton ``config.pbtxt`` files: tensor specs read from ONNX graphs, the text, and its check against the
model-config protobuf that tritonclient ships.

Every config is generated as text (:func:`config_text`) from a :class:`ModelSpec`, then parsed back with
``google.protobuf.text_format.Parse(text, tritonclient.grpc.model_config_pb2.ModelConfig())`` and compared
field by field with the spec (:func:`check_config`) before anything is written: a name, platform/backend,
max_batch_size, data type or dims that the server would read differently is an :class:`ExportError` here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protoinspect.sdk._imports import require
from protoinspect.sdk.errors import ExportError, MissingDependencyError

SERVING_HINT = 'pip install "protoinspect[serving]"'

#: ONNX TensorProto element type -> Triton data type
ONNX_TO_TRITON: dict[int, str] = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16",
                                  6: "TYPE_INT32", 7: "TYPE_INT64", 8: "TYPE_STRING", 9: "TYPE_BOOL",
                                  10: "TYPE_FP16", 11: "TYPE_FP64", 12: "TYPE_UINT32", 13: "TYPE_UINT64",
                                  16: "TYPE_BF16"}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model config.

    Attributes:
        name: tensor name (the ONNX graph's, or the inspector's).
        data_type: Triton data type (``TYPE_FP32``, ...).
        dims: dimensions after the batch axis when the model batches, else all of them; -1: variable.
        reshape: the tensor's shape inside the model when it differs from ``dims`` (a per-frame scalar,
            ONNX shape ``[batch]``, is ``dims: [1]`` with ``reshape: []``); None: no reshape.
    """

    name: str
    data_type: str
    dims: tuple[int, ...]
    reshape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ModelSpec:
    """What one ``config.pbtxt`` says (see :func:`config_text`).

    Attributes:
        name: model name (the folder name in the repository).
        platform / backend: ``onnxruntime_onnx`` / ``tensorrt_plan`` platform, or the ``python`` backend.
        max_batch_size: 0: the model does not batch (dims are the full shapes).
        inputs / outputs: tensors.
        preferred_batch_sizes / max_queue_delay_us: dynamic batching (only when ``max_batch_size > 0``).
        instances / kind: instance group (``KIND_CPU`` / ``KIND_GPU``).
        version: the one version served (``version_policy: specific``).
        parameters: string parameters (bundle id, TensorRT version, ...).
        default_model_filename / cc_model_filenames: model file, per GPU compute capability for plans.
    """

    name: str
    platform: str | None
    backend: str | None
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    instances: int = 1
    kind: str = "KIND_CPU"
    version: int = 1
    parameters: Mapping[str, str] = field(default_factory=dict)
    default_model_filename: str | None = None
    cc_model_filenames: Mapping[str, str] = field(default_factory=dict)


def onnx_tensors(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], bool]:
    """Inputs and outputs of an ONNX graph as Triton tensors, and whether all of them have a batch axis.

    A graph batches when the first axis of every input and output is symbolic (``batch``); its dims are then
    the axes after the first (-1 for symbolic ones), and a per-item scalar (shape ``[batch]``) becomes
    ``dims: [1]`` reshaped to ``[]``. Otherwise the dims are the full shapes and the config's
    ``max_batch_size`` is 0.

    Raises:
        ExportError: the file cannot be read as ONNX, or has a tensor type Triton does not know.
    """
    onnx = require("onnx")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ExportError(f"cannot read ONNX graph {path}: {exc}") from exc
    inits = {i.name for i in model.graph.initializer}
    values = [vi for vi in model.graph.input if vi.name not in inits] + list(model.graph.output)

    def dims(vi: Any) -> list[int | None]:
        return [int(d.dim_value) if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]

    batched = all(dims(vi) and dims(vi)[0] is None for vi in values)
    specs = []
    for vi in values:
        elem = vi.type.tensor_type.elem_type
        if elem not in ONNX_TO_TRITON:
            raise ExportError(f"{path}: tensor '{vi.name}' has ONNX element type {elem}, which Triton does not serve")
        shape = [-1 if d is None else d for d in dims(vi)]
        if batched:
            shape = shape[1:]
        reshape = () if batched and not shape else None
        specs.append(TensorSpec(vi.name, ONNX_TO_TRITON[elem], tuple(shape or [1]), reshape))
    n_in = len(values) - len(model.graph.output)
    return tuple(specs[:n_in]), tuple(specs[n_in:]), batched


def _q(text: str) -> str:
    """A protobuf text-format string literal (UTF-8 kept; backslash, quote and line ends escaped)."""
    escaped = str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def _dims(values: Sequence[int]) -> str:
    return "[ " + ", ".join(str(int(v)) for v in values) + " ]"


def _tensor(t: TensorSpec) -> str:
    body = [f"    name: {_q(t.name)}", f"    data_type: {t.data_type}", f"    dims: {_dims(t.dims)}"]
    if t.reshape is not None:
        body.append(f"    reshape: {{ shape: {_dims(t.reshape)} }}")
    return "  {\n" + "\n".join(body) + "\n  }"


def config_text(spec: ModelSpec) -> str:
    """The ``config.pbtxt`` text of ``spec`` (protobuf text format of ``inference.ModelConfig``)."""
    lines = [f"name: {_q(spec.name)}"]
    if spec.platform:
        lines.append(f"platform: {_q(spec.platform)}")
    if spec.backend:
        lines.append(f"backend: {_q(spec.backend)}")
    lines.append(f"max_batch_size: {int(spec.max_batch_size)}")
    lines.append(f"version_policy: {{ specific: {{ versions: [ {int(spec.version)} ] }} }}")
    if spec.default_model_filename:
        lines.append(f"default_model_filename: {_q(spec.default_model_filename)}")
    for cc, filename in sorted(spec.cc_model_filenames.items()):
        lines.append(f"cc_model_filenames: {{ key: {_q(cc)} value: {_q(filename)} }}")
    lines.append("input [\n" + ",\n".join(_tensor(t) for t in spec.inputs) + "\n]")
    lines.append("output [\n" + ",\n".join(_tensor(t) for t in spec.outputs) + "\n]")
    if spec.max_batch_size > 0:
        lines.append("dynamic_batching {\n"
                     f"  preferred_batch_size: {_dims(spec.preferred_batch_sizes)}\n"
                     f"  max_queue_delay_microseconds: {int(spec.max_queue_delay_us)}\n}}")
    lines.append(f"instance_group [\n  {{\n    count: {int(spec.instances)}\n    kind: {spec.kind}\n  }}\n]")
    for key, value in sorted(spec.parameters.items()):
        lines.append(f"parameters: {{ key: {_q(key)} value: {{ string_value: {_q(value)} }} }}")
    return "\n".join(lines) + "\n"


def model_config_module() -> Any:
    """``tritonclient.grpc.model_config_pb2`` (imported lazily).

    Raises:
        MissingDependencyError: tritonclient is not installed, naming ``pip install "protoinspect[serving]"``.
    """
    try:
        return require("tritonclient.grpc.model_config_pb2")
    except MissingDependencyError as exc:
        raise MissingDependencyError(f"export-triton checks every config.pbtxt with tritonclient's model-config "
                                     f"protobuf, which is not installed: {SERVING_HINT}") from exc


def parse_config(text: str) -> Any:
    """Parse ``config.pbtxt`` text into tritonclient's ``ModelConfig`` message.

    Raises:
        ExportError: the text is not a valid ModelConfig (the protobuf parser's message).
        MissingDependencyError: tritonclient is missing.
    """
    pb2 = model_config_module()
    from google.protobuf import text_format

    try:
        return text_format.Parse(text, pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise ExportError(f"generated config.pbtxt does not parse as inference.ModelConfig: {exc}") from exc


def _check_tensors(what: str, parsed: Sequence[Any], expected: Sequence[TensorSpec], pb2: Any,
                   problems: list[str]) -> None:
    if [t.name for t in parsed] != [t.name for t in expected]:
        problems.append(f"{what} names {[t.name for t in parsed]} != {[t.name for t in expected]}")
        return
    for got, want in zip(parsed, expected):
        if pb2.DataType.Name(got.data_type) != want.data_type:
            problems.append(f"{what} '{want.name}': data_type {pb2.DataType.Name(got.data_type)} != {want.data_type}")
        if tuple(got.dims) != tuple(want.dims):
            problems.append(f"{what} '{want.name}': dims {list(got.dims)} != {list(want.dims)}")
        if want.reshape is not None and (not got.HasField("reshape") or tuple(got.reshape.shape) != want.reshape):
            problems.append(f"{what} '{want.name}': reshape missing or not {list(want.reshape)}")


def check_config(text: str, spec: ModelSpec) -> Any:
    """Parse ``text`` with tritonclient's ``ModelConfig`` and check it says what ``spec`` says.

    Checked: name, platform, backend, max_batch_size, every input / output (names, order, data types, dims,
    reshape), the served version, instance group, dynamic batching and parameters.

    Returns:
        The parsed ``ModelConfig`` message.

    Raises:
        ExportError: listing every difference (a bug of the generator, never written to disk).
    """
    pb2 = model_config_module()
    cfg = parse_config(text)
    problems: list[str] = []
    for key, want in (("name", spec.name), ("platform", spec.platform or ""), ("backend", spec.backend or ""),
                      ("max_batch_size", spec.max_batch_size)):
        if getattr(cfg, key) != want:
            problems.append(f"{key} {getattr(cfg, key)!r} != {want!r}")
    _check_tensors("input", cfg.input, spec.inputs, pb2, problems)
    _check_tensors("output", cfg.output, spec.outputs, pb2, problems)
    if list(cfg.version_policy.specific.versions) != [spec.version]:
        problems.append(f"version_policy {list(cfg.version_policy.specific.versions)} != [{spec.version}]")
    groups = [(g.count, pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in cfg.instance_group]
    if groups != [(spec.instances, spec.kind)]:
        problems.append(f"instance_group {groups} != {[(spec.instances, spec.kind)]}")
    if spec.max_batch_size > 0:
        if not cfg.HasField("dynamic_batching"):
            problems.append("dynamic_batching missing")
        elif (tuple(cfg.dynamic_batching.preferred_batch_size) != tuple(spec.preferred_batch_sizes)
              or cfg.dynamic_batching.max_queue_delay_microseconds != spec.max_queue_delay_us):
            problems.append("dynamic_batching differs from the requested preferred sizes / queue delay")
        if any(b > spec.max_batch_size or b < 1 for b in cfg.dynamic_batching.preferred_batch_size):
            problems.append(f"preferred batch sizes {list(cfg.dynamic_batching.preferred_batch_size)} outside "
                            f"1..{spec.max_batch_size}")
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    if params != dict(spec.parameters):
        problems.append(f"parameters {params} != {dict(spec.parameters)}")
    if dict(cfg.cc_model_filenames) != dict(spec.cc_model_filenames):
        problems.append(f"cc_model_filenames {dict(cfg.cc_model_filenames)} != {dict(spec.cc_model_filenames)}")
    if problems:
        raise ExportError(f"config.pbtxt of model '{spec.name}' does not say what was meant: " + "; ".join(problems))
    return cfg
