"""The embedded default job: synthesize a multi-product line, train one detector on it, evaluate it."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

from training.config import load_train_config
from training.evaluate_detector import evaluate_detector, format_table
from training.synthetic import PRODUCTS, generate_dataset
from training.train_detector import train_detector

DEMO_CONFIG = Path(__file__).with_name("configs") / "demo.yaml"


def run_demo(out: str | Path = "protoinspect-demo", *, products: Sequence[str] = PRODUCTS, image_size: int = 256,
             num_train: int = 40, overrides: Sequence[str] = (), seed: int = 0, progress: bool = True) -> dict:
    """Generate data under ``out/data``, train ``out/bundle``, evaluate into ``out/metrics.json``."""
    out = Path(out)
    t0 = time.perf_counter()
    dirs = generate_dataset(out / "data", products=products, image_size=image_size, num_train=num_train,
                            num_test_good=12, num_test_per_defect=4, seed=seed, progress=progress)
    cfg = load_train_config(DEMO_CONFIG, [f"image_size={image_size}", f"seed={seed}", *overrides])
    bundle = train_detector(dirs, out / "bundle", cfg, overwrite=True, progress=progress, command="protoinspect demo")
    report = evaluate_detector(dirs, bundle, progress=progress)
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    (out / "metrics.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``protoinspect demo [--out DIR] [--size N] [--set k=v]``."""
    p = argparse.ArgumentParser(prog="protoinspect demo", description=__doc__)
    p.add_argument("--out", default="protoinspect-demo", help="working folder (data, bundle, metrics)")
    p.add_argument("--size", type=int, default=256, help="image size of the synthetic line camera and the model")
    p.add_argument("--num-train", type=int, default=40, help="defect-free training images per product")
    p.add_argument("--products", nargs="+", default=list(PRODUCTS), help=f"subset of {list(PRODUCTS)}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="training config override")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    report = run_demo(args.out, products=args.products, image_size=args.size, num_train=args.num_train,
                      overrides=args.set, progress=not args.quiet)
    print(format_table(report))
    print(f"bundle: {report['bundle']}\nmetrics: {Path(args.out) / 'metrics.json'}  ({report['total_seconds']} s in all)")
    return 0
