"""Evaluate a detector bundle on the test split of one or more datasets.

    python -m protoinspect.training.evaluate_detector --data DIR [--data DIR ...] --bundle BUNDLE_DIR --json OUT.json

Metrics per dataset: image_auroc, image_ap, image_f1_max, pixel_auroc, aupro (FPR <= 0.3, normalised),
computed at the model's input resolution with ground-truth masks binarised at > 127. At the bundle's image
threshold (a frame is flagged when its score is at or above it, as the Inspector does): defects_caught (share
of anomalous test images flagged), false_alarm_rate (share of good test images flagged), their counts and
the bundle's calibration ``trust`` sentence. ``--per-image`` adds every test image's score to the JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from protoinspect.sdk.bundle import load_bundle
from protoinspect.sdk.errors import report_error
from protoinspect.sdk.errors import InputError, ProtoInspectError
from protoinspect.sdk.models.loading import load_detector_net
from protoinspect.sdk.preprocess import normalize, resize_gt_mask, resize_to_rgb
from protoinspect.training.datasets import Dataset, load_dataset, read_dataset_image, read_mask
from protoinspect.training.metrics import image_metrics, pixel_metrics

METRIC_KEYS = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "aupro")


@torch.no_grad()
def predict_dataset(net: torch.nn.Module, ds: Dataset, spec: Any, batch: int = 16, progress: bool = True
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Run the detector over the test split -> (labels N, scores N, maps NxHxW, gt masks NxHxW bool, ms/img)."""
    from tqdm import tqdm

    h, w = spec.image_size
    n = len(ds.test)
    labels = np.array([s.label for s in ds.test], np.int64)
    scores = np.empty(n, np.float32)
    maps = np.empty((n, h, w), np.float32)
    masks = np.zeros((n, h, w), bool)
    seconds = 0.0
    bar = tqdm(total=n, desc=f"evaluating {ds.name}", unit="img", disable=not progress, leave=False)
    for start in range(0, n, batch):
        chunk = ds.test[start : start + batch]
        inputs = []
        for j, s in enumerate(chunk):
            image = read_dataset_image(s.image_path, ds.channels)
            inputs.append(normalize(resize_to_rgb(image, spec, color_order="rgb"), spec))
            if s.mask_path is not None:
                masks[start + j] = resize_gt_mask(read_mask(s.mask_path, image.shape[:2], s.image_path), (h, w))
        t = time.perf_counter()
        amap, score = net(torch.from_numpy(np.stack(inputs)))
        seconds += time.perf_counter() - t
        maps[start : start + len(chunk)] = amap[:, 0].numpy()
        scores[start : start + len(chunk)] = score.numpy()
        bar.update(len(chunk))
    bar.close()
    return labels, scores, maps, masks, 1000.0 * seconds / max(n, 1)


def _share(count: int, total: int) -> float | None:
    return count / total if total else None


