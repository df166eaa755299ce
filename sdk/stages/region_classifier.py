"""The runtime defect classifier: the Inspector's regions -> anomaly-centred crops -> the bundle's classifier
graph (a runtime from :func:`protoinspect.sdk.backends.registry.create_classifier_backend`) -> one class per
defect and a merged frame class; and the vMF outlier rejector.

The crops are those of training (:func:`protoinspect.sdk.stages.discovery_crops.build_crops`): the boxes of
:func:`protoinspect.sdk.stages.crops.region_crops` over the region mask, of which the largest
``max(1, num_regions + extra_crops)`` make the frame's merged class. Every crop is classified, and each
defect takes the class of the crop built from its own region (the crops know their regions' labels):
no matching by box overlap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Protocol

import numpy as np
from protoinspect.sdk.backends.classifier_base import CLASSIFIER_LOGITS, require_classifier
from protoinspect.sdk.bundle import Bundle
from protoinspect.sdk.errors import BackendError, BundleError, ConfigError, InputError
from protoinspect.sdk.preprocess import PreprocessSpec, resize_to_rgb
from protoinspect.sdk.stages.contracts import ClassificationInput, ClassificationOutput, RegionClass
from protoinspect.sdk.stages.crops import CropBox, kept_crop_count, region_crops
from protoinspect.sdk.stages.discovery_crops import DiscoverySettings, crop_set, vit_crop_tokens
from protoinspect.sdk.stages.discovery_merge import merge_crops, softmax
from protoinspect.sdk.stages.mebin import normalize_map

VIT_FILE = "vit.safetensors"


class ClassifierRuntime(Protocol):
    """What the classifier stage needs of a runtime (:class:`protoinspect.sdk.backends.classifier_base.ClassifierBackendBase`)."""

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{"tokens", "regions"[, "descriptors"]}`` float32 -> at least ``{"logits": n x K}``."""
        ...

    def close(self) -> None:
        """Release the runtime."""
        ...


def bundle_vit(bundle: Bundle, settings: DiscoverySettings) -> Any:
    """The bundle's ViT token encoder when ``settings.token_source == "vit"``, else None.

    Raises:
        BundleError: the settings ask for a ViT the bundle does not carry.
    """
    if settings.token_source != "vit":
        return None
    if VIT_FILE not in bundle.manifest.files:
        raise BundleError(f"{bundle.path}: discovery settings use a ViT token source but {VIT_FILE} is missing")
    from protoinspect.sdk.models.vit_tokens import vit_from_bundle_bytes

    return vit_from_bundle_bytes(bundle.read_bytes(VIT_FILE), str(bundle.path / VIT_FILE))


@dataclass(frozen=True)
class ClassifierSettings:
    """What the classifier stage needs besides its runtime.

    Attributes:
        discovery: crop, grid and MEBin settings the classifier was trained with.
        kappa: vMF concentration (logits are ``kappa * cosine``).
        classes: class id -> (name, discovered without labels).
        spec: the bundle's pre-processing (model size; the ViT token source resizes the frame with it).
        color_order: channel order of the Inspector's frames (for the ViT token source).
    """

    discovery: DiscoverySettings
    kappa: float
    classes: Mapping[int, tuple[str, bool]] = field(default_factory=dict)
    spec: PreprocessSpec = field(default_factory=PreprocessSpec)
    color_order: Literal["rgb", "bgr"] = "bgr"

    def __post_init__(self) -> None:
        if not isinstance(self.discovery, DiscoverySettings):
            raise ConfigError(f"discovery must be DiscoverySettings, got {type(self.discovery).__name__}")
        if not float(self.kappa) > 0:
            raise ConfigError(f"kappa must be > 0, got {self.kappa!r}")
        if self.color_order not in ("rgb", "bgr"):
            raise ConfigError(f"color_order must be 'rgb' or 'bgr', got {self.color_order!r}")

    @classmethod
    def from_bundle(cls, bundle: Bundle, color_order: Literal["rgb", "bgr"] = "bgr") -> ClassifierSettings:
        """The settings recorded in the bundle (``manifest.discovery``, ``manifest.class_infos``).

        Raises:
            BundleError: the bundle has no classifier.
        """
        require_classifier(bundle)
        section = bundle.manifest.discovery
        assert section is not None
        classes = {int(c.id): (str(c.name), bool(c.discovered)) for c in bundle.manifest.class_infos}
        return cls(discovery=section.settings, kappa=float(section.classifier.config.kappa), classes=classes,
                   spec=bundle.manifest.preprocess_spec, color_order=color_order)


