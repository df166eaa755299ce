"""The embedded default job: synthesize a multi-product line, train one detector, export it to ONNX,
evaluate it, discover each product's defect types without labels, and run the synthetic test stream
through ``protoinspect.sdk.Inspector`` (ONNX Runtime, CPU)."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from protoinspect.export.onnx_export import export_detector_onnx
from protoinspect.sdk.errors import ConfigError
from protoinspect.training.config import load_train_config
from protoinspect.training.dataset_frames import training_data_frames
from protoinspect.training.demo_discovery_report import discovery_section_html, format_discovery_table, mean_metrics
from protoinspect.training.demo_report import write_demo_summary
from protoinspect.training.evaluate_detector import evaluate_detector, format_table
from protoinspect.training.synthetic import PRODUCTS, generate_dataset
from protoinspect.training.train_detector import train_detector

DEMO_PRESET = "fast"
#: discovery training of the demo, per product: a quarter of the default steps, a smaller batch and two box
#: jitters. On the synthetic line (256 px, 24 defect images per product, 2 CPU cores) one product takes
#: about 25 s to train and evaluate instead of ~3 min at 100+100 steps (measured on an earlier demo's
#: detector; tile: NMI 0.53 at 40+40 and at 60+60 steps, 0.48 at 100+100).
DEMO_DISCOVERY_OVERRIDES = ("contrastive_steps=60", "prototype_steps=60", "batch=32", "jitters=2")
#: products the demo discovers defect types on by default: all six fit the time budget (~25 s each)
DEMO_DISCOVER_PRODUCTS = tuple(PRODUCTS)


def _stream_folder(dirs: Sequence[Path], out: Path) -> Path:
    """Copy every product's test images into one folder: the line camera's mixed stream."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for d in dirs:
        for image in sorted((d / "test").glob("*/*.png")):
            shutil.copyfile(image, out / f"{d.name}_{image.parent.name}_{image.name}")
    return out


def check_discover_products(names: Sequence[str], products: Sequence[str]) -> list[str]:
    """``names`` in order without repeats, each one of the demo's ``products``.

    Raises:
        ConfigError: a name that is not among ``products`` (the message names the valid ones).
    """
    bad = [n for n in names if n not in products]
    if bad:
        raise ConfigError(f"cannot discover defect types of {bad}: not among the demo's products {list(products)}")
    return list(dict.fromkeys(names))


