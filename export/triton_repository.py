"""``protoinspect export-triton BUNDLE --repo DIR``: a Triton Inference Server model repository from a bundle.

Layout written (``V`` is the model version of the bundle, see below)::

    DIR/
      protoinspect_repository.json     # what was exported: bundle id, version map, models (Triton ignores it)
      detector/                        # platform "onnxruntime_onnx": the bundle's detector graph
        config.pbtxt
        V/model.onnx
      classifier/                      # the same, only when the bundle has classifier.onnx
        config.pbtxt
        V/model.onnx
      detector_trt/                    # platform "tensorrt_plan", only when the bundle holds TensorRT engines
        config.pbtxt                   #   (classifier_trt likewise); the plan runs only with the TensorRT
        V/model.plan                   #   version and GPU architecture it was built for: see `parameters`
      inspector/                       # backend "python": frames in, InspectionResult tensors out
        config.pbtxt
        V/model.py                     # protoinspect.export.triton_inspector_model
        V/bundle/                      # the bundle (manifest.json, every listed file, signature.json if any)

Every model: ``version_policy: specific [V]``, ``instance_group`` (count ``instances``; ``KIND_CPU`` or
``KIND_GPU`` from ``kind``; TensorRT plans are always ``KIND_GPU``), ``dynamic_batching`` (preferred sizes,
``max_queue_delay_microseconds``) when the graph batches, and ``parameters`` ``bundle_id`` (plus the
engine's TensorRT version, GPU, compute capability and precision for plans). Graph inputs/outputs (names,
data types, dims after the batch axis) are read from the ONNX graph itself. The inspector's tensors are
those of :mod:`protoinspect.sdk.triton_tensors`.

Versions: ``protoinspect_repository.json`` keeps ``versions`` (model version -> bundle id). Re-exporting
the same bundle keeps its number; another bundle gets the next integer (monotonic), so a client can tell
which bundle a server runs from the model version alone and check it against ``parameters.bundle_id``.

Safety: every ``config.pbtxt`` is generated and parsed back with tritonclient's ``ModelConfig`` protobuf
(:mod:`protoinspect.export.triton_config`) before anything is written; the repository is built in a hidden
``.<name>.tmp-*`` sibling and renamed into place. An existing non-empty ``DIR`` is refused unless
``overwrite`` (and even then only a repository this command wrote is replaced, never a foreign folder).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from protoinspect.export.triton_config import ModelSpec, TensorSpec, check_config, config_text, onnx_tensors
from protoinspect.sdk import triton_tensors
from protoinspect.sdk.backends.base import DETECTOR_OUTPUTS, onnx_file_name
from protoinspect.sdk.backends.trt_sidecar import engine_entries, read_sidecar, sidecar_file_name
from protoinspect.sdk.bundle import Bundle, load_bundle
from protoinspect.sdk.bundle_files import copy_source, fsync_dir, swap_into_place, write_text_fsync
from protoinspect.sdk.config import InspectorConfig
from protoinspect.sdk.errors import BundleError, ConfigError, ExportError, ProtoInspectError, report_error
from protoinspect.sdk.manifest import MANIFEST_NAME

REPO_MANIFEST = "protoinspect_repository.json"
REPO_FORMAT = "protoinspect-triton-repository"
CLASSIFIER_ONNX = "classifier.onnx"
SIGNATURE_FILE = "signature.json"  # protoinspect.sdk.bundle_signing.SIGNATURE_NAME: copied when present
INSPECTOR_MODEL = "inspector"
MODEL_PY_SOURCE = Path(__file__).with_name("triton_inspector_model.py")
KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}
PRECISION_ORDER = ("fp16", "int8", "fp32")


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be an integer >= 1, got {value!r}")
    return value


def _preferred(sizes: Sequence[int] | None, max_batch: int) -> tuple[int, ...]:
    """Preferred batch sizes clipped to ``max_batch`` (default: half the maximum and the maximum)."""
    if sizes is None:
        sizes = sorted({max(1, max_batch // 2), max_batch})
    return tuple(sorted({int(s) for s in sizes if int(s) <= max_batch})) or (max_batch,)


def _existing_repository(out: Path, overwrite: bool) -> dict[str, Any] | None:
    """The previous ``protoinspect_repository.json`` at ``out`` (None: nothing there); refuses what may not go."""
    if not (out.exists() or out.is_symlink()):
        return None
    if not out.is_dir():
        raise ExportError(f"--repo {out} exists and is not a directory: choose another path")
    if not any(out.iterdir()):
        return None
    if not overwrite:
        raise ExportError(f"model repository {out} exists and is not empty: nothing was written; pass --overwrite "
                          "(overwrite=True) to replace it, or choose another --repo path")
    marker = out / REPO_MANIFEST
    if not marker.is_file():
        raise ExportError(f"{out} is a non-empty folder without {REPO_MANIFEST} (not a repository written by "
                          "`protoinspect export-triton`): refusing to replace it even with --overwrite; choose an "
                          "empty or new --repo path")
    try:
        previous = json.loads(marker.read_text(encoding="utf-8"))
        if previous.get("format") != REPO_FORMAT or not isinstance(previous.get("versions"), dict):
            raise ValueError(f"format {previous.get('format')!r}")
    except (ValueError, OSError, AttributeError) as exc:
        raise ExportError(f"{marker} is unreadable ({exc}): remove {out} by hand if it may go") from exc
    return previous


def model_version(previous: dict[str, Any] | None, bundle_id: str, version: int | None) -> tuple[int, dict[str, str]]:
    """The model version of ``bundle_id`` and the repository's new version map (str(version) -> bundle id).

    The same bundle keeps its number; another bundle gets the next integer after every one recorded;
    ``version`` forces a number (it must not already belong to another bundle).
    """
    versions = {str(k): str(v) for k, v in (previous or {}).get("versions", {}).items()}
    if version is not None:
        _positive_int(version, "version")
        if versions.get(str(version), bundle_id) != bundle_id:
            raise ConfigError(f"model version {version} already belongs to bundle {versions[str(version)]}; "
                              "a version number names one bundle: leave --version out for the next free number")
        chosen = version
    else:
        same = [int(k) for k, v in versions.items() if v == bundle_id]
        chosen = max(same) if same else max((int(k) for k in versions), default=0) + 1
    versions[str(chosen)] = bundle_id
    return chosen, dict(sorted(versions.items(), key=lambda kv: int(kv[0])))


def _graph_spec(name: str, path: Path, *, platform: str, version: int, max_batch: int, preferred: Sequence[int] | None,
                delay_us: int, instances: int, kind: str, params: dict[str, str], **files: Any) -> ModelSpec:
    inputs, outputs, batched = onnx_tensors(path)
    mbs = max_batch if batched else 0
    return ModelSpec(name=name, platform=platform, backend=None, max_batch_size=mbs, inputs=inputs, outputs=outputs,
                     preferred_batch_sizes=_preferred(preferred, mbs) if mbs else (), max_queue_delay_us=delay_us,
                     instances=instances, kind=kind, version=version, parameters=params, **files)


def _choose_engines(bundle: Bundle, onnx_file: str, precision: str | None) -> dict[str, tuple[str, dict[str, Any]]]:
    """compute capability -> (engine file, sidecar) of ``onnx_file``'s engines of one precision ({} if none)."""
    entries = engine_entries(bundle.manifest.tensorrt, onnx_file)
    if not entries:
        return {}
    have = sorted({e.precision for e in entries.values()}, key=PRECISION_ORDER.index)
    if precision is not None and precision not in have:
        raise ConfigError(f"bundle {bundle.path} has no {precision} engine of {onnx_file} (it has: {have})")
    chosen = precision or have[0]
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, rec in sorted(entries.items()):
        if rec.precision != chosen:
            continue
        if rec.compute_capability in out:
            raise ConfigError(f"bundle {bundle.path} has several {chosen} engines of {onnx_file} for compute "
                              f"capability {rec.compute_capability}: {out[rec.compute_capability][0]}, {name}")
        sidecar_name = rec.sidecar or sidecar_file_name(name)
        out[rec.compute_capability] = (name, read_sidecar(bundle.read_bytes(sidecar_name), sidecar_name))
    return out


