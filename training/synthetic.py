"""Deterministic synthetic line-camera data set in the MVTec AD layout.

Six products: flat textures (``tile``, ``brushed_metal``, ``fabric``) and objects on a conveyor
belt (``washer``, ``bracket``, ``hex_nut``); six defect types (``scratch``, ``crack``, ``hole``,
``stain``, ``break``, ``contamination``). Rendering lives in :mod:`protoinspect.training.synthetic_products`,
defect painting in :mod:`protoinspect.training.synthetic_line_defects`.

Every image has its own generator seeded from (seed, product, split, type, index), so the same seed
gives byte-identical files and changing a count never changes the images that were already there.

Layout written under ``out_dir``::

    <product>/train/good/000.png
    <product>/test/good/000.png
    <product>/test/<defect>/000.png
    <product>/ground_truth/<defect>/000_mask.png      uint8 0/255, one channel
    <product>/object_masks/<split>/<type>/000.png     objects only, 255 = object
    synthetic.json                                    seed, products, size, counts, defect types

Command line::

    python -m protoinspect.training.synthetic --out DIR [--products tile washer ...] [--size 256 | 100x150]
        [--num-train N] [--num-test-good N] [--num-test-per-defect N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from protoinspect.sdk._imports import require
from protoinspect.sdk.errors import ConfigError, DatasetError
from protoinspect.training.synthetic_line_defects import DEFECT_TYPES, paint_defect
from protoinspect.training.synthetic_objects import render_scene
from protoinspect.training.synthetic_products import OBJECT_PRODUCTS, PRODUCTS, expose

cv2 = require("cv2")

__all__ = [
    "DEFECT_TYPES",
    "MIN_IMAGE_SIZE",
    "OBJECT_PRODUCTS",
    "PRODUCTS",
    "generate_dataset",
    "main",
    "render_sample",
    "sample_rng",
]

MIN_IMAGE_SIZE = 32
MANIFEST = "synthetic.json"
_GENERATED_DIRS = ("train", "test", "ground_truth", "object_masks")


def _image_size(image_size: int | tuple[int, int] | Sequence[int]) -> tuple[int, int]:
    """Validate ``image_size`` (an int or (h, w)) and return (h, w)."""
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        size: tuple[Any, ...] = (image_size, image_size)
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        size = tuple(image_size)
    else:
        msg = f"image_size must be an int or an (h, w) pair, got {image_size!r}"
        raise ConfigError(msg)
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size):
        msg = f"image_size must hold integers, got {image_size!r}"
        raise ConfigError(msg)
    if min(size) < MIN_IMAGE_SIZE:
        msg = f"image_size must be at least {MIN_IMAGE_SIZE} pixels per side, got {image_size!r}"
        raise ConfigError(msg)
    return int(size[0]), int(size[1])


def _check_choice(kind: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        msg = f"unknown {kind} {value!r}; valid choices: {', '.join(choices)}"
        raise ConfigError(msg)
    return value


def _choices(kind: str, values: Iterable[str] | str, choices: tuple[str, ...]) -> tuple[str, ...]:
    """Validate a list of names (a lone string counts as one name), dropping duplicates."""
    names = (values,) if isinstance(values, str) else tuple(values)
    return tuple(dict.fromkeys(_check_choice(kind, v, choices) for v in names))


def _count(name: str, value: object) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        msg = f"{name} must be a non-negative integer, got {value!r}"
        raise ConfigError(msg)
    return int(value)


def sample_rng(seed: int, product: str, split: str, kind: str, index: int) -> np.random.Generator:
    """The generator of one image, independent of every other image's.

    Args:
        seed: data-set seed (non-negative).
        product: product name.
        split: ``"train"`` or ``"test"``.
        kind: ``"good"`` or a defect type.
        index: image number within (product, split, kind).

    Returns:
        A fresh PCG64 generator.
    """
    key = [int(seed), zlib.crc32(product.encode()), zlib.crc32(f"{split}/{kind}".encode()), int(index)]
    return np.random.default_rng(np.random.SeedSequence(key))


def render_sample(
    product: str,
    *,
    defect: str | None,
    rng: np.random.Generator,
    image_size: int | tuple[int, int] = 256,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Render one frame of ``product``, defect-free or with one ``defect``.

    The defect-free scene (texture, pose, lighting, sensor noise) is drawn from ``rng`` before the
    defect, so two calls with generators in the same state differ only inside the defect mask.

    Args:
        product: one of :data:`PRODUCTS`.
        defect: one of :data:`DEFECT_TYPES`, or None for a good sample.
        rng: random generator; advanced by the call.
        image_size: side in pixels, or (h, w); at least 32.

    Returns:
        (HxWx3 uint8 RGB image, HxW bool defect mask (all False when good), HxW bool mask of the
        intact object, or None for texture products).

    Raises:
        ConfigError: unknown product or defect type, or a bad image size.
    """
    _check_choice("product", product, PRODUCTS)
    if defect is not None:
        _check_choice("defect type", defect, DEFECT_TYPES)
    h, w = _image_size(image_size)
    scene = render_scene(product, rng, (h, w))
    if defect is None:
        albedo, mask = scene.albedo, np.zeros((h, w), bool)
    else:
        albedo, mask = paint_defect(defect, scene, rng)
    return expose(albedo, scene.sensor), mask, scene.object_mask


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), image):
        msg = f"could not write {path}"
        raise DatasetError(msg)


