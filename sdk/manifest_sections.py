"""Typed sections of a bundle manifest's ``extra`` object, read and written by :mod:`protoinspect.sdk.config_codec`.

The on-disk layout is the one tools always wrote (``extra.discovery``, ``extra.onnx``, ``extra.classifier_onnx``,
``extra.tensorrt``); :class:`ManifestSections` is its typed view, validated when a manifest is read, so a
reader asks ``manifest.discovery.classifier.config.kappa`` instead of digging through nested dicts.
Records that tools extend over time keep the keys they do not declare (``rest``) and write them back.

Imported lazily by :mod:`protoinspect.sdk.manifest` (the stage settings it holds import the stages
package, which imports the bundle code). No torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from protoinspect.sdk.config_codec import rest_field
from protoinspect.sdk.errors import ConfigError
from protoinspect.sdk.models.classifier_config import ClassifierConfig
from protoinspect.sdk.stages.discovery_crops import DiscoverySettings

__all__ = ["ClassifierRecord", "DiscoverySection", "DiscoveryTraining", "EngineRecord", "GraphRecord",
           "ManifestSections", "TensorRTSection"]


@dataclass(frozen=True)
class ClassifierRecord:
    """``extra.discovery.classifier``: which network the bundle's classifier is and where its weights are.

    Attributes:
        config: the architecture, ``in_channels`` and ``num_classes`` included.
        architecture: class name of the network (``DefectClassifierNet``).
        weights: bundle file of its weights.
    """

    config: ClassifierConfig
    architecture: str = "DefectClassifierNet"
    weights: str = "classifier.safetensors"

    def __post_init__(self) -> None:
        if self.config.in_channels is None:
            raise ConfigError("config.in_channels is missing: a bundle's classifier records the channels it was "
                              "built for")


@dataclass(frozen=True)
class DiscoveryTraining:
    """``extra.discovery.training``: how the classifier was trained (statistics; nothing the runtime needs).

    Attributes:
        config: the ``DiscoveryTrainConfig`` as a dict (read it with
            ``protoinspect.training.discovery_config.DiscoveryTrainConfig.from_manifest``).
        data / known_types / excluded_types: the data set and its labelled / left-out defect types.
        num_labelled / num_unlabelled: training images of known types / flagged unlabelled anomalies.
        detector_bundle_id: the detector bundle it was trained on.
        flag_threshold: detector score from which an unlabelled image counted as an anomaly.
        num_flagged / num_added_by_rule / score_cut: unlabelled images at or above ``flag_threshold``, those
            the minimum-count rule added (the highest scores below it; ``config.min_unlabelled``), and the
            lowest detector score taken; None in bundles from before the rule.
        k_novel_estimated / num_novel_given: the estimated (or given) number of novel classes.
        silhouettes: cosine silhouette per candidate number of novel classes.
        loss_contrastive_last / loss_prototype_last: mean loss of the last steps of each stage.
        seconds: training time.
        num_held_out: training images held out of training to calibrate the outlier threshold.
        rest: keys of newer writers, kept as they are.
    """

    config: dict[str, Any] = field(default_factory=dict)
    data: str | None = None
    known_types: list[str] = field(default_factory=list)
    excluded_types: list[str] = field(default_factory=list)
    num_labelled: int | None = None
    num_unlabelled: int | None = None
    detector_bundle_id: str | None = None
    flag_threshold: float | None = None
    num_flagged: int | None = None
    num_added_by_rule: int | None = None
    score_cut: float | None = None
    k_novel_estimated: int | None = None
    num_novel_given: int | None = None
    silhouettes: dict[str, float] = field(default_factory=dict)
    k_method: str | None = None
    k_picks: dict[str, int] = field(default_factory=dict)
    num_held_out: int | None = None
    loss_pretrain_last: float | None = None
    loss_contrastive_last: float | None = None
    loss_prototype_last: float | None = None
    seconds: float | None = None
    rest: dict[str, Any] = rest_field()


@dataclass(frozen=True)
class DiscoverySection:
    """``extra.discovery``: the bundle's defect classifier (written by ``train_discovery`` and ``discover``).

    The runtime classifier reads ``settings`` (crops, MEBin range, ``reject_threshold``), ``classifier.config``
    (``kappa``, ``grid``, ...) and the manifest's class list (``Manifest.class_infos``).

    Attributes:
        settings: how anomalies become classifier inputs and the calibrated outlier threshold.
        classifier: the network and its weights file.
        training: how it was trained.
        edits: class edits of ``protoinspect discover`` (accept / names / merges / drops), oldest first.
    """

    settings: DiscoverySettings
    classifier: ClassifierRecord
    training: DiscoveryTraining = field(default_factory=DiscoveryTraining)
    edits: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class GraphRecord:
    """``extra.onnx`` / ``extra.classifier_onnx``: an exported ONNX graph (``protoinspect export``).

    Attributes:
        file: its bundle file (None: the default name, ``detector.onnx`` / ``classifier.onnx``).
        opset: ONNX opset.
        inputs / outputs: I/O description (names, or dicts with name, dtype and shape).
        parity: the torch / onnxruntime parity report (None: not verified).
        rest: the export's other facts (exporter, op types, TensorRT lint, ...), kept as they are.
    """

    file: str | None = None
    opset: int | None = None
    inputs: list[Any] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)
    parity: dict[str, Any] | None = None
    rest: dict[str, Any] = rest_field()


@dataclass(frozen=True)
class EngineRecord:
    """One entry of ``extra.tensorrt.engines`` (``export/build_engine.py``); its sidecar holds the details.

    Attributes:
        onnx_file: the bundle's ONNX file it was built from.
        precision: ``fp32``, ``fp16`` or ``int8``.
        compute_capability: GPU architecture it runs on (``"8.7"``).
        tensorrt_version / gpu_name / dla_core: the build's TensorRT, GPU and DLA core (None: GPU only).
        sidecar: its ``.engine.json`` sidecar file (None: ``<engine>.json``).
    """

    onnx_file: str
    precision: Literal["fp32", "fp16", "int8"]
    compute_capability: str
    tensorrt_version: str = ""
    dla_core: int | None = None
    gpu_name: str = ""
    sidecar: str | None = None
    rest: dict[str, Any] = rest_field()


@dataclass(frozen=True)
class TensorRTSection:
    """``extra.tensorrt``: the TensorRT engines built for the bundle, engine file -> :class:`EngineRecord`."""

    engines: dict[str, EngineRecord] = field(default_factory=dict)
    rest: dict[str, Any] = rest_field()


@dataclass(frozen=True)
class ManifestSections:
    """The typed view of a manifest's ``extra`` object (None: the section is absent).

    Attributes:
        discovery: the defect classifier.
        onnx: the exported detector graph.
        classifier_onnx: the exported classifier graph.
        tensorrt: built TensorRT engines.
        rest: free-form keys (``training``, ``train_seconds``, ``derived_from``, ...), kept as they are.
    """

    discovery: DiscoverySection | None = None
    onnx: GraphRecord | None = None
    classifier_onnx: GraphRecord | None = None
    tensorrt: TensorRTSection | None = None
    rest: dict[str, Any] = rest_field()
