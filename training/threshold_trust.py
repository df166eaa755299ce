"""How far a calibrated image threshold can be trusted: false-alarm statistics on defect-free images.

The image threshold is set on held-out defect-free images. A line engineer wants to know how many good
parts it will reject. With ``n`` calibration images of which ``k`` score at or above the threshold (the
Inspector flags ``score >= threshold``), the one-sided exact (Clopper-Pearson) upper confidence bound on
the true false-alarm rate is the ``confidence`` quantile of Beta(k + 1, n - k).

That bound stays valid although the threshold was chosen from the same images: for continuous scores the
chance that a new normal image beats the (k+1)-th largest calibration score is itself Beta(k + 1, n - k)
distributed, and a threshold with ``k`` calibration scores at or above it lies above that order statistic.
What it assumes is that the line's good parts look like the calibration images (same product, camera,
lighting).

Pure numpy/scipy; no torch.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from protoinspect.sdk.errors import ConfigError

CONFIDENCE = 0.95


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _in_open_unit(value: Any, what: str, hint: str = "") -> float:
    """``value`` as a float strictly between 0 and 1, else a ConfigError naming ``what``."""
    v = _as_float(value)
    if not 0.0 < v < 1.0:
        msg = f"{what} must be in (0, 1){hint}, got {value!r}"
        raise ConfigError(msg)
    return v


def _check_confidence(confidence: float) -> float:
    return _in_open_unit(confidence, "confidence")


def _check_rate(rate: float, what: str) -> float:
    return _in_open_unit(rate, what, " (e.g. 0.01 for 1 %)")


def _as_count(value: Any, what: str) -> int:
    whole = isinstance(value, numbers.Integral) or (isinstance(value, numbers.Real) and float(value).is_integer())
    if isinstance(value, bool) or not whole:
        msg = f"{what} must be a whole number, got {value!r}"
        raise ConfigError(msg)
    return int(value)


def _check_counts(num_images: int, num_false_alarms: int) -> tuple[int, int]:
    n = _as_count(num_images, "num_images")
    if n < 1:
        msg = f"the false-alarm rate needs at least 1 defect-free calibration image, got num_images={num_images!r}"
        raise ConfigError(msg)
    k = _as_count(num_false_alarms, "num_false_alarms")
    if not 0 <= k <= n:
        msg = f"num_false_alarms must be in [0, num_images={n}], got {num_false_alarms!r}"
        raise ConfigError(msg)
    return n, k


def false_alarm_upper_bound(num_images: int, num_false_alarms: int, confidence: float = CONFIDENCE) -> float:
    """One-sided exact (Clopper-Pearson) upper bound on the true false-alarm rate.

    Args:
        num_images: defect-free images the threshold was checked on (>= 1).
        num_false_alarms: how many of them score at or above the threshold.
        confidence: e.g. 0.95: the true rate is below the bound with this confidence.

    Returns:
        The bound in [0, 1] (1.0 when every image is a false alarm).

    Raises:
        ConfigError: ``num_images < 1``, a count outside [0, num_images] or ``confidence`` outside (0, 1).
    """
    from scipy.stats import beta

    n, k = _check_counts(num_images, num_false_alarms)
    c = _check_confidence(confidence)
    if k == n:
        return 1.0
    return float(beta.ppf(c, k + 1, n - k))


def min_images_for_target(target_false_alarm_rate: float, confidence: float = CONFIDENCE) -> int:
    """Smallest number of defect-free images that, with none at or above the threshold, bounds the
    false-alarm rate at ``target_false_alarm_rate`` with ``confidence``: ceil(ln(1 - c) / ln(1 - target)).

    Raises:
        ConfigError: target or confidence outside (0, 1).
    """
    target = _check_rate(target_false_alarm_rate, "the target false-alarm rate")
    c = _check_confidence(confidence)
    n = max(1, math.ceil(math.log1p(-c) / math.log1p(-target)))
    # the closed form in floating point can be off by one at an exact boundary: settle it on the bound itself
    while n > 1 and false_alarm_upper_bound(n - 1, 0, c) <= target:
        n -= 1
    while false_alarm_upper_bound(n, 0, c) > target:
        n += 1
    return n


def format_percent(rate: float, *, round_up: bool = False) -> str:
    """``0.054 -> "5.4"``, ``0.01 -> "1"``, ``0.005 -> "0.5"``: percent to two significant digits.

    ``round_up`` rounds towards the larger value (for upper bounds: never state more confidence than there is).
    """
    p = 100.0 * float(rate)
    if p == 0.0 or not math.isfinite(p):
        return f"{p:g}"
    exponent = math.floor(math.log10(abs(p))) - 1  # place of the second significant digit
    units = p / 10.0**exponent
    units = math.ceil(units - 1e-9) if round_up else round(units)
    text = f"{units * 10.0**exponent:.{max(0, -exponent)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def trust_sentence(num_images: int, num_false_alarms: int, target_false_alarm_rate: float,
                   confidence: float = CONFIDENCE) -> str:
    """One sentence for a line engineer on what the calibration shows (see :func:`false_alarm_trust`)."""
    return false_alarm_trust(num_images, num_false_alarms, target_false_alarm_rate, confidence)["trust"]


def false_alarm_trust(num_images: int, num_false_alarms: int, target_false_alarm_rate: float,
                      confidence: float = CONFIDENCE) -> dict[str, Any]:
    """False-alarm statistics of a threshold on ``num_images`` defect-free calibration images.

    Args:
        num_images: calibration images (>= 1).
        num_false_alarms: how many score at or above the threshold.
        target_false_alarm_rate: the rate the threshold was set for, in [0, 1); 0 (threshold at the
            highest calibration score) cannot be confirmed by any finite number of images.
        confidence: confidence of the upper bound.

    Returns:
        ``target_false_alarm_rate``, ``num_images``, ``num_false_alarms``, ``false_alarm_rate``
        (empirical), ``false_alarm_rate_upper``, ``confidence``, ``min_images_for_target`` (None for a
        zero target), ``target_confirmed`` (upper bound <= target) and ``trust`` (a sentence).

    Raises:
        ConfigError: bad counts, a target outside [0, 1) or a confidence outside (0, 1).
    """
    n, k = _check_counts(num_images, num_false_alarms)
    c = _check_confidence(confidence)
    target = _as_float(target_false_alarm_rate)
    if not 0.0 <= target < 1.0:
        msg = f"the target false-alarm rate must be in [0, 1), got {target_false_alarm_rate!r}"
        raise ConfigError(msg)
    upper = false_alarm_upper_bound(n, k, c)
    needed = min_images_for_target(target, c) if target > 0 else None
    confirmed = target > 0 and upper <= target
    conf = format_percent(c)
    head = (f"calibrated on {n} normal image{'s' if n != 1 else ''}: the true false-alarm rate is below "
            f"{format_percent(upper, round_up=True)} % with {conf} % confidence")
    if target == 0:
        tail = "; no finite number of images can confirm a target of 0 %"
    elif confirmed:
        tail = f", which meets the target of {format_percent(target)} %"
    elif needed is not None and n < needed:
        tail = (f" (target {format_percent(target)} %); {needed} normal images, none scoring at or above the "
                "threshold, would be needed to confirm the target")
    else:
        tail = (f" (target {format_percent(target)} %); {k} of them score at or above the threshold, so the "
                f"target is not confirmed (with none at or above it, {needed} images would confirm it)")
    return {
        "target_false_alarm_rate": target,
        "num_images": n,
        "num_false_alarms": k,
        "false_alarm_rate": k / n,
        "false_alarm_rate_upper": upper,
        "confidence": c,
        "min_images_for_target": needed,
        "target_confirmed": bool(confirmed),
        "trust": head + tail,
    }
