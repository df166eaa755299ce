"""Runtime defect classification from a discovery bundle: MEBin crops of the detector's features ->
the classifier graph (ONNX Runtime or torch) -> per-region classes, a merged frame class, and
outlier rejection by the calibrated vMF score."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from protoinspect.sdk._imports import require
from protoinspect.sdk.bundle import Bundle
from protoinspect.sdk.errors import BackendError, BundleError
from protoinspect.sdk.preprocess import resize_mask, resize_to_rgb
from protoinspect.sdk.stages.classification import ClassificationInput, ClassificationOutput, RegionClass
from protoinspect.sdk.stages.discovery_crops import DiscoverySettings, build_crops, vit_crop_tokens
from protoinspect.sdk.stages.discovery_merge import merge_crops, softmax

CLASSIFIER_ONNX = "classifier.onnx"


VIT_FILE = "vit.safetensors"


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


def has_classifier(bundle: Bundle) -> bool:
    """Whether the bundle carries a defect classifier (``protoinspect.training.train_discovery``)."""
    info = bundle.manifest.extra.get("discovery")
    return isinstance(info, dict) and "classifier" in info


class _OrtClassifier:
    def __init__(self, bundle: Bundle) -> None:
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        # A few crops of 64 tokens: one thread, and no spin-waiting that would steal the detector
        # session's cores between frames (two spinning thread pools on 2 cores halve both).
        options.intra_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(bundle.read_bytes(CLASSIFIER_ONNX), options,
                                             providers=["CPUExecutionProvider"])

    def __call__(self, tokens: np.ndarray, regions: np.ndarray) -> np.ndarray:
        return self._session.run(["logits"], {"tokens": tokens, "regions": regions})[0]


class _TorchClassifier:
    def __init__(self, bundle: Bundle) -> None:
        from protoinspect.sdk.models.loading import load_classifier_net

        self._torch = require("torch")
        self._net = load_classifier_net(bundle)

    def __call__(self, tokens: np.ndarray, regions: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            return self._net(torch.from_numpy(tokens), torch.from_numpy(regions))[1].numpy()


class DiscoveryClassifier:
    """The bundle's defect classifier as an Inspector stage (a :class:`DefectClassifier`).

    Each defect region gets the class of the crop that overlaps it most (its own crop's
    ``argmax``); the frame gets the area-merged class of all crops (methods.md §3(b).7).
    """

    def __init__(self, bundle: Bundle, backend: str = "onnxruntime", color_order: str = "bgr") -> None:
        """Load settings, classes and the classifier graph.

        Args:
            bundle: a bundle written by ``protoinspect.training.train_discovery``.
            backend: ``onnxruntime`` (needs ``classifier.onnx``) or ``torch``.
            color_order: channel order of the Inspector's frames (for the ViT token source).
                The ONNX Runtime classifier always runs on one thread without spin-waiting, so it
                never takes cores from the detector.

        Raises:
            BundleError: no classifier, or no ``classifier.onnx`` for onnxruntime.
        """
        if not has_classifier(bundle):
            raise BundleError(f"{bundle.path}: no defect classifier; train one with `python -m protoinspect.training.train_discovery`")
        info = bundle.manifest.extra["discovery"]
        self.settings = DiscoverySettings.from_dict(info["settings"])
        self.kappa = float(info["classifier"]["config"]["kappa"])
        self.image_size = tuple(bundle.manifest.preprocess_spec.image_size)
        self.classes = {int(c["id"]): (str(c["name"]), bool(c.get("discovered", False))) for c in bundle.manifest.classes}
        if backend == "onnxruntime":
            if CLASSIFIER_ONNX not in bundle.manifest.files:
                raise BundleError(f"{bundle.path} has no {CLASSIFIER_ONNX}: run `protoinspect export {bundle.path}`")
            self._run: Any = _OrtClassifier(bundle)
        else:
            self._run = _TorchClassifier(bundle)
        self.backend = backend
        self.color_order = color_order
        self.spec = bundle.manifest.preprocess_spec
        self._vit = bundle_vit(bundle, self.settings)

    def _region(self, class_id: int, score: float) -> RegionClass:
        name, novel = self.classes.get(class_id, (f"class-{class_id}", True))
        return RegionClass(class_id=class_id, class_name=name, is_novel=novel, score=float(score))

    def classify(self, inputs: ClassificationInput) -> ClassificationOutput:
        """See :class:`~protoinspect.sdk.stages.classification.DefectClassifier`."""
        det = inputs.detection
        if det.model_map is None or (det.features is None and self._vit is None):
            raise BackendError("the detector graph gives no 'features' output: re-export the bundle "
                               "(`protoinspect export BUNDLE`) to use its defect classifier")
        h, w = self.image_size
        obj = resize_mask(inputs.mask, (h, w)) if not inputs.mask.all() else None
        token_fn = None
        if self._vit is not None:
            image = resize_to_rgb(inputs.frame, self.spec, self.color_order)  # type: ignore[arg-type]
            token_fn = partial(vit_crop_tokens, self._vit, image, grid=self.settings.grid,
                               input_size=self.settings.vit_input)
        crops = build_crops(det.model_map, det.features, obj, self.settings, token_fn=token_fn)
        logits = np.asarray(self._run(crops.tokens, crops.regions), np.float64)  # n x K
        merged = merge_crops(logits, crops.areas, self.kappa, self.settings.crops.merge_temperature)
        image_class = self._region(merged.class_id, merged.score)
        fh, fw = inputs.mask.shape
        sx, sy = w / fw, h / fh
        probs = softmax(logits)
        regions = []
        for d in inputs.defects:
            x0, y0, x1, y1 = d.bbox_xyxy
            overlaps = [max(0.0, min(x1 * sx, b.x1) - max(x0 * sx, b.x0)) * max(0.0, min(y1 * sy, b.y1) - max(y0 * sy, b.y0))
                        for b in crops.boxes]
            k = int(np.argmax(overlaps))
            if overlaps[k] <= 0:
                regions.append(image_class)
                continue
            c = int(np.argmax(probs[k]))
            regions.append(self._region(c, logits[k, c] / self.kappa))
        return ClassificationOutput(regions=tuple(regions), image_class=image_class)


class VmfRejector:
    """REJECTED when the frame's merged vMF score (cosine to its class prototype) is below ``threshold``."""

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)

    def is_outlier(self, output: ClassificationOutput) -> bool:
        """See :class:`~protoinspect.sdk.stages.classification.OutlierRejector`."""
        return output.image_class is not None and output.image_class.score < self.threshold