def _plan_spec(name: str, onnx_path: Path, engines: dict[str, tuple[str, dict[str, Any]]], *, version: int,
               max_batch: int, preferred: Sequence[int] | None, delay_us: int, instances: int,
               bundle_id: str) -> tuple[ModelSpec, dict[str, str]]:
    """The tensorrt_plan model of one graph's engines and its files (plan file name -> engine file)."""
    profile_max = min(int(s["max"][0]) for _, side in engines.values() for s in side["profile"].values())
    files = ({"model.plan": engines[next(iter(engines))][0]} if len(engines) == 1 else
             {f"model.sm{cc.replace('.', '')}.plan": e for cc, (e, _) in engines.items()})
    cc_files = {} if len(engines) == 1 else {cc: f"model.sm{cc.replace('.', '')}.plan" for cc in engines}
    sides = [side for _, side in engines.values()]
    params = {"bundle_id": bundle_id, "precision": sides[0]["precision"],
              "tensorrt_version": ",".join(sorted({s["tensorrt_version"] for s in sides})),
              "compute_capability": ",".join(sorted(engines)), "gpu_name": ",".join(sorted({s["gpu_name"] for s in sides})),
              "engine_files": ",".join(e for e, _ in engines.values()), "onnx_sha256": sides[0]["onnx_sha256"],
              "requires": "a server whose TensorRT has the same major.minor.patch as tensorrt_version and a GPU of "
                          "one of these compute capabilities; rebuild the engines otherwise"}
    spec = _graph_spec(name, onnx_path, platform="tensorrt_plan", version=version, max_batch=min(max_batch, profile_max),
                       preferred=preferred, delay_us=delay_us, instances=instances, kind="KIND_GPU", params=params,
                       default_model_filename="model.plan" if len(engines) == 1 else None, cc_model_filenames=cc_files)
    return spec, files


