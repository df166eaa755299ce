"""Build TensorRT engines for every ONNX file of a bundle, check them against ONNX Runtime, add them to it.

Usage (on the target machine: engines are specific to the TensorRT version and GPU)::

    python export/build_engine.py BUNDLE_DIR --precision fp32|fp16|int8 [--calib-dir DIR] [--dla N]
        [--workspace-gib G] [--timing-cache F] [--allow-precision-fallback] [--max-batch N]
    python -m protoinspect.export.build_engine ...   |   protoinspect build-engine ...

For ``detector.onnx`` (and ``classifier.onnx`` when present) it parses the ONNX file, logs every input
and output, sets the precision as :func:`protoinspect.export.trt_config.plan_build` decides for this TensorRT
version (10: builder flags + INT8 entropy calibration from ``--calib-dir`` images through
``protoinspect.sdk.preprocess``; 11+: strongly typed, fp16 by converting the ONNX file, INT8 only from Q/DQ nodes),
adds an optimisation profile over the batch axis (1 / opt / max), loads and saves the timing cache,
sets the builder optimisation level and the DLA core (GPU fallback on), and serialises the engine.
Each engine is then run next to ONNX Runtime (CPU) on random frames and calibration images with the
tolerances of :mod:`protoinspect.export.trt_parity`; only if every engine passes are ``<stem>.<precision>.sm<cc>.engine``
and its sidecar ``.engine.json`` added to the bundle and listed in ``manifest.extra["tensorrt"]``
(``bundle.manifest.tensorrt``; the manifest's digest is recomputed by :func:`protoinspect.sdk.bundle.add_files`).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, "") and importlib.util.find_spec("protoinspect") is None:
    # run as ``python export/build_engine.py`` from a checkout that was never installed
    sys.exit("protoinspect is not installed: run `pip install -e .` in the repository root first "
             "(its folders import as protoinspect.export, protoinspect.sdk, ...)")

from protoinspect.export.trt_calibration import (  # noqa: E402
    calibration_batch_size,
    calibration_batches,
    calibration_images,
    make_entropy_calibrator,
)
from protoinspect.export.trt_config import (  # noqa: E402
    BuildOptions,
    EngineBuildError,
    fast_precisions,
    onnx_facts,
    plan_build,
    profile_shapes,
)
from protoinspect.export.trt_parity import batch_slices, compare_outputs, detector_frames, merge_reports, random_inputs  # noqa: E402
from protoinspect.sdk._imports import require  # noqa: E402
from protoinspect.sdk.backends.base import onnx_file_name  # noqa: E402
from protoinspect.sdk.backends.trt_sidecar import EXTRA_KEY, engine_file_name, make_sidecar, sidecar_file_name  # noqa: E402
from protoinspect.sdk import config_codec  # noqa: E402
from protoinspect.sdk.bundle import Bundle, add_files, load_bundle  # noqa: E402
from protoinspect.sdk.manifest_sections import EngineRecord, TensorRTSection  # noqa: E402
from protoinspect.sdk.errors import BundleError, ProtoInspectError  # noqa: E402

logger = logging.getLogger(__name__)
CLASSIFIER_ONNX = "classifier.onnx"
PARITY_RANDOM_FRAMES = 4


@dataclasses.dataclass
class BuiltEngine:
    """One engine built in memory (added to the bundle only after every parity check passed)."""

    onnx_file: str
    engine_file: str
    data: bytes
    sidecar: dict[str, Any]
    inputs: list[tuple[str, list[int | None]]]


def bundle_onnx_files(bundle: Bundle) -> list[str]:
    """The bundle's ONNX graphs to build: the detector's, then ``classifier.onnx`` when listed."""
    detector = onnx_file_name(bundle)
    if detector not in bundle.manifest.files:
        raise BundleError(f"bundle {bundle.path} has no {detector}: run `protoinspect export {bundle.path}` first")
    return [detector] + ([CLASSIFIER_ONNX] if CLASSIFIER_ONNX in bundle.manifest.files else [])


def options_for(onnx_file: str, detector_file: str, options: BuildOptions) -> tuple[BuildOptions, list[str]]:
    """The classifier takes region tokens, not images: no image calibration and no DLA (attention layers)."""
    if onnx_file == detector_file:
        return options, []
    notes = []
    if options.precision == "int8":
        notes.append(f"{onnx_file}: fp16 instead of int8 (its inputs are feature tokens, not calibration images)")
        options = dataclasses.replace(options, precision="fp16")
    if options.dla_core is not None:
        notes.append(f"{onnx_file}: GPU only (transformer layers do not run on the DLA)")
        options = dataclasses.replace(options, dla_core=None)
    return options, notes


def network_flags(trt: Any, strongly_typed: bool) -> int:
    """``create_network`` flags: the STRONGLY_TYPED bit when asked for and the enum still has it (where a
    TensorRT version dropped the member, its networks are strongly typed anyway)."""
    member = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
    return 1 << int(member) if strongly_typed and member is not None else 0


def _build_one(trt: Any, cuda: Any, gpu: Any, bundle: Bundle, onnx_file: str, options: BuildOptions,
               calib_paths: list[Path], timing_cache: bytes) -> tuple[BuiltEngine, bytes]:
    import onnx

    from protoinspect.export.onnx_fp16 import convert_to_fp16

    trt_logger = trt.Logger(trt.Logger.WARNING)
    onnx_bytes = bundle.read_bytes(onnx_file)  # size and sha256 checked against the manifest
    model = onnx.load_from_string(onnx_bytes)
    facts = onnx_facts(model)
    builder = trt.Builder(trt_logger)
    fast16, fast8 = fast_precisions(builder, gpu.compute_capability)
    plan = plan_build(trt.__version__, options, onnx_name=onnx_file, onnx_has_qdq=facts["has_qdq"],
                      onnx_has_fp16=facts["has_fp16"], fast_fp16=fast16, fast_int8=fast8,
                      num_dla_cores=int(getattr(builder, "num_DLA_cores", 0) or 0))
    for note in plan.notes:
        logger.info("%s: %s", onnx_file, note)
    to_parse = convert_to_fp16(model).SerializeToString() if plan.convert_fp16 else onnx_bytes
    network = builder.create_network(network_flags(trt, plan.strongly_typed))
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(to_parse):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(f"TensorRT {trt.__version__} cannot parse {onnx_file}:\n  - " + "\n  - ".join(errors))
    for kind, count, get in (("input", network.num_inputs, network.get_input),
                             ("output", network.num_outputs, network.get_output)):
        for i in range(count):
            t = get(i)
            logger.info("%s %s %s: %s %s", onnx_file, kind, t.name, tuple(t.shape), t.dtype)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    config.builder_optimization_level = options.builder_optimization_level
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    config.set_timing_cache(config.create_timing_cache(timing_cache), False)
    shapes = profile_shapes(facts["inputs"], options)
    profile = builder.create_optimization_profile()
    for name, s in shapes.items():
        profile.set_shape(name, s["min"], s["opt"], s["max"])
    config.add_optimization_profile(profile)
    if plan.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core
    calibrator, calib_batch = None, 0
    if plan.calibrate:
        calib_batch = calibration_batch_size(len(calib_paths), options.max_batch)
        (name, s), = shapes.items()
        shape = (calib_batch, *s["min"][1:])
        calib_profile = builder.create_optimization_profile()
        calib_profile.set_shape(name, shape, shape, shape)
        config.set_calibration_profile(calib_profile)
        spec = bundle.manifest.preprocess_spec
        calibrator = make_entropy_calibrator(trt, cuda, calibration_batches(calib_paths, spec, calib_batch), shape)
        config.int8_calibrator = calibrator

    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise EngineBuildError(f"TensorRT {trt.__version__} could not build an engine of {onnx_file} "
                               f"({plan.precision}, flags {list(plan.builder_flags)}): see its log above")
    engine_file = engine_file_name(onnx_file, plan.precision, gpu.compute_capability)
    calibration = None if calibrator is None else {
        "images": len(calib_paths), "batch": calib_batch, "batches": calibrator.batches_served,
        "cache_sha256": calibrator.cache_sha256}
    from protoinspect.sdk.device_info import host_summary

    sidecar = make_sidecar(
        engine_file=engine_file, onnx_file=onnx_file, onnx_sha256=str(bundle.manifest.files[onnx_file]["sha256"]),
        tensorrt_version=trt.__version__, gpu_name=gpu.name, compute_capability=gpu.compute_capability,
        precision=plan.precision, profile=shapes, dla_core=plan.dla_core,
        built_utc=datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        builder={"requested_precision": options.precision,
                 **{k: v for k, v in options.to_dict().items() if k != "precision"},
                 "trt_major": plan.trt_major, "strongly_typed": plan.strongly_typed, "flags": list(plan.builder_flags),
                 "onnx_converted_fp16": plan.convert_fp16, "gpu_fallback": plan.dla_core is not None,
                 "calibration": calibration, "notes": list(plan.notes), "build_seconds": round(seconds, 2)},
        extra={"host": host_summary()})
    logger.info("built %s in %.1f s (%.1f MB)", engine_file, seconds, len(serialized) / 1e6)
    new_cache = bytes(config.get_timing_cache().serialize())
    return BuiltEngine(onnx_file, engine_file, bytes(serialized), sidecar, facts["inputs"]), new_cache


def _parity(trt: Any, cuda: Any, gpu: Any, bundle: Bundle, built: BuiltEngine, options: BuildOptions,
            calib_paths: list[Path], detector_file: str) -> dict[str, Any]:
    """Engine vs ONNX Runtime (CPU, the float32 ONNX file) in batches of 1 and 3."""
    import numpy as np

    from protoinspect.sdk.backends.trt_runtime import EngineRunner

    ort = require("onnxruntime")
    session = ort.InferenceSession(bundle.read_bytes(built.onnx_file), providers=["CPUExecutionProvider"])
    runner = EngineRunner(trt, cuda, gpu, built.data, name=built.engine_file)
    rng = np.random.default_rng()
    try:
        if built.onnx_file == detector_file:
            spec = bundle.manifest.preprocess_spec
            inputs = {built.inputs[0][0]: detector_frames(spec, calib_paths, PARITY_RANDOM_FRAMES, rng)}
        else:
            inputs = random_inputs(built.inputs, 2 * PARITY_RANDOM_FRAMES, rng, {s.name: s.dtype for s in runner.inputs})
        n = len(next(iter(inputs.values())))
        reports = []
        for sl in batch_slices(n, options.max_batch):
            feed = {k: np.ascontiguousarray(v[sl]) for k, v in inputs.items()}
            names = [o.name for o in session.get_outputs()]
            reference = dict(zip(names, session.run(names, feed)))
            reports.append(compare_outputs(reference, runner.run(feed), built.sidecar["precision"]))
    finally:
        runner.close()
    return {**merge_reports(reports), "frames": n, "reference": f"onnxruntime {ort.__version__} CPUExecutionProvider"}


def build_engine(bundle_dir: str | Path, *, precision: str = "fp16", calib_dir: str | Path | None = None,
                 dla_core: int | None = None, workspace_gib: float = 4.0, timing_cache: str | Path | None = None,
                 allow_precision_fallback: bool = False, max_batch: int = 8, opt_batch: int = 1,
                 builder_optimization_level: int = 3, calib_images: int = 64, verify: bool = True) -> list[dict]:
    """Build, verify and add the engines of every ONNX file in ``bundle_dir`` (see the module docstring).

    Returns:
        One dict per engine: its sidecar plus ``path``.

    Raises:
        ConfigError: invalid options. BundleError: invalid bundle or no ``detector.onnx``.
        MissingDependencyError: tensorrt, pycuda or onnxruntime missing.
        EngineBuildError: parse / build failure, unsupported precision or DLA, failed parity (the bundle is
            then unchanged).
    """
    options = BuildOptions(precision=precision, calib_dir=None if calib_dir is None else Path(calib_dir),
                           dla_core=dla_core, workspace_gib=workspace_gib,
                           timing_cache=None if timing_cache is None else Path(timing_cache),
                           allow_precision_fallback=allow_precision_fallback, max_batch=max_batch, opt_batch=opt_batch,
                           builder_optimization_level=builder_optimization_level, calib_images=calib_images,
                           verify=verify)
    bundle = load_bundle(bundle_dir)
    files = bundle_onnx_files(bundle)
    trt = require("tensorrt")
    cuda = require("pycuda.driver")
    from protoinspect.sdk.backends.trt_runtime import CudaDevice

    calib_paths = calibration_images(options.calib_dir, options.calib_images) if options.calib_dir else []
    cache = options.timing_cache.read_bytes() if options.timing_cache and options.timing_cache.is_file() else b""
    gpu = CudaDevice(cuda, 0)
    built: list[BuiltEngine] = []
    try:
        with gpu:
            for onnx_file in files:
                file_options, notes = options_for(onnx_file, files[0], options)
                for note in notes:
                    logger.info(note)
                engine, cache = _build_one(trt, cuda, gpu, bundle, onnx_file, file_options, calib_paths, cache)
                built.append(engine)
            if options.timing_cache is not None:
                options.timing_cache.write_bytes(cache)
                logger.info("timing cache saved to %s (%d bytes)", options.timing_cache, len(cache))
            for engine in built if options.verify else []:
                engine.sidecar["parity"] = report = _parity(trt, cuda, gpu, bundle, engine, options, calib_paths, files[0])
                if not report["passed"]:
                    raise EngineBuildError(f"{engine.engine_file} disagrees with ONNX Runtime beyond the "
                                           f"{engine.sidecar['precision']} tolerance: {'; '.join(report['failed'])}; "
                                           "the bundle was not changed")
    finally:
        gpu.release()
    section = bundle.manifest.tensorrt or TensorRTSection()
    engines = dict(section.engines)
    files_out: dict[str, bytes] = {}
    for e in built:
        files_out[e.engine_file] = e.data
        files_out[sidecar_file_name(e.engine_file)] = (json.dumps(e.sidecar, indent=2, sort_keys=True) + "\n").encode()
        recorded = ("onnx_file", "precision", "compute_capability", "tensorrt_version", "dla_core", "gpu_name")
        engines[e.engine_file] = EngineRecord(**{k: e.sidecar[k] for k in recorded},
                                              sidecar=sidecar_file_name(e.engine_file))
    section = dataclasses.replace(section, engines=engines)
    add_files(bundle.path, files_out, extra={EXTRA_KEY: config_codec.to_dict(section)})
    return [{**e.sidecar, "path": str(bundle.path / e.engine_file)} for e in built]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI; exit 0 on success, 1 when the build or parity failed, 2 for other errors (bad options, bundle)."""
    p = argparse.ArgumentParser(prog="python export/build_engine.py", description=__doc__.splitlines()[0])
    p.add_argument("bundle", help="model bundle directory (with detector.onnx)")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), required=True)
    p.add_argument("--calib-dir", help="images for INT8 calibration and the parity check (searched recursively)")
    p.add_argument("--dla", type=int, default=None, metavar="N", help="DLA core (Jetson AGX Orin / Orin NX), GPU fallback on")
    p.add_argument("--workspace-gib", type=float, default=4.0, help="builder workspace limit in GiB (default 4)")
    p.add_argument("--timing-cache", help="timing cache file: loaded when it exists, saved after the build")
    p.add_argument("--allow-precision-fallback", action="store_true",
                   help="build the best precision the GPU has instead of failing when it lacks the requested one")
    p.add_argument("--max-batch", type=int, default=8, help="largest batch of the optimisation profile (default 8)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        results = build_engine(args.bundle, precision=args.precision, calib_dir=args.calib_dir, dla_core=args.dla,
                               workspace_gib=args.workspace_gib, timing_cache=args.timing_cache,
                               allow_precision_fallback=args.allow_precision_fallback, max_batch=args.max_batch)
    except EngineBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ProtoInspectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for r in results:
        parity = r.get("parity")
        checked = "not checked" if parity is None else (
            "max |diff| " + ", ".join(f"{k} {v:.3g}" for k, v in parity["max_abs_diff"].items())
            + f" (tolerance {parity['tolerance']:g} x scale)")
        print(f"{r['path']}: TensorRT {r['tensorrt_version']}, {r['gpu_name']} sm {r['compute_capability']}, "
              f"{r['precision']}, batch 1..{r['builder']['max_batch']}; parity vs onnxruntime: {checked}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