class RegionClassifier:
    """The bundle's defect classifier as an Inspector stage (a :class:`~protoinspect.sdk.stages.contracts.DefectClassifier`).

    Each defect gets the most probable class of the crop built from its own region; the frame gets
    the area-merged class of the largest crops (methods.md §3(b).7), as in training.
    """

    def __init__(self, runtime: ClassifierRuntime, settings: ClassifierSettings, vit: Any = None) -> None:
        """Assemble the stage.

        Args:
            runtime: runs the classifier graph (owned from now on: :meth:`close` closes it).
            settings: the bundle's classifier settings (:meth:`ClassifierSettings.from_bundle`).
            vit: the ViT token encoder when ``settings.discovery.token_source == "vit"`` (:func:`bundle_vit`).

        Raises:
            ConfigError: the token source is ``vit`` but no ViT was given.
        """
        if settings.discovery.token_source == "vit" and vit is None:
            raise ConfigError("the classifier's token source is a ViT: pass vit=bundle_vit(bundle, settings.discovery)")
        self.runtime = runtime
        self.settings = settings
        self._vit = vit

    def _class(self, class_id: int, score: float) -> RegionClass:
        name, novel = self.settings.classes.get(class_id, (f"class-{class_id}", True))
        return RegionClass(class_id=class_id, class_name=name, is_novel=novel, score=float(score))

    def classify(self, inputs: ClassificationInput) -> ClassificationOutput:
        """See :class:`~protoinspect.sdk.stages.contracts.DefectClassifier`.

        Raises:
            BackendError: the detector graph has no ``features`` output (re-export), or the runtime failed.
            InputError: a defect whose region is not in the region mask (an inconsistent region stage).
        """
        det, regions, disc = inputs.detection, inputs.regions, self.settings.discovery
        height, width = det.model_map.shape
        crops = region_crops(regions.mask, disc.crops, regions.labels)
        boxes = [c.box for c in crops] or [CropBox(0, 0, width, height)]
        crop_of = {label: k for k, c in enumerate(crops) for label in c.labels}
        token_fn, features, image = None, None, None
        if self._vit is not None or disc.uses_descriptors:
            image = det.image if det.image is not None else resize_to_rgb(inputs.frame, self.settings.spec,
                                                                          self.settings.color_order)
        if self._vit is not None:
            token_fn = partial(vit_crop_tokens, self._vit, image, grid=disc.grid, input_size=disc.vit_input)
        else:
            features = det.features()
            if features is None:
                raise BackendError("the detector graph gives no 'features' output: re-export the bundle "
                                   "(`protoinspect export BUNDLE`) to use its defect classifier")
        normalized = (regions.binarized.normalized if regions.binarized is not None
                      else normalize_map(det.model_map, disc.s_min, disc.s_max))
        cs = crop_set(boxes, features, regions.mask, inputs.object_mask, disc, normalized, regions.binarized, token_fn,
                      image if disc.uses_descriptors else None)
        out = self.runtime.run(cs.classifier_inputs(disc))
        logits = np.asarray(out[CLASSIFIER_LOGITS], np.float64)  # n x K
        kept = min(kept_crop_count(regions.num_regions, disc.crops), len(boxes))
        merged = merge_crops(logits[:kept], cs.areas[:kept], self.settings.kappa, disc.crops.merge_temperature)
        probs = softmax(logits)
        classes = []
        for label in regions.defect_labels:
            if label not in crop_of:
                raise InputError(f"defect region {label} is not in the region mask: the region stage's labels "
                                 "must be the connected components of its mask")
            k = crop_of[label]
            c = int(np.argmax(probs[k]))
            classes.append(self._class(c, logits[k, c] / self.settings.kappa))
        return ClassificationOutput(regions=tuple(classes), image_class=self._class(merged.class_id, merged.score))

    def close(self) -> None:
        """Close the runtime."""
        self.runtime.close()


class VmfRejector:
    """REJECTED when the frame's merged vMF score (cosine to its class prototype) is below ``threshold``."""

    def __init__(self, threshold: float) -> None:
        """Args: threshold: the bundle's calibrated ``reject_threshold`` (-inf: never reject)."""
        self.threshold = float(threshold)

    def is_outlier(self, output: ClassificationOutput) -> bool:
        """See :class:`~protoinspect.sdk.stages.contracts.OutlierRejector`."""
        return output.image_class is not None and output.image_class.score < self.threshold
