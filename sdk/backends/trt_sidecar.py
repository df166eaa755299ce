"""TensorRT engine sidecars: what an engine was built for, and the check that refuses a stale engine.

Every engine file in a bundle (``detector.fp16.sm87.engine``) has a JSON sidecar next to it
(``detector.fp16.sm87.engine.json``) recording the TensorRT version, GPU name and compute capability,
the sha256 of the ONNX file it was built from, precision, optimisation profile, DLA core and builder
settings. TensorRT engines are tied to the TensorRT version and GPU architecture they were built with,
so :func:`check_sidecar` compares the sidecar with the running system and the bundle and raises
:class:`~protoinspect.sdk.errors.BundleError` carrying the exact rebuild command on any mismatch.

Pure Python (no tensorrt, no pycuda): the builder (``export/build_engine.py``) writes sidecars with
:func:`make_sidecar`, the runtime (:mod:`protoinspect.sdk.backends.trt_backend`) reads and checks them.
Bundle file names are plain (no folders), so engines sit beside the ONNX files; the manifest's
``extra["tensorrt"]["engines"]`` lists them, read as ``bundle.manifest.tensorrt`` (:func:`engine_entries`).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protoinspect.sdk.errors import BundleError, ConfigError

if TYPE_CHECKING:
    from protoinspect.sdk.manifest_sections import EngineRecord, TensorRTSection

SIDECAR_FORMAT = "protoinspect-trt-engine"
SIDECAR_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8")
#: Keys a sidecar must have (more are allowed: parity results, host details, ...).
REQUIRED_KEYS = ("format", "format_version", "engine_file", "onnx_file", "onnx_sha256", "tensorrt_version",
                 "gpu_name", "compute_capability", "precision", "profile", "dla_core", "built_utc", "builder")
#: Optional key: the engine's plugin layers, ``[{"id": "namespace::name", "aot": bool}]``
#: (``protoinspect.export.trt_plugins.plugin_layers``); absent = no plugin layers.
PLUGINS_KEY = "plugins"
#: ``manifest.extra`` key under which built engines are listed.
EXTRA_KEY = "tensorrt"
DEFAULT_MAX_BATCH = 8
BUILD_SCRIPT = "python export/build_engine.py"


def engine_file_name(onnx_file: str, precision: str, compute_capability: str) -> str:
    """Plain bundle file name of an engine: ``detector.onnx``, fp16, 8.7 -> ``detector.fp16.sm87.engine``."""
    if precision not in PRECISIONS:
        msg = f"precision must be one of {PRECISIONS}, got {precision!r}"
        raise ConfigError(msg)
    stem = onnx_file[:-5] if onnx_file.endswith(".onnx") else onnx_file
    return f"{stem}.{precision}.sm{compute_capability.replace('.', '')}.engine"


def sidecar_file_name(engine_file: str) -> str:
    """``X.engine`` -> ``X.engine.json``."""
    return f"{engine_file}.json"


def version_key(version: str) -> tuple[int, ...]:
    """``"10.3.0.30"`` -> ``(10, 3, 0)``: engines are portable only within one major.minor.patch release.

    Raises:
        ConfigError: not a dotted version string starting with a number.
    """
    parts: list[int] = []
    for piece in str(version).split(".")[:3]:
        leading = re.match(r"\d+", piece)
        if leading is None:
            break
        parts.append(int(leading.group()))
    if not parts:
        msg = f"cannot read a TensorRT version from {version!r}"
        raise ConfigError(msg)
    return tuple(parts + [0] * (3 - len(parts)))


def rebuild_command(bundle_dir: str | Path, precision: str, *, dla_core: int | None = None,
                    max_batch: int = DEFAULT_MAX_BATCH, calib_dir: str | None = None) -> str:
    """The exact command that rebuilds the engines of a bundle with these settings (shell-quoted)."""
    parts = [BUILD_SCRIPT, shlex.quote(str(bundle_dir)), "--precision", precision]
    if calib_dir:
        parts += ["--calib-dir", shlex.quote(str(calib_dir))]
    if dla_core is not None:
        parts += ["--dla", str(int(dla_core))]
    if max_batch != DEFAULT_MAX_BATCH:
        parts += ["--max-batch", str(int(max_batch))]
    return " ".join(parts)


def make_sidecar(*, engine_file: str, onnx_file: str, onnx_sha256: str, tensorrt_version: str, gpu_name: str,
                 compute_capability: str, precision: str, profile: Mapping[str, Mapping[str, Sequence[int]]],
                 dla_core: int | None, built_utc: str, builder: Mapping[str, Any],
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A sidecar dict (validated; JSON-safe).

    Args:
        engine_file / onnx_file: bundle file names of the engine and of the ONNX it was built from.
        onnx_sha256: the ONNX file's sha256 as listed in the bundle manifest.
        tensorrt_version: ``tensorrt.__version__`` of the builder.
        gpu_name / compute_capability: the build GPU (e.g. ``"Orin"``, ``"8.7"``).
        precision: ``fp32``, ``fp16`` or ``int8`` (what was asked; ``builder`` records flags actually set).
        profile: input name -> {"min", "opt", "max"} shapes of the optimisation profile.
        dla_core: DLA core the engine targets (GPU fallback on), or None for GPU only.
        built_utc: ISO-8601 UTC build time.
        builder: builder settings (flags, strongly_typed, workspace, optimisation level, timing cache,
            calibration, build seconds, ...).
        extra: more keys (e.g. ``parity``) merged at top level.

    Raises:
        BundleError: the result would not pass :func:`validate_sidecar`.
    """
    sidecar: dict[str, Any] = {
        "format": SIDECAR_FORMAT, "format_version": SIDECAR_VERSION, "engine_file": engine_file,
        "onnx_file": onnx_file, "onnx_sha256": onnx_sha256, "tensorrt_version": str(tensorrt_version),
        "gpu_name": str(gpu_name), "compute_capability": str(compute_capability), "precision": precision,
        "profile": {name: {k: [int(v) for v in shapes[k]] for k in ("min", "opt", "max")}
                    for name, shapes in profile.items()},
        "dla_core": None if dla_core is None else int(dla_core), "built_utc": built_utc, "builder": dict(builder),
        **dict(extra or {}),
    }
    validate_sidecar(json.loads(json.dumps(sidecar)), sidecar_file_name(engine_file))
    return sidecar


