"""Evaluate novel-class discovery exactly as AnomalyNCD (methods.md §3(b).8).

    python -m protoinspect.training.evaluate_discovery --data DIR --bundle BUNDLE_DIR --json OUT.json

Over the anomalous test images (all of them, flagged by the detector or not; types the bundle was
trained without are left out): each image's crops go through the classifier, region merging gives
one label, and the Hungarian-matched F1 (= accuracy), NMI and ARI compare the labels with the
defect-type folders (``flagged_only``: the same metrics over the images the detector flags, the ones
the runtime classifies). ``outlier_auroc``: when the bundle was trained with ``--exclude-type``, the AUROC
of rejecting those types' images (low vMF score) against accepting the known types' images.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from protoinspect.sdk.bundle import load_bundle
from protoinspect.sdk.errors import BundleError, ProtoInspectError, report_error
from protoinspect.sdk.models.loading import load_classifier_net, load_detector_net
from protoinspect.sdk.stages.masker import MaskerSettings, build_masker
from protoinspect.sdk.stages.region_classifier import bundle_vit
from protoinspect.training.datasets import load_dataset
from protoinspect.training.discovery_config import DiscoveryTrainConfig
from protoinspect.training.discovery_data import build_discovery_images, detect
from protoinspect.training.metrics_image import auroc
from protoinspect.training.metrics_ncd import ncd_metrics
from protoinspect.training.train_discovery import predict_images


def evaluate_discovery(data: str | Path, bundle: str | Path, *, progress: bool = True,
                       anomaly_prior: str | None = None, per_image: bool = False) -> dict[str, Any]:
    """Metrics of the bundle's classifier on the anomalous test images of ``data`` (see module doc).

    Args:
        anomaly_prior: ``mebin`` or ``gt``; None: what the bundle was trained with.
        per_image: also return ``images``, one record per evaluated image: ``path``, ``mask`` (or None),
            ``defect_type`` (the true type), ``class_id`` / ``class_name`` (the predicted class), ``score``
            (its vMF score) and ``detector_score``.

    Raises:
        BundleError: the bundle has no classifier.
        DatasetError: the dataset is invalid.
    """
    t0 = time.perf_counter()
    b = load_bundle(bundle)
    section = b.manifest.discovery
    if section is None:
        raise BundleError(f"{b.path}: no discovery section; train with `protoinspect train-discovery`")
    settings = section.settings
    train_cfg = dict(section.training.config)
    if anomaly_prior is not None:
        train_cfg["anomaly_prior"] = anomaly_prior
    cfg = DiscoveryTrainConfig.from_dict(train_cfg)
    net = load_detector_net(b).eval()
    clf = load_classifier_net(b)
    spec = b.manifest.preprocess_spec
    ds = load_dataset(data)
    samples = [s for s in ds.test if s.label == 1]
    detected = detect(samples, ds.channels, net, spec, progress)
    masker = build_masker(MaskerSettings(kind=cfg.masker, color_order="rgb"))
    obj = [None if cfg.masker == "none" else np.asarray(masker.mask(im), bool) for im in detected.images]
    with torch.no_grad():
        images = build_discovery_images(detected, range(len(samples)), net, spec, settings, cfg, obj, progress,
                                        variants=("identity",), jitters=1, vit=bundle_vit(b, settings),
                                        pixel_threshold=float(b.manifest.thresholds["pixel"]))
    t_cls = time.perf_counter()
    preds, _ = predict_images(clf, images, settings)
    cls_ms = (time.perf_counter() - t_cls) * 1e3 / max(1, len(images))
    names = {c["id"]: c["name"] for c in b.manifest.classes}
    excluded = set(section.training.excluded_types)
    types = [s.defect_type for s in samples]
    keep = [i for i, t in enumerate(types) if t not in excluded]
    y_true = [types[i] for i in keep]
    y_pred = [preds[i].class_id for i in keep]
    report: dict[str, Any] = {
        "bundle": str(b.path), "bundle_id": b.manifest.bundle_id, "data": str(Path(data)),
        "anomaly_prior": cfg.anomaly_prior, "num_images": len(keep),
        **ncd_metrics(y_true, y_pred),
        "k_true": len(set(y_true)), "k_estimated": len(b.manifest.classes),
        "k_novel_estimated": section.training.k_novel_estimated,
        "known_types": list(section.training.known_types),
        "excluded_types": sorted(excluded),
        "outlier_auroc": None,
        "flagged_by_detector": int(sum(detected.scores[i] >= float(b.manifest.thresholds["image"]) for i in keep)),
        "flagged_only": None,
        "classifier_ms_per_image": round(cls_ms, 3),
        "confusion": {t: {names.get(k, str(k)): n for k, n in sorted(Counter(
            preds[i].class_id for i in keep if types[i] == t).items())} for t in sorted(set(y_true))},
    }
    if excluded:
        labels = [int(t in excluded) for t in types]
        report["outlier_auroc"] = auroc(labels, [-p.score for p in preds])
        report["outlier_rejected_fraction"] = {
            "excluded": float(np.mean([p.score < settings.reject_threshold for p, y in zip(preds, labels) if y])),
            "known": float(np.mean([p.score < settings.reject_threshold for p, y in zip(preds, labels) if not y])),
        }
    threshold = float(b.manifest.thresholds["image"])
    flagged = [i for i in keep if detected.scores[i] >= threshold]
    if flagged:  # the images the runtime would classify (the detector says ANOMALOUS)
        report["flagged_only"] = {"num_images": len(flagged),
                                  **ncd_metrics([types[i] for i in flagged], [preds[i].class_id for i in flagged])}
    if per_image:
        report["images"] = [
            {"path": str(samples[i].image_path),
             "mask": None if samples[i].mask_path is None else str(samples[i].mask_path),
             "defect_type": types[i], "class_id": int(preds[i].class_id),
             "class_name": names.get(preds[i].class_id, str(preds[i].class_id)), "score": float(preds[i].score),
             "detector_score": float(detected.scores[i])} for i in keep]
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m protoinspect.training.evaluate_discovery", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--bundle", required=True, help="bundle with a classifier (protoinspect.training.train_discovery)")
    p.add_argument("--json", help="write the report here")
    p.add_argument("--anomaly-prior", choices=("mebin", "gt"), help="override the bundle's anomaly prior")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        report = evaluate_discovery(args.data, args.bundle, progress=not args.quiet, anomaly_prior=args.anomaly_prior)
    except ProtoInspectError as exc:
        return report_error(exc)
    text = json.dumps(report, indent=2, sort_keys=True)
    if args.json:
        Path(args.json).write_text(text)
    keys = ("nmi", "ari", "f1", "k_true", "k_estimated", "outlier_auroc")
    print("  ".join(f"{k}={report[k]:.3f}" if isinstance(report[k], float) else f"{k}={report[k]}" for k in keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