def _read_manifest(out: Path) -> dict[str, Any]:
    try:
        data = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _prepare(out: Path, products: tuple[str, ...], previous: dict[str, Any]) -> None:
    """Refuse to overwrite foreign folders; clear what an earlier run of this generator wrote."""
    ours = previous.get("product_settings", {})
    for product in products:
        pdir = out / product
        if pdir.exists() and any(pdir.iterdir()) and product not in ours:
            msg = f"{pdir} exists and was not written by protoinspect.training.synthetic; pick another output folder or remove it"
            raise ConfigError(msg)
    for product in products:
        for sub in _GENERATED_DIRS:
            if (out / product / sub).exists():
                shutil.rmtree(out / product / sub)


def generate_dataset(
    out_dir: str | Path,
    *,
    products: Iterable[str] = PRODUCTS,
    image_size: int | tuple[int, int] = 256,
    num_train: int = 60,
    num_test_good: int = 20,
    num_test_per_defect: int = 6,
    defect_types: Iterable[str] = DEFECT_TYPES,
    seed: int = 0,
    progress: bool = True,
) -> list[Path]:
    """Write the synthetic data set in the MVTec AD layout (see the module docstring).

    Re-running into the same folder replaces the products it names (earlier images of those
    products are removed first, so no stale file survives); folders it did not write are refused.

    Args:
        out_dir: output folder (created).
        products: products to render, from :data:`PRODUCTS`.
        image_size: side in pixels, or (h, w); at least 32.
        num_train: defect-free training images per product.
        num_test_good: defect-free test images per product.
        num_test_per_defect: test images per product and defect type.
        defect_types: defect types to render, from :data:`DEFECT_TYPES`.
        seed: data-set seed (non-negative integer).
        progress: show a tqdm progress bar.

    Returns:
        The product folders, in the order of ``products``.

    Raises:
        ConfigError: unknown product or defect type, bad size, negative count or seed, or an
            existing product folder that this generator did not write.
        DatasetError: an image could not be written.
    """
    products_t = _choices("product", products, PRODUCTS)
    if not products_t:
        msg = f"products must name at least one product; valid choices: {', '.join(PRODUCTS)}"
        raise ConfigError(msg)
    defects_t = _choices("defect type", defect_types, DEFECT_TYPES)
    h, w = _image_size(image_size)
    counts = {
        "train_good": _count("num_train", num_train),
        "test_good": _count("num_test_good", num_test_good),
        "test_per_defect": _count("num_test_per_defect", num_test_per_defect),
    }
    seed = _count("seed", seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    previous = _read_manifest(out)
    _prepare(out, products_t, previous)

    jobs = [("train", "good", counts["train_good"]), ("test", "good", counts["test_good"])]
    jobs += [("test", d, counts["test_per_defect"]) for d in defects_t]
    total = len(products_t) * sum(n for _, _, n in jobs)
    bar = require("tqdm").tqdm(total=total, desc="synthetic", unit="img") if progress else None
    digits = max(3, len(str(max(n for _, _, n in jobs) - 1)))
    folders = []
    try:
        for product in products_t:
            pdir = out / product
            for split in ("train", "test"):
                (pdir / split / "good").mkdir(parents=True, exist_ok=True)
            for split, kind, n in jobs:
                for i in range(n):
                    rng = sample_rng(seed, product, split, kind, i)
                    defect = None if kind == "good" else kind
                    image, mask, obj = render_sample(product, defect=defect, rng=rng, image_size=(h, w))
                    name = f"{i:0{digits}d}"
                    _write_png(pdir / split / kind / f"{name}.png", image)
                    if defect is not None:
                        _write_png(pdir / "ground_truth" / kind / f"{name}_mask.png", mask.astype(np.uint8) * 255)
                    if obj is not None:
                        _write_png(pdir / "object_masks" / split / kind / f"{name}.png", obj.astype(np.uint8) * 255)
                    if bar is not None:
                        bar.update(1)
            folders.append(pdir)
    finally:
        if bar is not None:
            bar.close()

    settings = dict(previous.get("product_settings", {}))
    for product in products_t:
        settings[product] = {
            "seed": seed,
            "image_size": [h, w],
            "defect_types": list(defects_t),
            "counts": counts,
            "object_masks": product in OBJECT_PRODUCTS,
        }
    settings = {p: settings[p] for p in PRODUCTS if p in settings and (out / p).is_dir()}
    manifest = {
        "generator": "protoinspect.training.synthetic",
        "layout": "mvtec_ad",
        "seed": seed,
        "image_size": [h, w],
        "products": list(products_t),
        "object_products": [p for p in products_t if p in OBJECT_PRODUCTS],
        "defect_types": list(defects_t),
        "counts": counts,
        "product_settings": settings,
    }
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(out / MANIFEST)
    return folders


def _parse_size(text: str) -> int | tuple[int, int]:
    """``"256"`` -> 256, ``"100x150"`` -> (100, 150)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    msg = f"size must be N or HxW (e.g. 256 or 100x150), got {text!r}"
    raise argparse.ArgumentTypeError(msg)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status (2 on a bad argument)."""
    parser = argparse.ArgumentParser(
        prog="python -m protoinspect.training.synthetic",
        description="Write a deterministic synthetic line-camera data set in the MVTec AD layout.",
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--products", nargs="+", default=list(PRODUCTS), help=f"products ({', '.join(PRODUCTS)})")
    parser.add_argument(
        "--defects", nargs="+", default=list(DEFECT_TYPES), help=f"defect types ({', '.join(DEFECT_TYPES)})"
    )
    parser.add_argument("--size", type=_parse_size, default=256, help="image side, or HxW (default 256)")
    parser.add_argument("--num-train", type=int, default=60, help="good training images per product")
    parser.add_argument("--num-test-good", type=int, default=20, help="good test images per product")
    parser.add_argument("--num-test-per-defect", type=int, default=6, help="test images per product and defect")
    parser.add_argument("--seed", type=int, default=0, help="data-set seed")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        folders = generate_dataset(
            args.out,
            products=args.products,
            image_size=args.size,
            num_train=args.num_train,
            num_test_good=args.num_test_good,
            num_test_per_defect=args.num_test_per_defect,
            defect_types=args.defects,
            seed=args.seed,
            progress=not args.quiet,
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for folder in folders:
        print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
