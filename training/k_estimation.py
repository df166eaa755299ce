"""Estimate the number of clusters K of a feature set by several criteria and a consensus of them (issue 13).

Criteria (see :mod:`protoinspect.training.k_criteria`; each scores every k in [k_min, k_max], higher is
better, and :func:`pick_k` picks its k): ``silhouette`` (Euclidean), ``silhouette_cosine``, ``eigengap``,
``bic`` and ``stability``. ``consensus`` (the default) runs them all and takes the k most of the voting
criteria (``CONSENSUS_VOTERS``) picked (a tie or a split vote: the lower median of the picks), so one
criterion's failure mode (silhouette and stability under-counting groups of clusters, BIC over-counting
non-Gaussian clusters, the eigengap merging small clusters) does not decide K alone. On the Gaussian-blob grid
of ``benchmarks/bench_k_estimation.py`` (240 cases, K = 2..6, seed 2) the consensus is exact in 0.99 of the
cases, the best single criterion (BIC) in 0.98, silhouette 0.94, cosine silhouette 0.79.

Typical use::

    est = estimate_k(features, k_min=2, k_max=8)          # consensus
    est.k, est.picks["bic"], est.scores["silhouette"][3]

Command line (estimated vs true K per criterion)::

    python -m protoinspect.training.k_estimation --features F.npy [--labels L.npy] --k-min 2 --k-max 8
        [--standardize] [--seed S]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from protoinspect.sdk.errors import ConfigError, InputError, ProtoInspectError, report_error
from protoinspect.training.k_criteria import (
    Fits,
    bic_scores,
    cosine_silhouette_scores,
    eigengap_scores,
    silhouette_scores,
    stability_scores,
)

CRITERIA: dict[str, Callable[[Fits, list[int]], dict[int, float]]] = {
    "silhouette": silhouette_scores,
    "silhouette_cosine": cosine_silhouette_scores,
    "eigengap": eigengap_scores,
    "bic": bic_scores,
    "stability": stability_scores,
}
#: the criteria whose picks the consensus combines
CONSENSUS_VOTERS: tuple[str, ...] = ("silhouette", "eigengap", "bic", "stability")
METHODS: tuple[str, ...] = (*CRITERIA, "consensus")
DEFAULT_METHOD = "consensus"
#: larger inputs are subsampled (seeded) to this many points: every criterion is O(n^2) in memory
MAX_POINTS = 2000
#: stability scores this close to the best count as ties, resolved to the larger k
STABILITY_TOLERANCE = 0.01


@dataclass(frozen=True)
class KEstimate:
    """The estimated number of clusters and how each criterion saw it.

    Attributes:
        k: the estimate of ``method``.
        method: the method that produced ``k``.
        scores: {criterion: {k: score}} for every criterion that ran (higher = better; a criterion that
            cannot score some k, e.g. silhouette at k = 1, has no entry for it).
        picks: {criterion: its best k}.
    """

    k: int
    method: str
    scores: dict[str, dict[int, float]] = field(default_factory=dict)
    picks: dict[str, int] = field(default_factory=dict)


def _check_features(features: np.ndarray) -> np.ndarray:
    """Features as an n x D float64 array; raises InputError when they cannot be clustered."""
    x = np.asarray(features)
    if x.ndim != 2:
        raise InputError(f"features must be a 2-D array (n x D), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(f"features are empty: shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise InputError(f"features must be real numbers, got dtype {x.dtype}")
    x = x.astype(np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.any(1))
        raise InputError(f"features contain NaN or infinite values in {len(rows)} row(s), first row {rows[0]}")
    return x


def _check_bounds(k_min: int, k_max: int, n: int, method: str, seed: int) -> None:
    """Raise ConfigError for unusable bounds, an unknown method or a bad seed."""
    for name, value in (("k_min", k_min), ("k_max", k_max), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    if k_min < 1:
        raise ConfigError(f"k_min must be >= 1, got {k_min}")
    if k_max < k_min:
        raise ConfigError(f"k_max must be >= k_min ({k_min}), got {k_max}")
    if k_max >= n:
        raise ConfigError(f"k_max must be < the number of points ({n}), got {k_max}")
    if method not in METHODS:
        raise ConfigError(f"method must be one of {list(METHODS)}, got {method!r}")
    if method in ("silhouette", "silhouette_cosine", "stability") and k_max < 2:
        raise ConfigError(f"method {method!r} cannot score k = 1: k_max must be >= 2, got {k_max}")


def standardize(x: np.ndarray) -> np.ndarray:
    """Columns centred and scaled to unit variance (constant columns become 0)."""
    std = x.std(0)
    return (x - x.mean(0)) / np.where(std > 0, std, 1.0)


def combine_picks(picks: Sequence[int]) -> int:
    """The k most criteria picked; on a tie for most votes (or all different), the lower median of the picks."""
    if not picks:
        raise ConfigError("no criterion produced a pick to combine")
    counts = Counter(picks).most_common()
    top = [k for k, c in counts if c == counts[0][1]]
    if len(top) == 1 and counts[0][1] >= 2:
        return int(top[0])
    ordered = sorted(picks)
    return int(ordered[(len(ordered) - 1) // 2])


def pick_k(criterion: str, scores: dict[int, float]) -> int:
    """A criterion's best k: the highest score, ties to the smaller k; for ``stability``, the largest k within
    ``STABILITY_TOLERANCE`` of the best score (well-separated groups of clusters are as stable as the clusters
    themselves, and the finer partition is the answer: exact K on the blob grid 0.63 -> 0.91)."""
    best = max(scores.values())
    if criterion == "stability":
        return max(k for k, v in scores.items() if v >= best - STABILITY_TOLERANCE)
    return min(k for k, v in scores.items() if v == best)


def estimate_k(features: np.ndarray, k_min: int, k_max: int, method: str = DEFAULT_METHOD, seed: int = 0, *,
               scale: bool = False) -> KEstimate:
    """Estimate the number of clusters in ``features``.

    Args:
        features: n x D real features, no NaN/inf.
        k_min: smallest candidate k (>= 1; the silhouette and stability criteria skip k = 1).
        k_max: largest candidate k (k_min <= k_max < n).
        method: one of ``METHODS``; ``"consensus"`` (the default, see the module docstring) runs every criterion.
        seed: seed of every random choice (k-means seeding, subsamples); the same seed gives the same result.
        scale: standardise each feature column first (for hand-made features with mixed units).

    Returns:
        The estimate with every criterion's scores and picks.

    Raises:
        InputError: features not 2-D, empty, non-numeric, NaN or infinite.
        ConfigError: bounds out of range (k_min < 1, k_max < k_min, k_max >= n), an unknown method, or a
            negative or non-integer seed.
    """
    x = _check_features(features)
    _check_bounds(k_min, k_max, len(x), method, seed)
    if len(x) > MAX_POINTS:
        x = x[np.sort(np.random.default_rng([int(seed), 99]).choice(len(x), MAX_POINTS, replace=False))]
    if scale:
        x = standardize(x)
    fits = Fits(x, int(seed))
    ks = list(range(int(k_min), int(k_max) + 1))
    names = list(CRITERIA) if method == "consensus" else [method]
    scores: dict[str, dict[int, float]] = {}
    picks: dict[str, int] = {}
    for name in names:
        table = CRITERIA[name](fits, ks)
        scores[name] = table
        if table:
            picks[name] = pick_k(name, table)
    if method == "consensus":
        k = combine_picks([picks[v] for v in CONSENSUS_VOTERS if v in picks])
    else:
        k = picks[method]
    return KEstimate(k=k, method=method, scores=scores, picks=picks)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m protoinspect.training.k_estimation", description=__doc__.split("\n")[0])
    p.add_argument("--features", required=True, help="n x D features (.npy)")
    p.add_argument("--labels", help="n true cluster labels (.npy), to report the true K")
    p.add_argument("--k-min", type=int, default=2)
    p.add_argument("--k-max", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--standardize", action="store_true", help="scale every feature column to unit variance")
    return p.parse_args(argv)


def _load(path: str) -> np.ndarray:
    """A .npy array; InputError naming the file when it cannot be read."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Print every criterion's estimated K (and the true K when labels are given); return the exit code."""
    args = _parse(argv)
    try:
        features = _load(args.features)
        labels = None if args.labels is None else _load(args.labels)
        if labels is not None and len(labels) != len(features):
            raise InputError(f"--labels has {len(labels)} entries but --features has {len(features)} rows")
        start = time.perf_counter()
        est = estimate_k(features, args.k_min, args.k_max, "consensus", args.seed, scale=args.standardize)
        wall = time.perf_counter() - start
    except ProtoInspectError as exc:
        return report_error(exc)
    true_k = None if labels is None else len(np.unique(labels))
    print(f"n={len(features)} D={features.shape[1]} k in [{args.k_min}, {args.k_max}] true K={true_k} "
          f"({wall:.1f} s)")
    print(f"{'criterion':<18} {'K':>3}  scores by k")
    rows = [*((name, est.picks.get(name)) for name in CRITERIA), ("consensus", est.k)]
    for name, k in rows:
        table = est.scores.get(name, {})
        cells = " ".join(f"{kk}:{v:.3g}" for kk, v in table.items())
        mark = "" if true_k is None or k is None else ("  exact" if k == true_k else
                                                      ("  +-1" if abs(k - true_k) == 1 else "  off"))
        print(f"{name:<18} {k if k is not None else '-':>3}  {cells}{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
