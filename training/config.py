"""Training configuration schema (dataclasses), loaded from defaults, a YAML file and ``--set`` overrides."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protoinspect.sdk.errors import ConfigError
from protoinspect.sdk.models.prototype_detector import DetectorConfig


@dataclass(frozen=True)
class DetectorTrainConfig:
    """Everything that decides how a detector is trained. Defaults suit a 2-core CPU.

    Attributes:
        detector: model architecture.
        image_size: model input (height, width).
        pretrained: optional encoder weights (local file or ``torchvision:DEFAULT``); None = learn
            the encoder from our own data only.
        encoder_steps: steps of self-supervised encoder training on synthetic anomalies (0 to skip,
            e.g. with pretrained weights).
        encoder_crop: side of the random crops used for encoder training (fully convolutional).
        encoder_batch / decoder_batch: batch sizes.
        anomaly_fraction: fraction of encoder-training crops that get a synthetic anomaly.
        decoder_steps: steps of prototype-decoder training on normal images (encoder frozen).
        lr_encoder / lr_decoder / weight_decay: AdamW settings (cosine schedule, short warm-up).
        constraint_weight: weight of the prototype coherence loss.
        holdout_fraction / min_holdout: normal training images held out per dataset for calibration.
        threshold_quantile: image threshold = this quantile of held-out normal scores.
        pixel_quantile: pixel threshold = this quantile of held-out normal map values.
        checkpoint_every: steps between resumable checkpoints.
        seed: everything random derives from it.
        num_threads: torch CPU threads (0 = torch's default).
    """

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    image_size: tuple[int, int] = (256, 256)
    pretrained: str | None = None
    encoder_steps: int = 1500
    encoder_crop: int = 128
    encoder_batch: int = 24
    anomaly_fraction: float = 0.6
    decoder_steps: int = 1000
    decoder_batch: int = 8
    lr_encoder: float = 2e-3
    lr_decoder: float = 1e-3
    weight_decay: float = 1e-4
    constraint_weight: float = 0.1
    holdout_fraction: float = 0.1
    min_holdout: int = 4
    threshold_quantile: float = 0.99
    pixel_quantile: float = 0.999
    checkpoint_every: int = 200
    seed: int = 0
    num_threads: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.encoder_steps >= 0 and self.decoder_steps >= 1, "encoder_steps >= 0 and decoder_steps >= 1"),
            (self.encoder_batch >= 2 and self.decoder_batch >= 1, "encoder_batch >= 2 and decoder_batch >= 1"),
            (0.0 <= self.anomaly_fraction <= 1.0, "anomaly_fraction in [0, 1]"),
            (0.0 < self.holdout_fraction < 0.5, "holdout_fraction in (0, 0.5)"),
            (0.5 <= self.threshold_quantile <= 1.0 and 0.5 <= self.pixel_quantile <= 1.0, "quantiles in [0.5, 1]"),
            (self.encoder_crop % 16 == 0 and self.encoder_crop >= 32, "encoder_crop a multiple of 16, >= 32"),
            (self.checkpoint_every >= 1, "checkpoint_every >= 1"),
        ]
        for ok, what in checks:
            if not ok:
                msg = f"invalid training config: need {what}"
                raise ConfigError(msg)
        if self.encoder_crop > min(self.image_size):
            msg = f"encoder_crop {self.encoder_crop} exceeds image_size {self.image_size}"
            raise ConfigError(msg)
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (written into the bundle manifest)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["detector"] = self.detector.to_dict()
        d["image_size"] = list(self.image_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DetectorTrainConfig:
        """Build from a (possibly partial) dict; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            msg = f"unknown training config keys {sorted(unknown)}; known: {sorted(known)}"
            raise ConfigError(msg)
        d = dict(d)
        if "detector" in d and not isinstance(d["detector"], DetectorConfig):
            d["detector"] = DetectorConfig.from_dict(d["detector"])
        if "image_size" in d:
            size = d["image_size"]
            d["image_size"] = (size, size) if isinstance(size, int) else tuple(size)
        return cls(**d)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"none": None, "null": None, "true": True, "false": False}.get(text.lower(), text)


def apply_overrides(base: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (dotted keys reach into ``detector``; values parsed as JSON)."""
    out = json.loads(json.dumps(base))
    for item in overrides:
        if "=" not in item:
            msg = f"override {item!r} must look like key=value (e.g. decoder_steps=500)"
            raise ConfigError(msg)
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                msg = f"override {key!r}: {part!r} is not a section"
                raise ConfigError(msg)
            node = node[part]
        if parts[-1] not in node:
            msg = f"override {key!r}: unknown key {parts[-1]!r}; known: {sorted(node)}"
            raise ConfigError(msg)
        node[parts[-1]] = _parse_value(value.strip())
    return out


def load_train_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DetectorTrainConfig:
    """Defaults, then an optional YAML/JSON file, then ``key=value`` overrides."""
    base = DetectorTrainConfig().to_dict()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            msg = f"config file not found: {p}"
            raise ConfigError(msg)
        text = p.read_text()
        if p.suffix in (".yaml", ".yml"):
            import yaml

            loaded = yaml.safe_load(text) or {}
        else:
            loaded = json.loads(text)
        if not isinstance(loaded, dict):
            msg = f"{p}: top level must be a mapping"
            raise ConfigError(msg)
        det_section = loaded.pop("detector", None) or {}
        if not isinstance(det_section, dict):
            msg = f"{p}: 'detector' must be a mapping of detector settings"
            raise ConfigError(msg)
        det = {**base["detector"], **det_section}
        base = {**base, **loaded, "detector": det}
    if overrides:
        base = apply_overrides(base, overrides)
    return DetectorTrainConfig.from_dict(base)
