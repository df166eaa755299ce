"""Build the torch detector from a model bundle (torch backend, evaluation and export)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from protoinspect.sdk.bundle import Bundle, load_bundle
from protoinspect.sdk.errors import BundleError, ConfigError
from protoinspect.sdk.manifest import RECREATE_HINT

if TYPE_CHECKING:  # torch is imported only when a net is built
    from protoinspect.sdk.models.prototype_detector import PrototypeDetectorNet

# detector settings that only change inference, not the weights (safe to override for ablations)
INFERENCE_SETTINGS = ("map_mode", "score_mode", "score_window", "score_top_fraction", "blur_sigma", "level_weights",
                      "attention_impl")


def load_detector_net(bundle: Bundle | str | Path, overrides: dict[str, Any] | None = None) -> PrototypeDetectorNet:
    """Return the bundle's ``PrototypeDetectorNet`` in eval mode with its weights loaded.

    ``overrides`` replaces inference-only settings (:data:`INFERENCE_SETTINGS`) for ablations; the
    bundle's thresholds were calibrated without them, so only threshold-free metrics are comparable.

    Raises:
        BundleError: the bundle is invalid, or its weights do not fit the architecture it names.
    """
    from safetensors.torch import load as load_safetensors

    from protoinspect.sdk.models.prototype_detector import DetectorConfig, PrototypeDetectorNet

    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    model_info = bundle.manifest.model
    if model_info.get("architecture") != "PrototypeDetectorNet":
        msg = (f"{bundle.path / 'manifest.json'}: model architecture {model_info.get('architecture')!r} is not "
               f"PrototypeDetectorNet (not a ProtoInspect detector bundle); {RECREATE_HINT}")
        raise BundleError(msg)
    if not isinstance(model_info.get("config"), dict):
        raise BundleError(f"{bundle.path / 'manifest.json'}: key 'model' has no detector 'config'; {RECREATE_HINT}")
    config = dict(model_info["config"])
    for key, value in (overrides or {}).items():
        if key not in INFERENCE_SETTINGS:
            msg = f"cannot override {key!r} at inference (changes the weights); allowed: {INFERENCE_SETTINGS}"
            raise ConfigError(msg)
        config[key] = value
    net = PrototypeDetectorNet(DetectorConfig.from_manifest(config))
    weights_name = model_info.get("weights", "detector.safetensors")
    try:
        state = load_safetensors(bundle.read_bytes(weights_name))
        net.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as exc:
        msg = f"{bundle.path / weights_name}: weights do not match the manifest's model config ({exc}); re-create the bundle with `python -m protoinspect.training.train_detector ...`"
        raise BundleError(msg) from exc
    return net.eval()


def load_classifier_net(bundle: Bundle | str | Path) -> Any:
    """Return the bundle's ``DefectClassifierNet`` (eval mode, weights loaded).

    Raises:
        BundleError: the bundle has no classifier (train one with ``protoinspect train-discovery``),
            or its weights do not fit the recorded architecture.
    """
    from safetensors.torch import load as load_safetensors

    from protoinspect.sdk.models.defect_classifier import DefectClassifierNet

    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    section = bundle.manifest.discovery  # typed and validated when the manifest was read
    if section is None:
        msg = (f"{bundle.path / 'manifest.json'} has no defect classifier; train one with "
               f"`protoinspect train-discovery --data DIR --bundle {bundle.path}`")
        raise BundleError(msg)
    config = section.classifier.config
    name = section.classifier.weights
    try:
        net = DefectClassifierNet(config)
    except ConfigError as exc:
        raise BundleError(f"{bundle.path / 'manifest.json'}: invalid classifier config ({exc})") from exc
    try:
        net.load_state_dict(load_safetensors(bundle.read_bytes(name)), strict=True)
    except (RuntimeError, ValueError) as exc:
        msg = f"{bundle.path / name}: weights do not match the manifest's classifier config ({exc}); re-train discovery"
        raise BundleError(msg) from exc
    return net.eval()