def _inspector_spec(detector_outputs: Sequence[TensorSpec], *, version: int, max_batch: int,
                    preferred: Sequence[int] | None, delay_us: int, instances: int, kind: str,
                    params: dict[str, str]) -> ModelSpec:
    amap = next((t for t in detector_outputs if t.name == DETECTOR_OUTPUTS[0]), None)
    map_dims = list(amap.dims[-2:]) if amap is not None and len(amap.dims) >= 2 else [-1, -1]
    name, dtype, dims = triton_tensors.INPUT
    outputs = tuple(TensorSpec(n, t, tuple(map_dims if d is None else d)) for n, (t, d) in triton_tensors.OUTPUTS.items())
    return ModelSpec(name=INSPECTOR_MODEL, platform=None, backend="python", max_batch_size=max_batch,
                     inputs=(TensorSpec(name, dtype, tuple(dims)),), outputs=outputs,
                     preferred_batch_sizes=_preferred(preferred, max_batch), max_queue_delay_us=delay_us,
                     instances=instances, kind=kind, version=version, parameters=params)


def _write_model(tmp: Path, spec: ModelSpec, files: dict[str, Path]) -> None:
    text = config_text(spec)
    check_config(text, spec)
    (tmp / spec.name / str(spec.version)).mkdir(parents=True)
    write_text_fsync(tmp / spec.name / "config.pbtxt", text)
    for target, source in files.items():
        with open(tmp / spec.name / str(spec.version) / target, "wb") as f:
            copy_source(target, source, f)


def _copy_bundle(bundle: Bundle, dest: Path) -> None:
    dest.mkdir(parents=True)
    names = [*sorted(bundle.manifest.files), MANIFEST_NAME]
    names += [SIGNATURE_FILE] if (bundle.path / SIGNATURE_FILE).is_file() else []
    for name in names:
        with open(dest / name, "wb") as f:
            copy_source(name, bundle.path / name, f)
    load_bundle(dest, verify=True)  # the copy is intact (sha256 of every file)


def _swap(tmp: Path, out: Path) -> None:
    """Put the finished ``tmp`` at ``out``; an old repository there is kept until the rename worked."""
    try:
        swap_into_place(tmp, out, what="model repository")
    except BundleError as exc:
        raise ExportError(str(exc)) from exc


