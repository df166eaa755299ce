"""TensorRT engine-build settings and the version branching, as plain data (no tensorrt import).

:class:`BuildOptions` validates what the user asked for; :func:`plan_build` turns it, the TensorRT
version and what the ONNX file and the GPU offer into a :class:`BuildPlan` that says which network
flag, builder flags, calibration and ONNX conversion the build uses. ``export/build_engine.py`` only
executes the plan, so every decision here is unit-tested without TensorRT.

TensorRT 10 (JetPack 6 ships 10.3) builds weakly typed networks: precision comes from the builder
flags FP16 / INT8, and INT8 without Q/DQ nodes needs a calibrator (IInt8EntropyCalibrator2, deprecated
since 10.1). TensorRT 11 removed those flags and calibrators: networks are strongly typed, so FP16
means an ONNX file whose tensors are float16 and INT8 means explicit QuantizeLinear/DequantizeLinear
nodes in the ONNX file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protoinspect.sdk import config_codec
from protoinspect.sdk.backends.trt_sidecar import PRECISIONS, version_key
from protoinspect.sdk.errors import ConfigError, ExportError

MIN_TRT_MAJOR = 10
MAX_OPT_LEVEL = 5
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
MODELOPT_INT8_HINT = (
    "quantize the ONNX file with NVIDIA ModelOpt (`python -m modelopt.onnx.quantization --onnx_path detector.onnx "
    "--quantize_mode int8 --calibration_data calib.npy --output_path detector.int8.onnx`), or build --precision fp16"
)


class EngineBuildError(ExportError):
    """Building a TensorRT engine failed: parser errors, an unsupported precision or platform, a failed parity check."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class BuildOptions:
    """What ``build_engine`` was asked for (validated on construction; ConfigError names the bad value).

    Attributes:
        precision: ``fp32``, ``fp16`` or ``int8``.
        calib_dir: folder of images (searched recursively) for INT8 calibration and the parity check.
        dla_core: DLA core on Jetson AGX Orin / Orin NX (GPU fallback on); None: GPU only.
        workspace_gib: builder workspace memory pool limit in GiB.
        timing_cache: file to load the timing cache from (when it exists) and save it to.
        allow_precision_fallback: build a lower-precision-capable GPU's best precision instead of failing.
        max_batch / opt_batch: optimisation profile of the batch axis (min 1).
        builder_optimization_level: 0..5 (TensorRT's default is 3).
        calib_images: at most this many calibration images (evenly spaced over the sorted list).
        verify: run the engine vs ONNX Runtime parity check after building.
    """

    precision: str = "fp16"
    calib_dir: Path | None = None
    dla_core: int | None = None
    workspace_gib: float = 4.0
    timing_cache: Path | None = None
    allow_precision_fallback: bool = False
    max_batch: int = 8
    opt_batch: int = 1
    builder_optimization_level: int = 3
    calib_images: int = 64
    verify: bool = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not _is_int(self.max_batch) or self.max_batch < 1:
            raise ConfigError(f"max_batch must be an integer >= 1, got {self.max_batch!r}")
        if not _is_int(self.opt_batch) or not 1 <= self.opt_batch <= self.max_batch:
            raise ConfigError(f"opt_batch must be an integer in 1..max_batch ({self.max_batch}), got {self.opt_batch!r}")
        if isinstance(self.workspace_gib, bool) or not isinstance(self.workspace_gib, (int, float)) \
                or not math.isfinite(self.workspace_gib) or self.workspace_gib <= 0:
            raise ConfigError(f"workspace_gib must be a positive number of GiB, got {self.workspace_gib!r}")
        if not _is_int(self.builder_optimization_level) or not 0 <= self.builder_optimization_level <= MAX_OPT_LEVEL:
            raise ConfigError(f"builder_optimization_level must be an integer 0..{MAX_OPT_LEVEL}, "
                              f"got {self.builder_optimization_level!r}")
        if not _is_int(self.calib_images) or self.calib_images < 1:
            raise ConfigError(f"calib_images must be an integer >= 1, got {self.calib_images!r}")
        if self.dla_core is not None:
            if not _is_int(self.dla_core) or self.dla_core < 0:
                raise ConfigError(f"dla_core must be a DLA core index >= 0 or None, got {self.dla_core!r}")
            if self.precision == "fp32":
                raise ConfigError("the DLA runs fp16 or int8 only: use --precision fp16 (or int8) with --dla")
        if self.calib_dir is not None:
            object.__setattr__(self, "calib_dir", Path(self.calib_dir))
            if not self.calib_dir.is_dir():
                raise ConfigError(f"--calib-dir {self.calib_dir} is not a folder of images")
        if self.timing_cache is not None:
            object.__setattr__(self, "timing_cache", Path(self.timing_cache))
            if self.timing_cache.is_dir():
                raise ConfigError(f"--timing-cache {self.timing_cache} is a folder; give a file path")
            if not self.timing_cache.parent.is_dir():
                raise ConfigError(f"--timing-cache: folder {self.timing_cache.parent} does not exist")

    @property
    def workspace_bytes(self) -> int:
        """``workspace_gib`` in bytes."""
        return int(self.workspace_gib * (1 << 30))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (paths as strings), as recorded in an engine's sidecar (:func:`protoinspect.sdk.config_codec.to_dict`)."""
        return config_codec.to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BuildOptions:
        """Inverse of :meth:`to_dict`; unknown keys are an error (:mod:`protoinspect.sdk.config_codec`)."""
        return config_codec.from_dict(cls, d)


