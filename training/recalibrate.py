"""Re-calibrate a detector bundle on its held-out defect-free images and write a NEW bundle.

    python -m protoinspect.training.recalibrate --bundle OLD --out NEW [--data DIR ...] [--false-alarm-rate R]

Use after a change of inference settings (e.g. ``--set map_mode=prototype``) or of the runtime's
map computation, or to set the line's operating point: ``--false-alarm-rate 0.005`` puts the image
threshold at the 99.5 % quantile of the held-out scores (default: the bundle's own operating point), and
the new manifest says how far that can be trusted on so many images (``thresholds.calibration.trust``).
The held-out images are the ones training held out (same seed and split rule), read
from the data folders recorded in the manifest unless ``--data`` points elsewhere. The old bundle is
never modified.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from protoinspect.sdk.bundle import load_bundle, write_bundle
from protoinspect.sdk.errors import report_error
from protoinspect.sdk.errors import ConfigError, ProtoInspectError
from protoinspect.sdk.models.loading import load_detector_net
from protoinspect.training.batches import load_resized
from protoinspect.training.calibration import calibrate_detector
from protoinspect.training.config import DetectorTrainConfig
from protoinspect.training.datasets import load_dataset
from protoinspect.training.train_detector import batches_of, serialize_weights, split_holdout


def check_false_alarm_rate(rate: float) -> float:
    """``rate`` as a float in (0, 1), or ConfigError."""
    try:
        r = float(rate)
    except (TypeError, ValueError):
        r = float("nan")
    if not 0.0 < r < 1.0:
        msg = (f"the false-alarm rate is a share of good parts flagged, strictly between 0 and 1 "
               f"(e.g. 0.005 for 0.5 %), got {rate!r}")
        raise ConfigError(msg)
    return r


def recalibrate_bundle(bundle: str | Path, out: str | Path, *, data: Sequence[str | Path] | None = None,
                       overrides: dict[str, Any] | None = None, progress: bool = True, command: str = "",
                       false_alarm_rate: float | None = None) -> Path:
    """Recompute map normalisation and thresholds of ``bundle`` (with inference ``overrides``) into ``out``.

    ``false_alarm_rate``: the target share of good parts flagged; the image threshold becomes the
    (1 - rate) quantile of the held-out scores. None keeps the bundle's operating point (its recorded
    ``image_quantile``, else the training config's ``threshold_quantile``).

    Raises:
        ConfigError: a rate outside (0, 1), no training record in the manifest, or different data.
    """
    if false_alarm_rate is not None:
        false_alarm_rate = check_false_alarm_rate(false_alarm_rate)
    old = load_bundle(bundle)
    m = old.manifest
    try:
        cfg = DetectorTrainConfig.from_manifest(m)
    except ConfigError as exc:
        raise ConfigError(f"{old.path}: {exc}") from None
    roots = list(data) if data else [d["root"] for d in m.datasets]
    if len(roots) != len(m.datasets):
        msg = f"the bundle was trained on {len(m.datasets)} datasets; give as many --data folders ({len(roots)} given)"
        raise ConfigError(msg)
    net = load_detector_net(old, overrides)
    spec = m.preprocess_spec
    batches = []
    for root, info in zip(roots, m.datasets):
        ds = load_dataset(root, info["format"])
        _, hold = split_holdout(ds, cfg)
        if len(hold) != info["num_holdout"]:
            msg = f"{root}: {len(hold)} held-out images, the bundle recorded {info['num_holdout']} (different data?)"
            raise ConfigError(msg)
        batches += batches_of(load_resized(hold, ds.channels, spec, progress), spec)
    if false_alarm_rate is not None:
        image_quantile = round(1.0 - false_alarm_rate, 12)
    else:
        image_quantile = float((m.thresholds.get("calibration") or {}).get("image_quantile", cfg.threshold_quantile))
    thresholds = calibrate_detector(net, batches, image_quantile, cfg.pixel_quantile)
    model = dict(m.model)
    model["config"] = net.config.to_dict()
    extra = {**m.extra, "recalibrated_from": m.bundle_id}
    write_bundle(out, manifest_fields={
        "producer": {"command": command or "recalibrate_bundle()"},
        "preprocess": spec, "model": model, "thresholds": thresholds, "classes": m.classes,
        "datasets": m.datasets, "extra": extra,
    }, files={model.get("weights", "detector.safetensors"): serialize_weights(net)})
    return Path(out)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(prog="python -m protoinspect.training.recalibrate", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="bundle to re-calibrate (left unchanged)")
    p.add_argument("--out", required=True, help="new bundle directory")
    p.add_argument("--data", action="append", help="dataset folders, in training order (default: from the manifest)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="inference-only detector setting")
    p.add_argument("--false-alarm-rate", type=float, metavar="R",
                   help="operating point: target share of good parts flagged, 0 < R < 1 (e.g. 0.005); "
                        "default: the bundle's own")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    from protoinspect.training.evaluate_detector import parse_overrides

    try:
        out = recalibrate_bundle(args.bundle, args.out, data=args.data, overrides=parse_overrides(args.set),
                                 progress=not args.quiet, false_alarm_rate=args.false_alarm_rate,
                                 command=shlex.join(["python", "-m", "protoinspect.training.recalibrate", *(argv or sys.argv[1:])]))
    except ProtoInspectError as exc:
        return report_error(exc)
    print(f"bundle written: {out}")
    calibration = load_bundle(out).manifest.thresholds.get("calibration") or {}
    if calibration.get("trust"):
        print(f"threshold: {calibration['trust']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