def validate_sidecar(sidecar: Any, name: str) -> dict[str, Any]:
    """Check a parsed sidecar's schema; return it.

    Raises:
        BundleError: naming the file and the missing / badly typed key.
    """
    if not isinstance(sidecar, dict):
        raise BundleError(f"engine sidecar {name} must hold a JSON object, got {type(sidecar).__name__}")
    if sidecar.get("format") != SIDECAR_FORMAT:
        raise BundleError(f"engine sidecar {name}: 'format' is {sidecar.get('format')!r}, expected {SIDECAR_FORMAT!r}")
    if sidecar.get("format_version") != SIDECAR_VERSION:
        raise BundleError(f"engine sidecar {name}: format_version {sidecar.get('format_version')!r} is not "
                          f"{SIDECAR_VERSION}: rebuild the engine with {BUILD_SCRIPT}")
    missing = [k for k in REQUIRED_KEYS if k not in sidecar]
    if missing:
        raise BundleError(f"engine sidecar {name} lacks {missing}: rebuild the engine with {BUILD_SCRIPT}")
    strings = ("engine_file", "onnx_file", "onnx_sha256", "tensorrt_version", "gpu_name", "compute_capability",
               "built_utc")
    bad = [k for k in strings if not isinstance(sidecar[k], str) or not sidecar[k]]
    if sidecar["precision"] not in PRECISIONS:
        bad.append("precision")
    if sidecar["dla_core"] is not None and (not isinstance(sidecar["dla_core"], int) or sidecar["dla_core"] < 0):
        bad.append("dla_core")
    if not isinstance(sidecar["builder"], dict):
        bad.append("builder")
    if not isinstance(sidecar["profile"], dict) or not all(
            isinstance(p, dict) and all(isinstance(p.get(k), list) for k in ("min", "opt", "max"))
            for p in sidecar["profile"].values()):
        bad.append("profile")
    if PLUGINS_KEY in sidecar and not _valid_plugins(sidecar[PLUGINS_KEY]):
        bad.append(PLUGINS_KEY)
    if bad:
        raise BundleError(f"engine sidecar {name} has invalid {bad}: rebuild the engine with {BUILD_SCRIPT}")
    return sidecar


def _valid_plugins(plugins: Any) -> bool:
    return isinstance(plugins, list) and all(
        isinstance(p, dict) and isinstance(p.get("id"), str) and "::" in p["id"] and isinstance(p.get("aot"), bool)
        for p in plugins)


def runtime_plugins(sidecar: Mapping[str, Any]) -> list[str]:
    """Ids of the plugins that must be registered in the process that deserializes the engine: its plugin
    layers that were not built ahead of time (TensorRT embeds an AOT plugin's kernels in the engine)."""
    return sorted({p["id"] for p in sidecar.get(PLUGINS_KEY) or [] if not p["aot"]})


