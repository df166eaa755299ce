"""The embedded default job: synthesize a multi-product line, train one detector, export it to ONNX,
evaluate it, and run the synthetic test stream through ``protoinspect.sdk.Inspector`` (ONNX Runtime, CPU)."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from protoinspect.export.onnx_export import export_detector_onnx
from protoinspect.training.config import load_train_config
from protoinspect.training.dataset_frames import training_data_frames
from protoinspect.training.demo_report import write_demo_summary
from protoinspect.training.evaluate_detector import evaluate_detector, format_table
from protoinspect.training.synthetic import PRODUCTS, generate_dataset
from protoinspect.training.train_detector import train_detector

DEMO_PRESET = "fast"


def _stream_folder(dirs: Sequence[Path], out: Path) -> Path:
    """Copy every product's test images into one folder: the line camera's mixed stream."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for d in dirs:
        for image in sorted((d / "test").glob("*/*.png")):
            shutil.copyfile(image, out / f"{d.name}_{image.parent.name}_{image.name}")
    return out


def run_demo(out: str | Path = "protoinspect-demo", *, products: Sequence[str] = PRODUCTS, image_size: int = 256,
             num_train: int = 30, overrides: Sequence[str] = (), seed: int = 0, progress: bool = True,
             inspect: bool = True) -> dict:
    """Data -> ``out/bundle`` (with ``detector.onnx``) -> ``out/metrics.json`` -> ``out/inspect/`` report
    -> ``out/summary.html`` (per product: caught / false alarms at the threshold, score histograms, the
    missed defects and false alarms).

    Returns the evaluation report with ``total_seconds``, ``summary_report`` and, if ``inspect``, the
    inspect exit code.
    """
    out = Path(out)
    t0 = time.perf_counter()
    dirs = generate_dataset(out / "data", products=products, image_size=image_size, num_train=num_train,
                            num_test_good=12, num_test_per_defect=4, seed=seed, progress=progress)
    cfg = load_train_config(None, [f"image_size={image_size}", f"seed={seed}", *overrides], preset=DEMO_PRESET)
    bundle = train_detector(dirs, out / "bundle", cfg, overwrite=True, progress=progress, command="protoinspect demo")
    export_detector_onnx(bundle, real_frames=training_data_frames(bundle, per_dataset=1)[0], frames_color_order="rgb")
    report = evaluate_detector(dirs, bundle, progress=progress, per_image=True)
    images = report.pop("images")
    (out / "metrics.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    if inspect:
        from protoinspect.sdk.inspect_cli import main as inspect_main

        stream = _stream_folder(dirs, out / "stream")
        report["inspect_exit_code"] = inspect_main([str(stream), "--bundle", str(bundle), "--out", str(out / "inspect"),
                                                    "--backend", "onnxruntime", "--save-overlays",
                                                    *([] if progress else ["--quiet"])])
        report["inspect_report"] = str(out / "inspect" / "report.html")
    links = {"metrics (JSON)": "metrics.json"}
    if inspect:
        links["inspection of the test stream"] = "inspect/report.html"
    report["summary_report"] = str(write_demo_summary(out, {**report, "images": images}, title="ProtoInspect demo",
                                                      links=links))
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``protoinspect demo [--out DIR] [--size N] [--set k=v]``."""
    p = argparse.ArgumentParser(prog="protoinspect demo", description=__doc__)
    p.add_argument("--out", default="protoinspect-demo", help="working folder (data, bundle, metrics, inspect report)")
    p.add_argument("--size", type=int, default=256, help="image size of the synthetic line camera and the model")
    p.add_argument("--num-train", type=int, default=30, help="defect-free training images per product")
    p.add_argument("--products", nargs="+", default=list(PRODUCTS), help=f"subset of {list(PRODUCTS)}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="training config override")
    p.add_argument("--no-inspect", action="store_true", help="skip running the test stream through the Inspector")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    report = run_demo(args.out, products=args.products, image_size=args.size, num_train=args.num_train,
                      overrides=args.set, progress=not args.quiet, inspect=not args.no_inspect)
    print(format_table(report))
    print(f"summary: {report['summary_report']}")
    print(f"bundle:  {report['bundle']}\nmetrics: {Path(args.out) / 'metrics.json'}")
    if "inspect_report" in report:
        print(f"report:  {report['inspect_report']}")
    print(f"total:   {report['total_seconds']} s")
    return int(report.get("inspect_exit_code", 0))
