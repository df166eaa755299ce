"""Compare the K-estimation criteria of :mod:`protoinspect.training.k_estimation` (issue 13).

Two measurements:

* ``grid``: Gaussian blobs with known K (2..6) over separations, anisotropy, unequal sizes and dimensions;
  prints each criterion's exact and within-one accuracy (this is what the default method is chosen on).
* ``masks``: region features of the ground-truth masks of the anomalous test images of a data set (default
  MTD, true K = 5 defect types; any MVTec-layout product folder, e.g. of the synthetic line, works):
  ``protoinspect.sdk.stages.region_descriptors.describe_region`` when it exists, and the shape statistics of
  :func:`shape_statistics`; prints each criterion's K for three seeds.

Run::

    python benchmarks/bench_k_estimation.py grid [--quick]
    python benchmarks/bench_k_estimation.py masks [--root /work/shared/data/mtd]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from protoinspect.training.k_estimation import CRITERIA, estimate_k, standardize

SEPARATIONS = {"easy": 10.0, "medium": 6.0, "hard": 4.0}


def make_blobs(k: int, dims: int, separation: float, rng: np.random.Generator, *, anisotropic: bool = False,
               unequal: bool = False, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """``k`` Gaussian blobs in ``dims`` dimensions (standard deviation 1 along each blob's widest axis) whose
    centres are at least ``separation`` apart; returns (features n x dims, labels n)."""
    centres: list[np.ndarray] = []
    box = separation * max(1.0, k ** (1.0 / dims)) * 1.5
    while len(centres) < k:
        c = rng.uniform(-box, box, dims)
        if all(np.linalg.norm(c - o) >= separation for o in centres):
            centres.append(c)
        else:
            box *= 1.01
    weights = rng.uniform(1.0, 4.0, k) if unequal else np.ones(k)
    sizes = np.maximum(15, np.round(n * weights / weights.sum())).astype(int)
    xs, ys = [], []
    for j in range(k):
        z = rng.normal(size=(sizes[j], dims))
        if anisotropic:  # axis scales in [0.25, 1] (widest = 1), then a random rotation
            z *= np.concatenate([[1.0], rng.uniform(0.25, 1.0, dims - 1)])
            q, _ = np.linalg.qr(rng.normal(size=(dims, dims)))
            z = z @ q
        xs.append(centres[j] + z)
        ys.append(np.full(sizes[j], j))
    return np.concatenate(xs), np.concatenate(ys)


def run_grid(quick: bool, seed: int) -> None:
    """Every criterion on every blob configuration; prints the accuracy table."""
    names = [*CRITERIA, "consensus"]
    hits = {m: [0, 0] for m in names}
    by_sep = {s: {m: [0, 0] for m in names} for s in SEPARATIONS}
    cases = 0
    start = time.perf_counter()
    dims_list = (2, 10)
    reps = 1 if quick else 2
    for sep_name, sep in SEPARATIONS.items():
        for k in range(2, 7):
            for dims in dims_list:
                for aniso in (False, True):
                    for unequal in (False, True):
                        for rep in range(reps):
                            rng = np.random.default_rng([seed, k, dims, aniso, unequal, rep, int(sep)])
                            x, _ = make_blobs(k, dims, sep, rng, anisotropic=aniso, unequal=unequal)
                            est = estimate_k(x, 2, 8, "consensus", seed=rep)
                            cases += 1
                            for m in names:
                                got = est.k if m == "consensus" else est.picks[m]
                                for table in (hits, by_sep[sep_name]):
                                    table[m][0] += got == k
                                    table[m][1] += abs(got - k) <= 1
    wall = time.perf_counter() - start
    print(f"{cases} cases, k in [2, 8], {wall:.0f} s")
    print(f"{'criterion':<18} {'exact':>6} {'+-1':>6}   " + "  ".join(f"{s} exact/+-1" for s in SEPARATIONS))
    per = cases // len(SEPARATIONS)
    for m in names:
        cells = "  ".join(f"{by_sep[s][m][0] / per:>5.2f}/{by_sep[s][m][1] / per:.2f}      " for s in SEPARATIONS)
        print(f"{m:<18} {hits[m][0] / cases:>6.2f} {hits[m][1] / cases:>6.2f}   {cells}")


def shape_statistics(mask: np.ndarray) -> np.ndarray:
    """Hand-made shape features of a binary mask: log area, elongation, extent, compactness, components,
    border contact."""
    import cv2

    m = (mask > 0).astype(np.uint8)
    area = float(m.sum())
    if area == 0:
        return np.zeros(6)
    ys, xs = np.nonzero(m)
    cov = np.cov(np.stack([xs, ys]).astype(float)) if area > 1 else np.eye(2)
    ev = np.sort(np.linalg.eigvalsh(cov + 1e-6 * np.eye(2)))
    elongation = float(np.sqrt(ev[1] / ev[0]))
    extent = area / float((np.ptp(xs) + 1) * (np.ptp(ys) + 1))
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    perimeter = sum(cv2.arcLength(c, True) for c in contours)
    compactness = 4.0 * np.pi * area / max(perimeter, 1.0) ** 2
    components = cv2.connectedComponents(m)[0] - 1
    border = float(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())
    return np.array([np.log(area), np.log(elongation), extent, compactness, np.log(components), border])


def run_masks(root: str, seed: int) -> None:
    """Every criterion (seeds ``seed`` .. ``seed + 2``) on two feature sets of the ground-truth masks of the
    anomalous test images under ``root``: the SDK's region descriptors (when the module exists) and
    :func:`shape_statistics`."""
    import cv2
    from protoinspect.sdk.errors import InputError
    from protoinspect.training.datasets import load_dataset, read_dataset_image, read_mask

    try:
        describe = importlib.import_module("protoinspect.sdk.stages.region_descriptors").describe_region
    except (ImportError, AttributeError):
        describe = None
        print("protoinspect.sdk.stages.region_descriptors is not available: shape statistics only")
    ds = load_dataset(root)
    samples = [s for s in ds.test if s.label == 1]
    sets: dict[str, list[np.ndarray]] = {"shape_statistics": []}
    if describe is not None:
        sets["region_descriptors"] = []
    types: list[str] = []
    skipped = rescued = 0
    start = time.perf_counter()
    for s in samples:
        image = read_dataset_image(s.image_path, ds.channels)
        assert s.mask_path is not None
        mask = read_mask(s.mask_path, image.shape[:2], s.image_path)
        small = cv2.resize(mask, (256, 256), interpolation=cv2.INTER_NEAREST) > 127
        if not small.any():  # a defect thinner than the downscaling step: keep every pixel it touches
            small = cv2.resize((mask > 127).astype(np.uint8) * 255, (256, 256), interpolation=cv2.INTER_AREA) > 0
            rescued += 1
        if not small.any():
            skipped += 1
            continue
        mask = small
        sets["shape_statistics"].append(shape_statistics(mask))
        if describe is not None:
            image = cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA)
            try:
                sets["region_descriptors"].append(np.asarray(describe(mask, image), dtype=np.float64).ravel())
            except InputError as exc:
                raise SystemExit(f"describe_region failed on {s.mask_path}: {exc}") from exc
        types.append(s.defect_type)
    print(f"{ds.name}: {len(samples)} anomalous test images, {rescued} masks empty at 256x256 by nearest "
          f"resizing kept by area resizing, {skipped} skipped (no pixel > 127 at full size), "
          f"true K = {len(set(types))} ({time.perf_counter() - start:.0f} s to extract)")
    for name, rows in sets.items():
        x = standardize(np.stack(rows))
        for s in range(seed, seed + 3):
            t0 = time.perf_counter()
            est = estimate_k(x, 2, 8, "consensus", seed=s)
            picks = "  ".join(f"{c}={est.picks.get(c)}" for c in CRITERIA)
            print(f"{name} (n={len(x)}, D={x.shape[1]}, seed {s}, {time.perf_counter() - t0:.1f} s): {picks}  "
                  f"consensus={est.k}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``grid`` or ``masks``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=("grid", "masks"))
    p.add_argument("--quick", action="store_true", help="grid: one repetition per configuration")
    p.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mtd"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.what == "grid":
        run_grid(args.quick, args.seed)
    else:
        run_masks(args.root, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