def export_triton_repository(bundle_dir: str | os.PathLike[str], repo_dir: str | os.PathLike[str], *,
                             overwrite: bool = False, max_batch_size: int = 8,
                             preferred_batch_sizes: Sequence[int] | None = None, max_queue_delay_us: int = 2000,
                             instances: int = 1, kind: str = "cpu", version: int | None = None,
                             trt_precision: str | None = None,
                             inspector_config: InspectorConfig | None = None) -> dict[str, Any]:
    """Write the Triton model repository of a bundle (layout and rules: the module docstring).

    Args:
        bundle_dir: an exported bundle (with ``detector.onnx``; ``classifier.onnx`` and engines optional).
        repo_dir: the repository folder to create (or replace, with ``overwrite``).
        overwrite: replace an existing repository written by this command.
        max_batch_size: the models' ``max_batch_size`` (a TensorRT plan's is capped by its profile).
        preferred_batch_sizes: dynamic batching's preferred sizes (default: half the maximum and the maximum).
        max_queue_delay_us: how long dynamic batching waits to fill a batch.
        instances: model instances per model (``instance_group.count``).
        kind: ``"cpu"`` or ``"gpu"``: where the ONNX Runtime and inspector instances run.
        version: force the model version number (default: the repository's number for this bundle).
        trt_precision: which engines become the ``*_trt`` models when there are several precisions
            (default: fp16, then int8, then fp32).
        inspector_config: the inspector model's runtime settings (default ``InspectorConfig()``: BGR frames).

    Returns:
        The repository record also written to ``DIR/protoinspect_repository.json``.

    Raises:
        BundleError: the bundle is missing, corrupt, or has no ONNX graph (run ``protoinspect export BUNDLE``).
        ExportError: ``repo_dir`` exists and is not empty without ``overwrite`` (nothing written), is not a
            repository of this command, or a generated config fails the ModelConfig check.
        ConfigError: a bad batch size, instance count, kind, version or precision.
        MissingDependencyError: tritonclient or onnx is not installed.
    """
    import protoinspect.sdk

    max_batch = _positive_int(max_batch_size, "max_batch_size")
    instances = _positive_int(instances, "instances")
    if kind not in KINDS:
        raise ConfigError(f"kind must be 'cpu' or 'gpu', got {kind!r}")
    if isinstance(max_queue_delay_us, bool) or not isinstance(max_queue_delay_us, int) or max_queue_delay_us < 0:
        raise ConfigError(f"max_queue_delay_us must be an integer >= 0, got {max_queue_delay_us!r}")
    if preferred_batch_sizes is not None:
        [_positive_int(s, "preferred batch size") for s in preferred_batch_sizes]
    bundle = load_bundle(bundle_dir, verify=True)
    bundle_id = bundle.manifest.bundle_id
    detector_file = onnx_file_name(bundle)
    if detector_file not in bundle.manifest.files:
        raise BundleError(f"bundle {bundle.path} has no ONNX graph ({detector_file}): run `protoinspect export "
                          f"{bundle.path}` first, then export-triton again")
    out = Path(repo_dir).resolve()
    previous = _existing_repository(out, overwrite)
    number, versions = model_version(previous, bundle_id, version)
    common = {"version": number, "max_batch": max_batch, "preferred": preferred_batch_sizes,
              "delay_us": max_queue_delay_us, "instances": instances}
    base_params = {"bundle_id": bundle_id, "protoinspect_version": protoinspect.sdk.__version__}
    graphs = [("detector", detector_file)] + ([("classifier", CLASSIFIER_ONNX)]
                                              if CLASSIFIER_ONNX in bundle.manifest.files else [])
    models: list[tuple[ModelSpec, dict[str, Path]]] = []
    for name, onnx_file in graphs:
        spec = _graph_spec(name, bundle.path / onnx_file, platform="onnxruntime_onnx", kind=KINDS[kind],
                           params={**base_params, "source_file": onnx_file,
                                   "onnx_sha256": str(bundle.manifest.files[onnx_file]["sha256"])}, **common)
        models.append((spec, {"model.onnx": bundle.path / onnx_file}))
        engines = _choose_engines(bundle, onnx_file, trt_precision)
        if engines:
            plan, plan_files = _plan_spec(f"{name}_trt", bundle.path / onnx_file, engines, bundle_id=bundle_id, **common)
            models.append((plan, {target: bundle.path / engine for target, engine in plan_files.items()}))
    cfg = inspector_config if inspector_config is not None else InspectorConfig()
    inspector = _inspector_spec(models[0][0].outputs, kind=KINDS[kind], **common, params={
        **base_params, "runtime": "onnxruntime", "inspector_config": json.dumps(cfg.to_dict(), sort_keys=True)})
    models.append((inspector, {"model.py": MODEL_PY_SOURCE}))
    for spec, _ in models:  # every config checked before anything is written
        check_config(config_text(spec), spec)

    record = {"format": REPO_FORMAT, "format_version": 1, "bundle_id": bundle_id, "bundle_source": str(bundle.path),
              "version": number, "versions": versions, "protoinspect_version": protoinspect.sdk.__version__,
              "exported_utc": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
              "models": {spec.name: {"platform": spec.platform, "backend": spec.backend, "version": spec.version,
                                     "max_batch_size": spec.max_batch_size, "files": sorted(files),
                                     "inputs": [t.name for t in spec.inputs], "outputs": [t.name for t in spec.outputs],
                                     "parameters": dict(spec.parameters)} for spec, files in models}}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for spec, files in models:
            _write_model(tmp, spec, files)
        _copy_bundle(bundle, tmp / INSPECTOR_MODEL / str(number) / "bundle")
        write_text_fsync(tmp / REPO_MANIFEST, json.dumps(record, indent=2, sort_keys=True) + "\n")
        fsync_dir(tmp)
        _swap(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**record, "repo": str(out)}