def discover_products_of(out: Path, bundle: Path, data: Mapping[str, Path], overrides: Sequence[str], *,
                         progress: bool) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Learn the defect types of each product of ``data`` (name -> dataset folder) without labels into
    ``out/discovery/<product>`` (the detector ``bundle`` plus a classifier, the number of types estimated)
    and evaluate them on the product's anomalous test images.

    Returns ``({"overrides", "products": {name: metrics}, "mean"}, {name: per-image records})``.
    """
    from protoinspect.training.discovery_config import discovery_config
    from protoinspect.training.evaluate_discovery import evaluate_discovery
    from protoinspect.training.train_discovery import train_discovery

    cfg = discovery_config(list(overrides))
    results: dict[str, dict[str, Any]] = {}
    images: dict[str, list[dict[str, Any]]] = {}
    for name, folder in data.items():
        t = time.perf_counter()
        disc = train_discovery(folder, bundle, out / "discovery" / name, cfg, overwrite=True, progress=progress,
                               command="protoinspect demo")
        t_train = time.perf_counter() - t
        ev = evaluate_discovery(folder, disc, progress=progress, per_image=True)
        images[name] = ev.pop("images")
        keep = ("nmi", "ari", "f1", "k_estimated", "k_novel_estimated", "k_true", "num_images", "bundle", "confusion")
        results[name] = {**{k: ev[k] for k in keep}, "train_seconds": round(t_train, 1),
                         "seconds": round(time.perf_counter() - t, 1)}
    return {"overrides": list(overrides), "products": results, "mean": mean_metrics(results)}, images


def run_demo(out: str | Path = "protoinspect-demo", *, products: Sequence[str] = PRODUCTS, image_size: int = 256,
             num_train: int = 30, overrides: Sequence[str] = (), seed: int = 0, progress: bool = True,
             inspect: bool = True, discover_products: Sequence[str] | None = None,
             discovery_overrides: Sequence[str] = ()) -> dict:
    """Data -> ``out/bundle`` (with ``detector.onnx``) -> ``out/discovery/<product>`` -> ``out/metrics.json``
    -> ``out/inspect/`` report -> ``out/summary.html`` (per product: caught / false alarms at the threshold,
    score histograms, the missed defects and false alarms; per discovered product its classes as galleries).

    Args:
        discover_products: products whose defect types are learned without labels after the detector
            (unsupervised, the number of types estimated), with :data:`DEMO_DISCOVERY_OVERRIDES`, then
            ``num_threads`` and ``seed`` of the detector config, then ``discovery_overrides``. None: those of
            :data:`DEMO_DISCOVER_PRODUCTS` among ``products``; empty: no discovery.

    Returns the evaluation report with ``total_seconds``, ``summary_report``, ``discovery`` (when any product
    was discovered: per product NMI, ARI, F1, estimated and true K, seconds; their mean) and, if ``inspect``,
    the inspect exit code.

    Raises:
        ConfigError: a product of ``discover_products`` that is not in ``products``, or a bad override.
    """
    out = Path(out)
    t0 = time.perf_counter()
    if discover_products is None:
        discover_products = [p for p in DEMO_DISCOVER_PRODUCTS if p in products]
    discover_products = check_discover_products(discover_products, products)
    if discover_products:  # a bad discovery override fails now, not after the detector's training
        from protoinspect.training.discovery_config import discovery_config

        discovery_config([*DEMO_DISCOVERY_OVERRIDES, *discovery_overrides])
    dirs = generate_dataset(out / "data", products=products, image_size=image_size, num_train=num_train,
                            num_test_good=12, num_test_per_defect=4, seed=seed, progress=progress)
    cfg = load_train_config(None, [f"image_size={image_size}", f"seed={seed}", *overrides], preset=DEMO_PRESET)
    bundle = train_detector(dirs, out / "bundle", cfg, overwrite=True, progress=progress, command="protoinspect demo")
    export_detector_onnx(bundle, real_frames=training_data_frames(bundle, per_dataset=1)[0], frames_color_order="rgb")
    report = evaluate_detector(dirs, bundle, progress=progress, per_image=True)
    images = report.pop("images")
    sections = []
    if discover_products:
        limits = [f"seed={seed}", *([f"num_threads={cfg.num_threads}"] if cfg.num_threads else [])]
        report["discovery"], disc_images = discover_products_of(
            out, bundle, {n: d for n in discover_products for d in dirs if d.name == n}, [*DEMO_DISCOVERY_OVERRIDES, *limits, *discovery_overrides],
            progress=progress)
        sections.append(discovery_section_html(report["discovery"], disc_images))
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
                                                      links=links, sections=sections))
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``protoinspect demo [--out DIR] [--size N] [--set k=v] [--discover-products P ... | --no-discover]``."""
    p = argparse.ArgumentParser(prog="protoinspect demo", description=__doc__)
    p.add_argument("--out", default="protoinspect-demo", help="working folder (data, bundle, metrics, inspect report)")
    p.add_argument("--size", type=int, default=256, help="image size of the synthetic line camera and the model")
    p.add_argument("--num-train", type=int, default=30, help="defect-free training images per product")
    p.add_argument("--products", nargs="+", default=list(PRODUCTS), help=f"subset of {list(PRODUCTS)}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="training config override")
    p.add_argument("--discover-products", nargs="+", metavar="P",
                   help=f"products to discover defect types on without labels (default: {list(DEMO_DISCOVER_PRODUCTS)}"
                        " among --products)")
    p.add_argument("--no-discover", action="store_true", help="skip the defect-type discovery")
    p.add_argument("--discovery-set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"discovery config override (after the demo's {list(DEMO_DISCOVERY_OVERRIDES)})")
    p.add_argument("--no-inspect", action="store_true", help="skip running the test stream through the Inspector")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.no_discover and args.discover_products:
        p.error("--no-discover and --discover-products exclude each other")
    bad = [n for n in args.discover_products or [] if n not in args.products]
    if bad:
        p.error(f"--discover-products {bad}: not among the demo's products {args.products}")
    report = run_demo(args.out, products=args.products, image_size=args.size, num_train=args.num_train,
                      overrides=args.set, progress=not args.quiet, inspect=not args.no_inspect,
                      discover_products=() if args.no_discover else args.discover_products,
                      discovery_overrides=args.discovery_set)
    print(format_table(report))
    if "discovery" in report:
        print(format_discovery_table(report["discovery"]))
    print(f"summary: {report['summary_report']}")
    print(f"bundle:  {report['bundle']}\nmetrics: {Path(args.out) / 'metrics.json'}")
    if "inspect_report" in report:
        print(f"report:  {report['inspect_report']}")
    print(f"total:   {report['total_seconds']} s")
    return int(report.get("inspect_exit_code", 0))
