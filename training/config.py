"""Training configuration schema (dataclasses), loaded from defaults, a YAML file and ``--set`` overrides."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protoinspect.sdk.errors import ConfigError
from protoinspect.sdk.models.prototype_detector import DetectorConfig


PRESETS_DIR = Path(__file__).with_name("configs")
PRESETS = ("fast", "default", "long")
PLACEMENTS = ("auto", "object", "anywhere")
DEVICES = ("auto", "cpu", "cuda")
# keys of the two-phase trainer before v0.2 (manifests of older bundles carry them): read and ignored
LEGACY_KEYS = ("encoder_steps", "decoder_steps", "encoder_crop", "encoder_batch", "decoder_batch", "lr_encoder",
               "lr_decoder")


@dataclass(frozen=True)
class DetectorTrainConfig:
    """Everything that decides how a detector is trained. Defaults (= the ``default`` preset) suit one
    data set in about 30 minutes on a 2-core CPU.

    Training is one joint phase. Each step draws ``batch`` crops of normal images; a share
    ``anomaly_fraction`` of them gets a synthetic anomaly (``training/anomaly_synthesis.py``). The
    prototype decoder learns to rebuild the *clean* image's encoder features from the anomalous
    image's features (``restore_clean``; the anomaly must not be reconstructed), and the anomaly head
    learns to segment the synthetic anomaly from the features and their reconstruction (focal + Dice).
    The encoder learns through the anomaly head only (reconstruction targets are not back-propagated
    into it, which would let the features collapse).

    Attributes:
        detector: model architecture.
        image_size: model input (height, width).
        pretrained: optional encoder weights (local file or ``torchvision:DEFAULT``); None = learn
            the encoder from our own data only.
        train_encoder: the encoder learns jointly (False keeps it as initialised: only sensible with
            ``pretrained`` weights).
        steps / batch / crop: training steps, images per step and the side of their random crops.
        lr / weight_decay: AdamW (cosine schedule, short warm-up).
        anomaly_fraction: share of training crops that get a synthetic anomaly.
        anomaly_placement: ``object`` keeps anomalies on the object (Otsu foreground of each image),
            ``anywhere`` on the whole image, ``auto`` decides per data set from its training images
            (object when the foreground is a consistent part of the frame).
        restore_clean: the decoder's target is the clean image's features (False: its own input's,
            the plain reconstruction of Pro-AD; an ablation).
        recon_weight / constraint_weight: weights of the reconstruction and prototype coherence losses.
        holdout_fraction / min_holdout: normal training images held out per dataset for calibration.
        threshold_quantile: image threshold = this quantile of held-out normal scores (1 - target
            false-alarm rate).
        pixel_quantile: pixel threshold = this quantile of held-out normal map values.
        checkpoint_every: steps between resumable checkpoints.
        seed: everything random derives from it.
        num_threads: torch CPU threads (0 = torch's default).
        device: ``auto`` (CUDA when there is one), ``cpu`` or ``cuda`` (an error when absent). On CUDA
            training runs in bfloat16 mixed precision; the bundle is the same.
    """

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    image_size: tuple[int, int] = (256, 256)
    pretrained: str | None = None
    train_encoder: bool = True
    steps: int = 3000
    batch: int = 12
    crop: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    anomaly_fraction: float = 0.5
    anomaly_placement: str = "auto"
    restore_clean: bool = True
    recon_weight: float = 1.0
    constraint_weight: float = 0.1
    holdout_fraction: float = 0.1
    min_holdout: int = 4
    threshold_quantile: float = 0.99
    pixel_quantile: float = 0.999
    checkpoint_every: int = 200
    seed: int = 0
    num_threads: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        checks = [
            (self.steps >= 1 and self.batch >= 2, "steps >= 1 and batch >= 2"),
            (0.0 <= self.anomaly_fraction <= 1.0, "anomaly_fraction in [0, 1]"),
            (self.anomaly_placement in PLACEMENTS, f"anomaly_placement in {PLACEMENTS}"),
            (self.device in DEVICES, f"device in {DEVICES}"),
            (0.0 < self.holdout_fraction < 0.5, "holdout_fraction in (0, 0.5)"),
            (0.5 <= self.threshold_quantile < 1.0 and 0.5 <= self.pixel_quantile <= 1.0,
             "threshold_quantile in [0.5, 1) and pixel_quantile in [0.5, 1]"),
            (self.crop % 16 == 0 and self.crop >= 32, "crop a multiple of 16, >= 32"),
            (self.checkpoint_every >= 1 and self.min_holdout >= 1, "checkpoint_every >= 1 and min_holdout >= 1"),
            (self.recon_weight >= 0 and self.constraint_weight >= 0 and self.lr > 0, "non-negative loss weights, lr > 0"),
        ]
        for ok, what in checks:
            if not ok:
                msg = f"invalid training config: need {what}"
                raise ConfigError(msg)
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        if self.crop > min(self.image_size):
            msg = f"crop {self.crop} exceeds image_size {self.image_size}"
            raise ConfigError(msg)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (written into the bundle manifest)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["detector"] = self.detector.to_dict()
        d["image_size"] = list(self.image_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, legacy: bool = False) -> DetectorTrainConfig:
        """Build from a (possibly partial) dict; unknown keys are an error.

        ``legacy=True`` (reading an older bundle's manifest) drops the keys of the pre-v0.2 trainer.
        """
        d = dict(d)
        if legacy:
            for key in LEGACY_KEYS:
                d.pop(key, None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            msg = f"unknown training config keys {sorted(unknown)}; known: {sorted(known)}"
            raise ConfigError(msg)
        if "detector" in d and not isinstance(d["detector"], DetectorConfig):
            d["detector"] = (DetectorConfig.from_manifest if legacy else DetectorConfig.from_dict)(d["detector"])
        if "image_size" in d:
            size = d["image_size"]
            d["image_size"] = (size, size) if isinstance(size, int) else tuple(size)
        return cls(**d)


def preset_path(name: str) -> Path:
    """The YAML file of a training preset (``fast``: the README demo; ``default``: about 30 minutes for
    one data set on a 2-core CPU; ``long``: a GPU).

    Raises:
        ConfigError: no such preset.
    """
    if name not in PRESETS:
        msg = f"unknown preset {name!r}; choose one of {list(PRESETS)}"
        raise ConfigError(msg)
    return PRESETS_DIR / f"{name}.yaml"


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


def load_train_config(path: str | Path | None = None, overrides: list[str] | None = None, *,
                      preset: str | None = None) -> DetectorTrainConfig:
    """Defaults, then a preset (see :func:`preset_path`), then an optional YAML/JSON file, then
    ``key=value`` overrides."""
    base = DetectorTrainConfig().to_dict()
    files = ([preset_path(preset)] if preset is not None else []) + ([Path(path)] if path is not None else [])
    for p in files:
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