@dataclass(frozen=True)
class BuildPlan:
    """How one engine is built (the decisions ``build_engine`` executes).

    Attributes:
        trt_major: TensorRT major version.
        precision: precision actually built (differs from the request only after an allowed fallback).
        strongly_typed: create the network with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``.
        builder_flags: names of ``trt.BuilderFlag`` members to set.
        calibrate: attach an INT8 entropy calibrator (TensorRT 10, INT8 without Q/DQ).
        convert_fp16: convert the ONNX file's float32 tensors to float16 before parsing (TensorRT 11 fp16).
        dla_core: DLA core, or None for GPU only.
        notes: what was decided and why, for the log and the sidecar.
    """

    trt_major: int
    precision: str
    strongly_typed: bool
    builder_flags: tuple[str, ...]
    calibrate: bool
    convert_fp16: bool
    dla_core: int | None
    notes: tuple[str, ...] = field(default=())


def fast_precisions(builder: Any, compute_capability: str) -> tuple[bool, bool]:
    """(fast fp16, fast int8) on this GPU.

    TensorRT 10 answers through ``builder.platform_has_fast_fp16 / _int8`` (deprecated there); where the
    attributes are gone (TensorRT 11) the answer follows the compute capability: fp16 from sm 5.3
    except sm 6.1, int8 from sm 6.1.
    """
    fp16 = getattr(builder, "platform_has_fast_fp16", None)
    int8 = getattr(builder, "platform_has_fast_int8", None)
    major, minor = (int(v) for v in compute_capability.split(".")[:2])
    cc = major * 10 + minor
    return (bool(fp16) if fp16 is not None else cc >= 53 and cc != 61,
            bool(int8) if int8 is not None else cc >= 61)


def _fallback(requested: str, fast_fp16: bool, fast_int8: bool, allow: bool) -> tuple[str, list[str]]:
    """The precision to build: the requested one when the GPU has it, else (only if allowed) the best it has."""
    ok = {"fp32": True, "fp16": fast_fp16, "int8": fast_int8}
    if ok[requested]:
        return requested, []
    best = "fp16" if requested == "int8" and fast_fp16 else "fp32"
    if not allow:
        raise EngineBuildError(f"this GPU has no fast {requested.upper()} (builder.platform_has_fast_{requested} is "
                               f"False): build --precision {best}, or pass --allow-precision-fallback to build "
                               f"{best} instead")
    return best, [f"precision fallback {requested} -> {best}: the GPU has no fast {requested} (allowed by the user)"]