def read_sidecar(data: bytes, name: str) -> dict[str, Any]:
    """Parse and validate sidecar bytes (BundleError naming ``name`` when corrupt)."""
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"engine sidecar {name} is not valid JSON ({exc}): rebuild with {BUILD_SCRIPT}") from exc
    return validate_sidecar(parsed, name)


def sidecar_mismatches(sidecar: Mapping[str, Any], *, tensorrt_version: str, compute_capability: str,
                       onnx_sha256: str) -> list[str]:
    """Human-readable differences between an engine's sidecar and the running system / bundle (empty: usable)."""
    problems = []
    built, running = version_key(sidecar["tensorrt_version"]), version_key(tensorrt_version)
    if built != running:
        problems.append(f"built with TensorRT {sidecar['tensorrt_version']}, this is TensorRT {tensorrt_version}")
    if str(sidecar["compute_capability"]) != str(compute_capability):
        problems.append(f"built for compute capability {sidecar['compute_capability']} ({sidecar['gpu_name']}), "
                        f"this GPU is {compute_capability}")
    if sidecar["onnx_sha256"] != onnx_sha256:
        problems.append(f"built from a different {sidecar['onnx_file']} (sha256 {sidecar['onnx_sha256'][:12]}..., "
                        f"the bundle's is {onnx_sha256[:12]}...)")
    return problems


def check_sidecar(sidecar: Mapping[str, Any], *, bundle_dir: str | Path, tensorrt_version: str,
                  compute_capability: str, onnx_sha256: str) -> None:
    """Refuse an engine built for another TensorRT, GPU architecture or ONNX file.

    Raises:
        BundleError: listing every mismatch and ending with the exact rebuild command.
    """
    problems = sidecar_mismatches(sidecar, tensorrt_version=tensorrt_version,
                                  compute_capability=compute_capability, onnx_sha256=onnx_sha256)
    if problems:
        builder = sidecar["builder"]
        cmd = rebuild_command(bundle_dir, sidecar["precision"], dla_core=sidecar["dla_core"],
                              max_batch=int(builder.get("max_batch", DEFAULT_MAX_BATCH)),
                              calib_dir=builder.get("calib_dir"))
        msg = (f"engine {sidecar['engine_file']} in bundle {bundle_dir} cannot run here: " + "; ".join(problems)
               + f". Rebuild it on this machine with `{cmd}`")
        raise BundleError(msg)


def engine_entries(section: TensorRTSection | None, onnx_file: str) -> dict[str, EngineRecord]:
    """Engines listed in the manifest's TensorRT section (``bundle.manifest.tensorrt``) that were built from ``onnx_file``."""
    if section is None:
        return {}
    return {name: e for name, e in section.engines.items() if e.onnx_file == onnx_file}


def select_engine(section: TensorRTSection | None, onnx_file: str, compute_capability: str, *,
                  bundle_dir: str | Path, engine: str | None = None, precision: str | None = None) -> str:
    """The engine file to load for ``onnx_file`` on a GPU of ``compute_capability``, among the engines of
    the manifest's TensorRT section (``bundle.manifest.tensorrt``).

    ``engine`` picks one explicitly; otherwise the engines for this compute capability (and
    ``precision`` when given) are the candidates, and exactly one must remain.

    Raises:
        BundleError: no engine at all, or none for this GPU (with the build command).
        ConfigError: an unknown ``engine`` name, or several candidates (name them with ``engine=``).
    """
    entries = engine_entries(section, onnx_file)
    if engine is not None:
        if engine not in entries:
            msg = f"bundle {bundle_dir} has no engine {engine!r} for {onnx_file} (it has: {sorted(entries) or 'none'})"
            raise ConfigError(msg)
        return engine
    candidates = sorted(n for n, e in entries.items() if e.compute_capability == str(compute_capability)
                        and (precision is None or e.precision == precision))
    if not candidates:
        have = ", ".join(f"{n} (sm {e.compute_capability}, {e.precision})" for n, e in sorted(entries.items()))
        cmd = rebuild_command(bundle_dir, precision or "fp16")
        msg = (f"bundle {bundle_dir} has no TensorRT engine of {onnx_file} for this GPU (compute capability "
               f"{compute_capability}{', ' + precision if precision else ''}); engines present: {have or 'none'}. "
               f"Build one on this machine with `{cmd}`")
        raise BundleError(msg)
    if len(candidates) > 1:
        msg = f"bundle {bundle_dir} has several engines for this GPU: {candidates}; choose one with engine=NAME"
        raise ConfigError(msg)
    return candidates[0]
