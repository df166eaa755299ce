"""Which test images discovery learns from, and the checks of its inputs (data set, known types, K).

The unlabelled anomalies are chosen from detector scores alone (never from labels), by one rule:

* every unlabelled test image whose score is >= the flag threshold (the bundle's calibrated image
  threshold unless ``--flag-threshold``) is taken;
* if that is fewer than ``n_min = max(cfg.min_unlabelled, ceil(cfg.min_unlabelled_fraction * N))``
  (N = unlabelled test images, ``n_min`` capped at N), the highest-scoring unlabelled images are
  taken up to ``n_min`` instead (descending score, ties in data set order). The flagged images are
  the top of that order, so they are always among them.

A detector threshold is calibrated for few false alarms; on real objects it can flag only a handful
of defective images (or none), too few to estimate the number of types from. :class:`UnlabelledSelection`
records how many images the threshold flagged, how many the rule added and the effective score cut
(the lowest score taken); ``train_discovery`` writes them into the bundle and prints them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from protoinspect.sdk.errors import ConfigError, DatasetError
from protoinspect.training.dataset_layout import Sample
from protoinspect.training.discovery_config import DiscoveryTrainConfig


@dataclass(frozen=True)
class UnlabelledSelection:
    """The unlabelled anomalies discovery learns from.

    Attributes:
        indices: positions (into the candidate list's owner) of the images taken, flagged first.
        num_flagged: images scoring >= ``threshold``.
        num_added: images the minimum-count rule added (0 when the threshold flagged enough).
        threshold: the flag threshold.
        score_cut: the lowest detector score among the images taken (every image taken scores >= it).
        num_candidates: unlabelled test images the images were chosen from.
    """

    indices: tuple[int, ...]
    num_flagged: int
    num_added: int
    threshold: float
    score_cut: float | None
    num_candidates: int

    def describe(self) -> str:
        """One line for the user, e.g. ``5 flagged at score >= 0.71, 11 added (highest scores), cut 0.42``."""
        text = f"unlabelled anomalies: {self.num_flagged} of {self.num_candidates} flagged at score >= {self.threshold:.4g}"
        if self.num_added:
            text += (f", {self.num_added} more added by min_unlabelled (the highest scores below it); "
                     f"effective score cut {self.score_cut:.4g}")
        return text


def min_unlabelled_count(num_candidates: int, cfg: DiscoveryTrainConfig) -> int:
    """``max(min_unlabelled, ceil(min_unlabelled_fraction * num_candidates))``, capped at ``num_candidates``."""
    need = max(cfg.min_unlabelled, math.ceil(cfg.min_unlabelled_fraction * num_candidates - 1e-9))
    return min(num_candidates, need)


def select_unlabelled(scores: np.ndarray, candidates: Sequence[int], threshold: float,
                      cfg: DiscoveryTrainConfig) -> UnlabelledSelection:
    """Apply the rule of the module doc to ``scores[candidates]`` (detector scores only, no labels).

    Raises:
        DatasetError: fewer than 2 images would be taken (too few unlabelled test images, or the rule
            switched off with ``min_unlabelled=0`` and the threshold flags fewer than 2).
    """
    cand = np.asarray(candidates, int)
    s = np.asarray(scores, np.float64)[cand] if len(cand) else np.zeros(0)
    order = cand[np.argsort(-s, kind="stable")]  # descending score, ties in data set order
    flagged = [int(i) for i in order if scores[i] >= threshold]
    need = min_unlabelled_count(len(cand), cfg)
    taken = flagged if len(flagged) >= need else [int(i) for i in order[:need]]
    if len(taken) < 2:
        raise DatasetError(
            f"discovery needs >= 2 unlabelled anomalies; the detector flags {len(flagged)} of {len(cand)} unlabelled "
            f"test image(s) at score >= {threshold:.4g} and the minimum-count rule takes {need}: add unlabelled "
            "test images (test/<defect_type>/), or raise --set min_unlabelled=N (or lower --flag-threshold)")
    cut = float(min(scores[i] for i in taken))
    return UnlabelledSelection(tuple(taken), len(flagged), len(taken) - len(flagged), float(threshold), cut, len(cand))


def check_discovery_inputs(root: object, test: Sequence[Sample], known: Sequence[str], exclude: Sequence[str],
                           num_novel: int | None) -> list[str]:
    """Check the data set and the known / excluded types before anything runs; returns the defect types.

    Discovery needs at least one defect type left unlabelled (the novel classes are learned from it)
    and at least two classes in all (known + novel): a data set with a single defect type is fine when
    that type is left unlabelled (its novel classes are estimated), refused when it is ``--known``.

    Raises:
        DatasetError: the data set has no defective test images.
        ConfigError: unknown or overlapping ``known`` / ``exclude`` types, every defect type known or
            excluded, ``num_novel`` < 1, or one class in all (no known type and ``num_novel`` = 1).
    """
    types = sorted({s.defect_type for s in test if s.label == 1})
    if not types:
        raise DatasetError(f"{root}: no defective test images (only test/good); discovery learns defect types from "
                           "them: add folders test/<defect_type>/ with images of each defect type")
    bad = [t for t in (*known, *exclude) if t not in types]
    if bad or set(known) & set(exclude):
        raise ConfigError(f"--known/--exclude-type must be distinct defect types of {root}: {types}; got bad {bad}")
    if num_novel is not None and num_novel < 1:
        raise ConfigError(f"--num-novel must be >= 1, got {num_novel}; leave it out to estimate it")
    left = [t for t in types if t not in known and t not in exclude]
    if not left:
        raise ConfigError(f"{root}: every defect type ({types}) is --known or --exclude-type, so no novel type is left "
                          "to discover; leave at least one type unlabelled (drop it from --known)")
    if not known and num_novel == 1:
        raise ConfigError("--num-novel 1 without --known types gives a one-class classifier (every defect gets the "
                          "same name); use --num-novel >= 2, leave it out to estimate it, or label a known type")
    return types


def check_class_count(num_known: int, num_novel: int | None, num_unlabelled: int, cfg: DiscoveryTrainConfig) -> None:
    """After the selection: at most one novel class per unlabelled image, and two classes in all.

    Raises:
        ConfigError: ``num_novel`` exceeds the unlabelled images taken.
        DatasetError: too few unlabelled images for two classes in all (no known type and < 3 images,
            with which the number of novel classes cannot be estimated above 1).
    """
    if num_novel is not None and num_novel > num_unlabelled:
        raise ConfigError(f"--num-novel {num_novel} is more novel classes than the {num_unlabelled} unlabelled "
                          f"anomalies taken; use --num-novel <= {num_unlabelled} or raise --set min_unlabelled")
    possible = num_novel if num_novel is not None else max(1, min(cfg.k_max, num_unlabelled - 1))
    if num_known + possible < 2:
        raise DatasetError(f"only {num_unlabelled} unlabelled anomalies and no --known type: discovery needs two "
                           "classes in all; add unlabelled test images, raise --set min_unlabelled, or label a known type")
