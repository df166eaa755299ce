"""Region quality of the runtime regions against ground truth, and the weight-free descriptor baseline.

    python -m protoinspect.training.evaluate_regions --data DIR --bundle BUNDLE [--json OUT] [--limit N]
        [--region-method runtime|threshold|peak]

Over the anomalous test images: the bundle's detector (torch weights, identity view, as
:mod:`protoinspect.training.evaluate_discovery`) gives the model-size map; the runtime's region stage
(:func:`protoinspect.sdk.inspector_stages.default_regions` with the default
:class:`~protoinspect.sdk.config.InspectorConfig`: MEBin + pixel-threshold floor for a bundle with
discovery settings, else the pixel threshold; ``min_defect_area_px`` 16 frame pixels; no object
mask unless ``--masker otsu``) finds the regions; ``--region-method threshold`` / ``peak`` measures
the pixel threshold alone / the peak component (:func:`protoinspect.sdk.stages.discovery_crops.peak_mask`,
``peak_fraction`` 0.5 with the pixel threshold) on any bundle, e.g. a detector-only one. Ground truth: the dataset's masks resized to model
size with :func:`protoinspect.sdk.preprocess.resize_gt_mask` (defect: > 127).

Report (:func:`evaluate_regions`):

* ``region_quality``: :func:`protoinspect.training.metrics_regions.region_quality` of the reported
  regions (components of >= ``min_defect_area_px``) on every anomalous image, flagged or not;
  ``region_quality_all_components``: the same with the smaller components too; ``runtime_quality``:
  what the Inspector reports (no region for frames scoring below the image threshold).
* ``baseline``: k-means (K = the true number of types, 20 seeds) on standardised
  :func:`protoinspect.sdk.stages.region_descriptors.describe_region` vectors of ``gt`` (the
  ground-truth region; ``gt_shape``: its shape descriptors only) and ``runtime`` (the union of the
  reported regions; images without one are left out, ``runtime_all_images`` counts them as one extra
  "no region" cluster), with NMI / ARI / F1.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import replace
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from protoinspect.sdk.bundle import Bundle, load_bundle
from protoinspect.sdk.config import InspectorConfig
from protoinspect.sdk.errors import ConfigError, DatasetError, ProtoInspectError, report_error
from protoinspect.sdk.inspector_stages import default_regions
from protoinspect.sdk.stages.regions import MapRegionFinder
from protoinspect.sdk.models.loading import load_detector_net
from protoinspect.sdk.preprocess import resize_gt_mask
from protoinspect.sdk.stages.discovery_crops import DiscoverySettings
from protoinspect.sdk.stages.masker import MaskerSettings, build_masker
from protoinspect.sdk.stages.region_descriptors import DESCRIPTOR_NAMES, describe_regions, standardise
from protoinspect.training.datasets import load_dataset
from protoinspect.training.discovery_data import detect
from protoinspect.training.image_io import decode_file
from protoinspect.training.metrics_ncd import ncd_metrics
from protoinspect.training.metrics_regions import region_quality
from protoinspect.training.region_baseline import cluster_baseline, kmeans

#: the label of images without a runtime region in ``baseline.runtime_all_images``
NO_REGION = -1
#: the shape descriptors (no intensity or texture): ``baseline.gt_shape`` uses only these
SHAPE_COLUMNS = tuple(i for i, name in enumerate(DESCRIPTOR_NAMES)
                      if not name.startswith(("intensity_", "texture_")))


def _raw_gt(path: Path) -> np.ndarray:
    raw = decode_file(path, "mask")
    return raw if raw.ndim == 2 else raw[..., 0]


def subset(n: int, limit: int | None) -> list[int]:
    """Indices of at most ``limit`` of ``n`` images, evenly spaced (so every defect-type folder, listed
    one after another, keeps its share); all of them for None."""
    if limit is None or limit >= n:
        return list(range(n))
    if limit < 1:
        raise DatasetError(f"--limit must be >= 1, got {limit}")
    return sorted({int(i) for i in np.linspace(0, n - 1, limit).round()})


def _runtime_baseline(pred_masks: list[np.ndarray], images: np.ndarray, types: list[str],
                      seeds: int) -> dict[str, Any]:
    have = [i for i, m in enumerate(pred_masks) if m.any()]
    k = len(set(types))
    out: dict[str, Any] = {"num_images_with_region": len(have), "runtime": None, "runtime_all_images": None}
    if len(have) < max(k, 2):
        return out
    feats = describe_regions([pred_masks[i] for i in have], [images[i] for i in have])
    out["runtime"] = cluster_baseline(feats, [types[i] for i in have], seeds=seeds, k=k)
    # the images without a region as one more cluster, under the same k-means runs (seed 0)
    labels = np.full(len(types), NO_REGION)
    labels[have] = kmeans(standardise(feats)[0], k, np.random.default_rng(0))
    out["runtime_all_images"] = {"num_images": len(types), "seed": 0, **ncd_metrics(types, labels.tolist())}
    return out


REGION_METHODS = ("runtime", "threshold", "peak")


def region_finder(bundle: Bundle, config: InspectorConfig, method: str = "runtime") -> MapRegionFinder:
    """The region stage to measure: the Inspector's (``runtime``), the pixel threshold alone, or the
    peak component with the pixel threshold (``peak``, default ``peak_fraction``).

    Raises:
        ConfigError: an unknown method.
    """
    if method not in REGION_METHODS:
        raise ConfigError(f"region method must be one of {REGION_METHODS}, got {method!r}")
    finder = default_regions(bundle, config)
    if method == "runtime":
        return finder
    disc = DiscoverySettings(region_method="peak") if method == "peak" else None
    return MapRegionFinder(replace(finder.settings, discovery=disc))


def evaluate_regions(data: str | Path, bundle: str | Path, *, limit: int | None = None, masker: str = "none",
                     seeds: int = 20, progress: bool = True, region_method: str = "runtime") -> dict[str, Any]:
    """Region quality and the descriptor baseline on the anomalous test images (see the module docstring).

    Args:
        data: dataset folder.
        bundle: detector or discovery bundle (torch weights).
        limit: at most this many images, evenly spaced over the list (None: all).
        masker: ``none`` (the Inspector's default) or ``otsu``: the object mask for the region stage.
        seeds: k-means seeds of the baseline.
        region_method: ``runtime`` (the Inspector's region stage for this bundle), ``threshold`` or ``peak``
            (:func:`region_finder`).

    Raises:
        BundleError, DatasetError, ConfigError: invalid inputs.
    """
    t0 = time.perf_counter()
    b = load_bundle(bundle)
    config = InspectorConfig(masker=masker)
    finder = region_finder(b, config, region_method)
    spec = b.manifest.preprocess_spec
    ds = load_dataset(data)
    anomalous = [s for s in ds.test if s.label == 1]
    if not anomalous:
        raise DatasetError(f"{data}: no anomalous test images")
    samples = [anomalous[i] for i in subset(len(anomalous), limit)]
    net = load_detector_net(b).eval()
    t_detect = time.perf_counter()
    detected = detect(samples, ds.channels, net, spec, progress)
    t_detect = time.perf_counter() - t_detect
    objects = None if masker == "none" else build_masker(MaskerSettings(kind=masker, color_order="rgb"))
    h, w = spec.image_size
    image_threshold = float(b.manifest.thresholds["image"])
    gts, preds, preds_all, runtime, t_regions = [], [], [], [], 0.0
    for i, s in enumerate(samples):
        raw = _raw_gt(s.mask_path) if s.mask_path is not None else np.zeros((h, w), np.uint8)
        gts.append(resize_gt_mask(raw, (h, w)))
        obj = None if objects is None else np.asarray(objects.mask(detected.images[i]), bool)
        t = time.perf_counter()
        regions = finder.find(detected.maps[i], raw.shape[:2], obj)
        t_regions += time.perf_counter() - t
        pred = np.isin(regions.labels, regions.defect_labels) if regions.defect_labels else np.zeros((h, w), bool)
        preds.append(pred)
        preds_all.append(regions.mask.copy())
        runtime.append(pred if detected.scores[i] >= image_threshold else np.zeros((h, w), bool))
    types = [s.defect_type for s in samples]
    have_gt = [i for i, g in enumerate(gts) if g.any()]
    section = b.manifest.discovery
    report: dict[str, Any] = {
        "bundle": str(b.path), "bundle_id": b.manifest.bundle_id, "data": str(Path(data)),
        "region_method": (section.settings.region_method if section is not None else "threshold")
        if region_method == "runtime" else region_method,
        "pixel_threshold": float(finder.settings.pixel_threshold), "min_defect_area_px": config.min_defect_area_px,
        "masker": masker, "model_size": [h, w], "num_images": len(samples),
        "num_images_empty_gt": len(samples) - len(have_gt),
        "types": dict(sorted(Counter(types).items())),
        "flagged_by_detector": int((detected.scores >= image_threshold).sum()),
        "region_quality": region_quality(preds, gts),
        "region_quality_all_components": region_quality(preds_all, gts),
        "runtime_quality": region_quality(runtime, gts),
        "region_quality_by_type": {t: region_quality([preds[i] for i in range(len(types)) if types[i] == t],
                                                     [gts[i] for i in range(len(types)) if types[i] == t])
                                   for t in sorted(set(types))},
        "descriptor_names": list(DESCRIPTOR_NAMES),
    }
    baseline: dict[str, Any] = {"k": len(set(types)), "gt": None, "gt_shape": None}
    if len(have_gt) >= max(2, len(set(types))):
        gt_feats = describe_regions([gts[i] for i in have_gt], [detected.images[i] for i in have_gt])
        gt_types = [types[i] for i in have_gt]
        baseline["gt"] = cluster_baseline(gt_feats, gt_types, seeds=seeds, k=len(set(types)))
        baseline["gt_shape"] = cluster_baseline(gt_feats, gt_types, seeds=seeds, k=len(set(types)),
                                                columns=SHAPE_COLUMNS)
    baseline.update(_runtime_baseline(preds, detected.images, types, seeds))
    report["baseline"] = baseline
    report["seconds"] = {"total": round(time.perf_counter() - t0, 1), "detector": round(t_detect, 1),
                         "regions_ms_per_image": round(t_regions * 1e3 / len(samples), 3)}
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m protoinspect.training.evaluate_regions",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--bundle", required=True, help="detector or discovery bundle")
    p.add_argument("--json", help="write the report here")
    p.add_argument("--limit", type=int, help="at most this many anomalous images, evenly spaced")
    p.add_argument("--masker", choices=("none", "otsu"), default="none", help="object mask for the region stage")
    p.add_argument("--seeds", type=int, default=20, help="k-means seeds of the baseline")
    p.add_argument("--region-method", choices=REGION_METHODS, default="runtime",
                   help="regions to measure: the Inspector's for this bundle, the pixel threshold, or the peak component")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        report = evaluate_regions(args.data, args.bundle, limit=args.limit, masker=args.masker, seeds=args.seeds,
                                  progress=not args.quiet, region_method=args.region_method)
    except ProtoInspectError as exc:
        return report_error(exc)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=True))
    q, base = report["region_quality"], report["baseline"]
    print(f"{report['region_method']}: image IoU {q['image_iou_mean']:.3f}, region IoU {q['region_iou_mean']}, "
          f"miss rate {q['miss_rate']}, false-region rate {q['false_region_rate']}")
    for key in ("gt", "gt_shape", "runtime"):
        if base.get(key):
            print(f"baseline[{key}]: nmi={base[key]['nmi']:.3f} ari={base[key]['ari']:.3f} f1={base[key]['f1']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