def main(argv: Sequence[str] | None = None) -> int:
    """``protoinspect export-triton BUNDLE --repo DIR [--overwrite] [--max-batch N] [--instances N] [--kind cpu|gpu]``."""
    p = argparse.ArgumentParser(prog="protoinspect export-triton",
                                description="Write a Triton Inference Server model repository from an exported bundle.")
    p.add_argument("bundle", help="bundle folder with detector.onnx (run `protoinspect export BUNDLE` first)")
    p.add_argument("--repo", required=True, help="model repository folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing repository written by this command")
    p.add_argument("--max-batch", type=int, default=8, help="max_batch_size of every model (default 8)")
    p.add_argument("--preferred-batch", type=int, nargs="+", default=None, help="dynamic batching's preferred sizes")
    p.add_argument("--queue-delay-us", type=int, default=2000, help="dynamic batching's max queue delay (default 2000)")
    p.add_argument("--instances", type=int, default=1, help="instances per model (default 1)")
    p.add_argument("--kind", choices=tuple(KINDS), default="cpu", help="instance kind of the ONNX / inspector models")
    p.add_argument("--version", type=int, default=None, help="force the model version number")
    p.add_argument("--trt-precision", choices=PRECISION_ORDER, default=None, help="engines to serve as *_trt models")
    p.add_argument("--color-order", choices=("bgr", "rgb"), default="bgr", help="channel order of the frames sent")
    p.add_argument("--trusted-key", action="append", default=[], metavar="PUB",
                   help="public key (PEM file) the server's inspector requires the bundle to be signed by; repeatable")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        keys = []
        for path in args.trusted_key:
            try:
                keys.append(Path(path).read_text())
            except OSError as exc:
                raise ConfigError(f"--trusted-key {path}: cannot read the public key: {exc}") from exc
        record = export_triton_repository(
            args.bundle, args.repo, overwrite=args.overwrite, max_batch_size=args.max_batch,
            preferred_batch_sizes=args.preferred_batch, max_queue_delay_us=args.queue_delay_us,
            instances=args.instances, kind=args.kind, version=args.version, trt_precision=args.trt_precision,
            inspector_config=InspectorConfig(color_order=args.color_order, trusted_keys=tuple(keys)))
    except ProtoInspectError as exc:
        return report_error(exc)
    print(f"wrote Triton model repository {record['repo']} (bundle {record['bundle_id']}, model version "
          f"{record['version']})")
    for name, model in record["models"].items():
        print(f"  {name:<14} {model['platform'] or model['backend']:<17} max_batch_size {model['max_batch_size']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
