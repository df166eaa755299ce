"""Evaluate a detector bundle on the test split of one or more datasets.

    python -m protoinspect.training.evaluate_detector --data DIR [--data DIR ...] --bundle BUNDLE_DIR --json OUT.json

Metrics per dataset: image_auroc, image_ap, image_f1_max, pixel_auroc, aupro (FPR <= 0.3, normalised),
computed at the model's input resolution with ground-truth masks binarised at > 127.
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
from protoinspect.sdk.cli import report_error
from protoinspect.sdk.errors import ProtoInspectError
from protoinspect.sdk.models.loading import load_detector_net
from protoinspect.sdk.preprocess import normalize, resize_mask, resize_to_rgb
from protoinspect.training.datasets import Dataset, load_dataset, read_image, read_mask
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
            image = read_image(s.image_path, ds.channels)
            inputs.append(normalize(resize_to_rgb(image, spec, color_order="rgb"), spec))
            if s.mask_path is not None:
                masks[start + j] = resize_mask(read_mask(s.mask_path, image.shape[:2], s.image_path), (h, w))
        t = time.perf_counter()
        amap, score = net(torch.from_numpy(np.stack(inputs)))
        seconds += time.perf_counter() - t
        maps[start : start + len(chunk)] = amap[:, 0].numpy()
        scores[start : start + len(chunk)] = score.numpy()
        bar.update(len(chunk))
    bar.close()
    return labels, scores, maps, masks, 1000.0 * seconds / max(n, 1)


def evaluate_detector(data: Sequence[str | Path], bundle: str | Path, *, data_format: str = "auto",
                      progress: bool = True, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate ``bundle`` on every dataset; returns {"datasets": {name: metrics}, "mean": {...}, ...}.

    ``overrides`` replaces inference-only detector settings (ablations; threshold-free metrics only).
    """
    b = load_bundle(bundle)
    spec = b.manifest.preprocess_spec
    net = load_detector_net(b, overrides)
    results: dict[str, Any] = {}
    for d in data:
        ds = load_dataset(d, data_format)
        labels, scores, maps, masks, ms = predict_dataset(net, ds, spec, progress=progress)
        row: dict[str, Any] = {**image_metrics(labels, scores), **pixel_metrics(masks, maps)}
        thr = b.manifest.thresholds["image"]
        pred = scores >= thr
        row.update({
            "num_test": int(len(labels)),
            "num_anomalous": int(labels.sum()),
            "num_normal": int((labels == 0).sum()),
            "accuracy_at_threshold": float((pred == labels.astype(bool)).mean()),
            "batched_forward_ms_per_image": round(ms, 2),
        })
        name = ds.name if ds.name not in results else f"{ds.name}@{ds.root}"
        results[name] = row
    mean = {k: float(np.mean([r[k] for r in results.values()])) for k in METRIC_KEYS}
    return {"bundle": str(b.path), "bundle_id": b.manifest.bundle_id, "datasets": results, "mean": mean,
            "detector_overrides": overrides or {},
            "image_threshold": b.manifest.thresholds["image"], "torch_threads": torch.get_num_threads()}


def format_table(report: dict[str, Any]) -> str:
    """Plain-text table of the metrics, one row per dataset plus the mean."""
    head = f"{'dataset':<16}" + "".join(f"{k:>14}" for k in METRIC_KEYS) + f"{'images':>8}"
    lines = [head, "-" * len(head)]
    for name, r in report["datasets"].items():
        lines.append(f"{name[:16]:<16}" + "".join(f"{r[k]:>14.4f}" for k in METRIC_KEYS) + f"{r['num_test']:>8}")
    if len(report["datasets"]) > 1:
        lines.append(f"{'mean':<16}" + "".join(f"{report['mean'][k]:>14.4f}" for k in METRIC_KEYS))
    return "\n".join(lines)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["map_mode=fused", ...]`` -> {setting: value} for inference-only detector settings."""
    from protoinspect.sdk.models.loading import INFERENCE_SETTINGS
    from protoinspect.training.config import apply_overrides

    base = {k: None for k in INFERENCE_SETTINGS}
    parsed = apply_overrides(base, items)
    return {k: v for k, v in parsed.items() if k in {i.split("=", 1)[0].strip() for i in items}}


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(prog="python -m protoinspect.training.evaluate_detector", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", action="append", required=True, help="dataset folder (repeatable)")
    p.add_argument("--bundle", required=True, help="model bundle directory")
    p.add_argument("--json", help="write the metrics to this JSON file")
    p.add_argument("--format", default="auto", choices=["auto", "mvtec", "mtd"])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="ablation: override an inference-only detector setting, e.g. map_mode=fused or score_top_fraction=0.001")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        report = evaluate_detector(args.data, args.bundle, data_format=args.format, progress=not args.quiet,
                                   overrides=parse_overrides(args.set))
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
