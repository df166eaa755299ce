"""The unlabelled-anomaly rule of discovery (threshold, then the highest scores up to a minimum) and its input checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from protoinspect.sdk.errors import ConfigError, DatasetError
from protoinspect.training.dataset_files import Sample
from protoinspect.training.discovery_config import discovery_config
from protoinspect.training.discovery_selection import (
    check_class_count,
    check_discovery_inputs,
    min_unlabelled_count,
    select_unlabelled,
)

SCORES = np.array([0.9, 0.1, 0.5, 0.7, 0.3, 0.95, 0.2, 0.5], np.float32)


def _test_split(*types: str) -> list[Sample]:
    good = [Sample(Path(f"good/{i}.png"), 0, "good", None) for i in range(2)]
    return good + [Sample(Path(f"{t}/{i}.png"), 1, t, None) for t in types for i in range(2)]


def test_the_threshold_decides_when_it_flags_enough() -> None:
    cfg = discovery_config(["min_unlabelled=3", "min_unlabelled_fraction=0"])
    sel = select_unlabelled(SCORES, range(8), 0.6, cfg)  # flags 0.95, 0.9, 0.7
    assert sel.indices == (5, 0, 3) and (sel.num_flagged, sel.num_added) == (3, 0)
    assert sel.score_cut == pytest.approx(0.7) and sel.threshold == 0.6 and sel.num_candidates == 8
    assert "more added" not in sel.describe()


def test_too_few_flagged_takes_the_highest_scores_up_to_the_minimum() -> None:
    cfg = discovery_config(["min_unlabelled=5", "min_unlabelled_fraction=0"])
    sel = select_unlabelled(SCORES, [0, 1, 2, 3, 4, 5, 6, 7], 0.92, cfg)
    assert sel.indices == (5, 0, 3, 2, 7)  # descending score, the tie (0.5, 0.5) in data set order
    assert (sel.num_flagged, sel.num_added) == (1, 4) and sel.score_cut == pytest.approx(0.5)
    assert "1 of 8 flagged" in sel.describe() and "4 more added by min_unlabelled" in sel.describe()
    none = select_unlabelled(SCORES, [1, 2, 4, 6], float("inf"), cfg)  # nothing flagged, only 4 candidates
    assert none.indices == (2, 4, 6, 1) and (none.num_flagged, none.num_added) == (0, 4)


def test_the_minimum_is_a_count_or_a_fraction_of_the_candidates() -> None:
    cfg = discovery_config()  # defaults: 16, or a quarter
    assert (cfg.min_unlabelled, cfg.min_unlabelled_fraction) == (16, 0.25)
    assert min_unlabelled_count(100, cfg) == 25 and min_unlabelled_count(40, cfg) == 16
    assert min_unlabelled_count(10, cfg) == 10  # capped at the candidates
    assert min_unlabelled_count(82, discovery_config(["min_unlabelled=0", "min_unlabelled_fraction=0"])) == 0
    with pytest.raises(ConfigError, match="min_unlabelled >= 0"):
        discovery_config(["min_unlabelled=-1"])
    with pytest.raises(ConfigError, match=r"min_unlabelled_fraction in \[0, 1\]"):
        discovery_config(["min_unlabelled_fraction=1.5"])


def test_fewer_than_two_unlabelled_anomalies_is_a_dataset_error() -> None:
    off = discovery_config(["min_unlabelled=0", "min_unlabelled_fraction=0"])
    with pytest.raises(DatasetError, match="flags 1 of 8 .*raise --set min_unlabelled"):
        select_unlabelled(SCORES, range(8), 0.92, off)
    with pytest.raises(DatasetError, match="add unlabelled test images"):
        select_unlabelled(SCORES, [3], float("-inf"), discovery_config())


def test_bad_data_sets_and_types_are_refused_with_the_fix() -> None:
    with pytest.raises(DatasetError, match=r"no defective test images.*add folders test/<defect_type>/"):
        check_discovery_inputs("d", _test_split(), [], [], None)
    assert check_discovery_inputs("d", _test_split("crack"), [], [], None) == ["crack"]  # one unlabelled type: fine
    with pytest.raises(ConfigError, match="every defect type .*no novel type is left"):
        check_discovery_inputs("d", _test_split("crack"), ["crack"], [], None)  # one type, and it is known
    with pytest.raises(ConfigError, match="no novel type is left"):
        check_discovery_inputs("d", _test_split("crack", "hole"), ["crack"], ["hole"], None)
    with pytest.raises(ConfigError, match="distinct defect types"):
        check_discovery_inputs("d", _test_split("crack"), ["crack"], ["crack"], None)
    with pytest.raises(ConfigError, match="--num-novel must be >= 1"):
        check_discovery_inputs("d", _test_split("crack", "hole"), [], [], -2)
    with pytest.raises(ConfigError, match="one-class classifier"):
        check_discovery_inputs("d", _test_split("crack", "hole"), [], [], 1)
    check_discovery_inputs("d", _test_split("crack", "hole"), ["crack"], [], 1)  # known + one novel: two classes


def test_class_count_bounds() -> None:
    cfg = discovery_config()
    with pytest.raises(ConfigError, match="more novel classes than the 4 unlabelled"):
        check_class_count(1, 5, 4, cfg)
    with pytest.raises(DatasetError, match="two classes in all"):
        check_class_count(0, None, 2, cfg)  # two images: k cannot be estimated above 1
    check_class_count(1, None, 2, cfg)
    check_class_count(0, None, 3, cfg)
    with pytest.raises(ConfigError, match="k_max >= 2"):
        discovery_config(["k_max=1"])
