"""Training configuration schema (dataclasses), loaded from defaults, a YAML file and ``--set`` overrides."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protoinspect.sdk import config_codec
from protoinspect.sdk.config_overrides import apply_overrides as apply_overrides  # re-exported: the one --set path
from protoinspect.sdk.config_overrides import overrides_dict
from protoinspect.sdk.errors import ConfigError
from protoinspect.sdk.models.prototype_detector import LEGACY_DEFAULTS, DetectorConfig

if TYPE_CHECKING:
    from protoinspect.sdk.manifest import Manifest


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
    ``anomaly_fraction`` of them gets a synthetic anomaly (``training/pseudo_anomalies.py``). The
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
        """JSON-safe form (written into the bundle manifest; :func:`protoinspect.sdk.config_codec.to_dict`)."""
        return config_codec.to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, legacy: bool = False) -> DetectorTrainConfig:
        """Build from a (possibly partial) dict; unknown keys are an error (:mod:`protoinspect.sdk.config_codec`).

        ``legacy=True`` (reading an older bundle's manifest) drops the keys of the pre-v0.2 trainer
        (:data:`LEGACY_KEYS`) and reads the detector section as :meth:`DetectorConfig.from_manifest` does.
        """
        d = dict(d)
        if legacy:
            for key in LEGACY_KEYS:
                d.pop(key, None)
            if isinstance(d.get("detector"), Mapping):
                d["detector"] = {**LEGACY_DEFAULTS, **d["detector"]}
        return config_codec.from_dict(cls, d)

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> DetectorTrainConfig:
        """The training config a detector bundle records (``extra["training"]``, older layouts included).

        Raises:
            ConfigError: the manifest records no training config (re-train instead).
        """
        training = manifest.extra.get("training")
        if not isinstance(training, Mapping):
            raise ConfigError("the bundle's manifest.json records no training config "
                              "(extra.training); re-train with `python -m protoinspect.training.train_detector`")
        return cls.from_dict(training, legacy=True)

    @classmethod
    def _migrate_dict(cls, d: dict[str, Any]) -> dict[str, Any]:
        """Shorthand of files and ``--set``: ``image_size: 320`` means ``[320, 320]``."""
        size = d.get("image_size")
        if isinstance(size, int) and not isinstance(size, bool):
            d["image_size"] = [size, size]
        return d


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


def load_train_config(path: str | Path | None = None, overrides: Sequence[str] | None = None, *,
                      preset: str | None = None) -> DetectorTrainConfig:
    """Defaults, then a preset (see :func:`preset_path`), then an optional YAML/JSON file, then
    ``key=value`` overrides (:func:`protoinspect.sdk.config_overrides.apply_overrides`). A file sets only the
    keys it names; its ``detector`` section is merged key by key.

    Raises:
        ConfigError: a missing or malformed file, an unknown key, a bad value (naming the file and key).
    """
    files = ([preset_path(preset)] if preset is not None else []) + ([Path(path)] if path is not None else [])
    parts = []
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
            msg = f"{p}: top level must be a mapping of training settings"
            raise ConfigError(msg)
        parts.append(loaded)
    parts.append(overrides_dict(DetectorTrainConfig, list(overrides or [])))
    try:
        return config_codec.merge(DetectorTrainConfig(), *parts)
    except ConfigError as exc:
        if not files:
            raise
        raise ConfigError(f"{exc} (settings read from {', '.join(str(p) for p in files)})") from exc