def plan_build(trt_version: str, options: BuildOptions, *, onnx_name: str, onnx_has_qdq: bool,
               onnx_has_fp16: bool, fast_fp16: bool, fast_int8: bool, num_dla_cores: int) -> BuildPlan:
    """Decide the network flag, builder flags, calibration and ONNX conversion for one engine.

    Raises:
        EngineBuildError: TensorRT older than 10; a precision the GPU lacks without
            ``allow_precision_fallback``; a DLA core the device does not have; INT8 on TensorRT 10
            without Q/DQ and without ``calib_dir``; INT8 on TensorRT 11+ without Q/DQ nodes.
    """
    major = version_key(trt_version)[0]
    if major < MIN_TRT_MAJOR:
        raise EngineBuildError(f"TensorRT {trt_version} is too old: build_engine needs TensorRT >= {MIN_TRT_MAJOR} "
                               "(JetPack 6 or newer; pip install 'protoinspect[tensorrt]')")
    precision, notes = _fallback(options.precision, fast_fp16, fast_int8, options.allow_precision_fallback)
    if options.dla_core is not None:
        if num_dla_cores <= 0:
            raise EngineBuildError("--dla: this device has no DLA (Jetson AGX Orin and Orin NX have 2 cores; Orin Nano "
                                   "and datacenter GPUs have none): drop --dla")
        if options.dla_core >= num_dla_cores:
            raise EngineBuildError(f"--dla {options.dla_core}: this device has DLA cores 0..{num_dla_cores - 1}")
        if precision == "fp32":
            raise EngineBuildError("the DLA runs fp16 or int8 only and this GPU falls back to fp32: drop --dla")
        notes.append(f"DLA core {options.dla_core} with GPU fallback (attention layers run on the GPU)")
    fallback = ("GPU_FALLBACK",) if options.dla_core is not None else ()
    if major == MIN_TRT_MAJOR:
        flags: tuple[str, ...] = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8", "FP16") if fast_fp16 else ("INT8",)}[precision]
        calibrate = precision == "int8" and not onnx_has_qdq
        if precision == "int8" and onnx_has_qdq:
            notes.append(f"{onnx_name} has Q/DQ nodes: explicit quantization, no calibrator")
        if calibrate:
            if options.calib_dir is None:
                raise EngineBuildError(f"INT8 on TensorRT {trt_version} needs calibration images for {onnx_name} (it has "
                                       "no Q/DQ nodes): pass --calib-dir DIR with 100-500 defect-free line images, or "
                                       + MODELOPT_INT8_HINT)
            notes.append("INT8 entropy calibration (IInt8EntropyCalibrator2; deprecated since TensorRT 10.1)")
        return BuildPlan(major, precision, False, flags + fallback, calibrate, False, options.dla_core, tuple(notes))
    # TensorRT 11+: strongly typed only
    if precision == "int8" and not onnx_has_qdq:
        raise EngineBuildError(f"TensorRT {trt_version} builds INT8 only from explicit quantization and {onnx_name} has "
                               "no QuantizeLinear/DequantizeLinear nodes (TensorRT 11 removed calibrators): "
                               + MODELOPT_INT8_HINT)
    convert = precision == "fp16" and not onnx_has_fp16
    if convert:
        notes.append(f"strongly typed fp16: {onnx_name} converted to float16 (I/O types kept) before parsing")
    if options.calib_dir is not None and precision != "fp32":
        notes.append("--calib-dir is used for the parity check only (TensorRT 11 has no calibrators)")
    return BuildPlan(major, precision, True, fallback, False, convert, options.dla_core, tuple(notes))


def onnx_facts(model: Any) -> dict[str, Any]:
    """What the plan needs from an ONNX ``ModelProto``: inputs (name, shape with None for symbolic dims),
    output names, and whether it has Q/DQ nodes or float16 tensors."""
    import onnx

    def shape(vi: Any) -> list[int | None]:
        return [int(d.dim_value) if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]

    inits = {i.name for i in model.graph.initializer}
    inputs = [(vi.name, shape(vi)) for vi in model.graph.input if vi.name not in inits]
    fp16 = any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    return {"inputs": inputs, "outputs": [o.name for o in model.graph.output],
            "has_qdq": any(n.op_type in QDQ_OPS for n in model.graph.node), "has_fp16": fp16}


def profile_shapes(inputs: list[tuple[str, list[int | None]]], options: BuildOptions
                   ) -> dict[str, dict[str, list[int]]]:
    """Optimisation profile over the batch axis: input -> {"min": [1, ...], "opt": [opt, ...], "max": [max, ...]}.

    Raises:
        EngineBuildError: an input whose non-batch dimensions are not fixed numbers.
    """
    out = {}
    for name, dims in inputs:
        if not dims or any(d is None for d in dims[1:]):
            raise EngineBuildError(f"input '{name}' has shape {dims}: only the batch axis (the first) may be dynamic; "
                                   "re-export the ONNX file with fixed H and W")
        rest = [int(d) for d in dims[1:]]
        out[name] = {"min": [1, *rest], "opt": [options.opt_batch, *rest], "max": [options.max_batch, *rest]}
    return out