def at_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """What a line running at ``threshold`` does on labelled images (flagged: score >= threshold).

    Returns ``accuracy_at_threshold``, ``num_defects_caught`` / ``defects_caught`` (recall on anomalous
    images) and ``num_false_alarms`` / ``false_alarm_rate`` (good images flagged); a share is None when
    there are no images of its kind.

    Raises:
        InputError: labels and scores of different lengths, or labels other than 0 / 1.
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        msg = f"labels {labels.shape} and scores {scores.shape} must be 1-D arrays of one length"
        raise InputError(msg)
    if not np.isin(labels, (0, 1)).all():
        msg = "labels must be 0 (good) or 1 (anomalous)"
        raise InputError(msg)
    flagged = scores >= float(threshold)
    bad = labels == 1
    caught, alarms = int((flagged & bad).sum()), int((flagged & ~bad).sum())
    return {
        "accuracy_at_threshold": float((flagged == bad).mean()) if len(labels) else None,
        "num_defects_caught": caught,
        "defects_caught": _share(caught, int(bad.sum())),
        "num_false_alarms": alarms,
        "false_alarm_rate": _share(alarms, int((~bad).sum())),
    }


def evaluate_detector(data: Sequence[str | Path], bundle: str | Path, *, data_format: str = "auto",
                      progress: bool = True, overrides: dict[str, Any] | None = None,
                      per_image: bool = False) -> dict[str, Any]:
    """Evaluate ``bundle`` on every dataset; returns {"datasets": {name: metrics}, "mean": {...}, ...}.

    ``overrides`` replaces inference-only detector settings (ablations; threshold-free metrics only).
    ``per_image`` adds ``images``: one record per test image (``path``, ``dataset``, ``label``, ``score``,
    ``defect_type``, ``mask``), in dataset order.
    """
    b = load_bundle(bundle)
    spec = b.manifest.preprocess_spec
    net = load_detector_net(b, overrides)
    thr = float(b.manifest.thresholds["image"])
    trust = (b.manifest.thresholds.get("calibration") or {}).get("trust")
    results: dict[str, Any] = {}
    records: list[dict[str, Any]] = []
    for d in data:
        ds = load_dataset(d, data_format)
        labels, scores, maps, masks, ms = predict_dataset(net, ds, spec, progress=progress)
        row: dict[str, Any] = {**image_metrics(labels, scores), **pixel_metrics(masks, maps)}
        row.update({
            "num_test": int(len(labels)),
            "num_anomalous": int(labels.sum()),
            "num_normal": int((labels == 0).sum()),
            **at_threshold(labels, scores, thr),
            "trust": trust,
            "batched_forward_ms_per_image": round(ms, 2),
        })
        name = ds.name if ds.name not in results else f"{ds.name}@{ds.root}"
        results[name] = row
        if per_image:
            records += [{"path": str(s.image_path), "dataset": name, "label": int(s.label), "score": float(v),
                         "defect_type": s.defect_type, "mask": None if s.mask_path is None else str(s.mask_path)}
                        for s, v in zip(ds.test, scores, strict=True)]
    mean = {k: float(np.mean([r[k] for r in results.values()])) for k in METRIC_KEYS}
    report = {"bundle": str(b.path), "bundle_id": b.manifest.bundle_id, "datasets": results, "mean": mean,
              "detector_overrides": overrides or {},
              "image_threshold": b.manifest.thresholds["image"], "torch_threads": torch.get_num_threads()}
    if per_image:
        report["images"] = records
    return report


def _rate_cell(share: float | None, count: int | None, total: int | None) -> str:
    if share is None or count is None or total is None:
        return "-"
    return f"{100 * share:.0f}% ({count}/{total})"


def format_table(report: dict[str, Any]) -> str:
    """Plain-text table of the metrics, one row per dataset plus the mean, then what the line does at the
    bundle's threshold: defects caught and false alarms (share and count) per dataset, and the calibration's
    trust sentence."""
    head = (f"{'dataset':<16}" + "".join(f"{k:>14}" for k in METRIC_KEYS) + f"{'images':>8}"
            + f"{'caught':>16}{'false alarms':>16}")
    lines = [head, "-" * len(head)]
    for name, r in report["datasets"].items():
        lines.append(f"{name[:16]:<16}" + "".join(f"{r[k]:>14.4f}" for k in METRIC_KEYS) + f"{r['num_test']:>8}"
                     + f"{_rate_cell(r.get('defects_caught'), r.get('num_defects_caught'), r.get('num_anomalous')):>16}"
                     + f"{_rate_cell(r.get('false_alarm_rate'), r.get('num_false_alarms'), r.get('num_normal')):>16}")
    if len(report["datasets"]) > 1:
        lines.append(f"{'mean':<16}" + "".join(f"{report['mean'][k]:>14.4f}" for k in METRIC_KEYS))
    if "image_threshold" in report:
        lines.append(f"caught / false alarms: test images scoring at or above the image threshold "
                     f"{float(report['image_threshold']):.4g}")
    trusts = {r.get("trust") for r in report["datasets"].values()} - {None}
    lines += [f"threshold: {t}" for t in sorted(trusts)]
    return "\n".join(lines)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["map_mode=fused", ...]`` -> {setting: value} for detector settings, parsed and type-checked as every
    ``--set`` is (:func:`protoinspect.sdk.config_overrides.overrides_dict`); ``load_detector_net`` accepts only the
    inference-only ones."""
    from protoinspect.sdk.config_overrides import overrides_dict
    from protoinspect.sdk.models.prototype_detector import DetectorConfig

    return overrides_dict(DetectorConfig, items)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(prog="python -m protoinspect.training.evaluate_detector", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", action="append", required=True, help="dataset folder (repeatable)")
    p.add_argument("--bundle", required=True, help="model bundle directory")
    p.add_argument("--json", help="write the metrics to this JSON file")
    p.add_argument("--format", default="auto", choices=["auto", "mvtec", "mtd"])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="ablation: override an inference-only detector setting, e.g. map_mode=fused or score_top_fraction=0.001")
    p.add_argument("--per-image", action="store_true",
                   help="add every test image's score (path, dataset, label, score) to the JSON under 'images'")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        report = evaluate_detector(args.data, args.bundle, data_format=args.format, progress=not args.quiet,
                                   overrides=parse_overrides(args.set), per_image=args.per_image)
    except ProtoInspectError as exc:
        return report_error(exc)
    print(format_table(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2, sort_keys=True))
        print(f"metrics written: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
