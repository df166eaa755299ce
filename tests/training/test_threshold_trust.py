"""training/threshold_trust.py against closed forms and scipy's binomial test, and the calibration it feeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import binom, binomtest

from protoinspect.sdk.errors import ConfigError
from protoinspect.training.threshold_trust import (
    false_alarm_trust,
    false_alarm_upper_bound,
    format_percent,
    min_images_for_target,
    trust_sentence,
)


def test_zero_false_alarms_in_100_images_bounds_the_rate_at_2_95_percent() -> None:
    upper = false_alarm_upper_bound(100, 0)
    assert upper == pytest.approx(1 - 0.05 ** (1 / 100), rel=1e-9)  # the "rule of three" closed form
    assert upper == pytest.approx(0.029513, abs=1e-6)


@pytest.mark.parametrize(("n", "k"), [(1, 0), (1, 1), (10, 3), (54, 1), (100, 0), (250, 7), (1000, 12)])
def test_upper_bound_matches_scipy_binomtest(n: int, k: int) -> None:
    ci = binomtest(k, n, alternative="less").proportion_ci(confidence_level=0.95, method="exact")
    assert false_alarm_upper_bound(n, k) == pytest.approx(ci.high, rel=1e-9, abs=1e-12)


def test_upper_bound_is_where_the_binomial_tail_reaches_5_percent(rng: np.random.Generator) -> None:
    n = int(rng.integers(5, 500))
    k = int(rng.integers(0, n))
    upper = false_alarm_upper_bound(n, k)
    assert binom.cdf(k, n, upper) == pytest.approx(0.05, abs=1e-9)
    assert false_alarm_upper_bound(n, k, confidence=0.99) > upper  # more confidence, wider bound
    assert false_alarm_upper_bound(n, n) == 1.0


def test_min_images_for_target() -> None:
    assert min_images_for_target(0.01) == 299  # ceil(ln 0.05 / ln 0.99) = ceil(298.07)
    assert min_images_for_target(0.05) == 59
    assert min_images_for_target(0.005) == math.ceil(math.log(0.05) / math.log(0.995))
    for target in (0.2, 0.01, 0.001):
        n = min_images_for_target(target)
        assert false_alarm_upper_bound(n, 0) <= target < false_alarm_upper_bound(n - 1, 0)


def test_trust_fields_and_sentence() -> None:
    t = false_alarm_trust(54, 0, 0.01)
    assert t["num_images"] == 54 and t["num_false_alarms"] == 0 and t["false_alarm_rate"] == 0.0
    assert t["false_alarm_rate_upper"] == pytest.approx(0.05397, abs=1e-5)
    assert t["min_images_for_target"] == 299 and not t["target_confirmed"]
    assert t["trust"].startswith("calibrated on 54 normal images: the true false-alarm rate is below 5.4 % "
                                 "with 95 % confidence (target 1 %); 299 normal images")
    assert trust_sentence(54, 0, 0.01) == t["trust"]

    met = false_alarm_trust(400, 0, 0.01)
    assert met["target_confirmed"] and "meets the target of 1 %" in met["trust"] and "0.75 %" in met["trust"]

    # enough images, but the quantile threshold leaves some at or above it: not confirmed, and says why
    many = false_alarm_trust(400, 4, 0.01)
    assert many["false_alarm_rate"] == 0.01 and not many["target_confirmed"]
    assert "4 of them score at or above the threshold" in many["trust"]

    # a threshold at the highest calibration score (quantile 1.0): no finite sample confirms a zero rate
    zero = false_alarm_trust(20, 0, 0.0)
    assert zero["min_images_for_target"] is None and "0 %" in zero["trust"] and not zero["target_confirmed"]


def test_percent_formatting_rounds_bounds_up() -> None:
    assert format_percent(0.054) == "5.4" and format_percent(0.01) == "1" and format_percent(0.005) == "0.5"
    assert format_percent(0.0295) == "2.9" and format_percent(0.0295, round_up=True) == "3"
    assert format_percent(0.0534, round_up=True) == "5.4" and format_percent(0.0999, round_up=True) == "10"
    assert format_percent(0.0) == "0"


@pytest.mark.parametrize(("n", "k"), [(0, 0), (-3, 0), (10, -1), (10, 11), (2.5, 0), (10, 1.5), (True, 0)])
def test_bad_counts_raise_config_error(n: object, k: object) -> None:
    with pytest.raises(ConfigError):
        false_alarm_upper_bound(n, k)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        false_alarm_trust(n, k, 0.01)  # type: ignore[arg-type]


@pytest.mark.parametrize("target", [0.0, 1.0, -0.01, 1.5, float("nan")])
def test_target_outside_0_1_raises_config_error(target: float) -> None:
    with pytest.raises(ConfigError, match="target false-alarm rate"):
        min_images_for_target(target)


@pytest.mark.parametrize("target", [1.0, -0.01, float("nan"), "1 %", None])
def test_trust_rejects_a_target_outside_0_1(target: float) -> None:
    with pytest.raises(ConfigError, match="target false-alarm rate"):
        false_alarm_trust(10, 0, target)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 95])
def test_bad_confidence_raises_config_error(confidence: float) -> None:
    with pytest.raises(ConfigError, match="confidence"):
        false_alarm_upper_bound(10, 0, confidence)


def test_calibrate_thresholds_reports_the_trust_of_its_image_threshold(rng: np.random.Generator) -> None:
    from protoinspect.sdk.models.prototype_detector import DetectorConfig, PrototypeDetectorNet
    from protoinspect.training.calibration import calibrate_thresholds, run_detector

    net = PrototypeDetectorNet(DetectorConfig(num_prototypes=8, embed_dim=32, num_heads=2, blur_sigma=1.0)).eval()
    batches = [torch.from_numpy(rng.standard_normal((4, 3, 32, 32)).astype(np.float32)) for _ in range(3)]
    out = calibrate_thresholds(net, batches, image_quantile=0.9, pixel_quantile=0.99)
    _, scores = run_detector(net, batches)
    cal = out["calibration"]
    assert cal["num_images"] == 12 and cal["target_false_alarm_rate"] == 0.1
    assert cal["num_false_alarms"] == int((scores >= out["image"]).sum()) >= 1
    assert cal["false_alarm_rate"] == cal["num_false_alarms"] / 12
    assert cal["false_alarm_rate_upper"] == pytest.approx(false_alarm_upper_bound(12, cal["num_false_alarms"]))
    assert cal["min_images_for_target"] == 29 and cal["trust"].startswith("calibrated on 12 normal images")
    assert cal["image_quantile"] == 0.9  # the existing fields stay

    top = calibrate_thresholds(net, batches, image_quantile=1.0, pixel_quantile=0.99)["calibration"]
    assert top["target_false_alarm_rate"] == 0.0 and top["min_images_for_target"] is None
    with pytest.raises(ConfigError, match="image_quantile"):
        calibrate_thresholds(net, batches, image_quantile=1.2, pixel_quantile=0.99)
    with pytest.raises(ConfigError, match="at least one"):
        calibrate_thresholds(net, [], image_quantile=0.9, pixel_quantile=0.99)
