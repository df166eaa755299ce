"""Configuration of discovery training (``python -m protoinspect.training.train_discovery``), with ``--set`` overrides."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from protoinspect.sdk import config_codec
from protoinspect.sdk.config_overrides import apply_overrides
from protoinspect.sdk.errors import ConfigError
from protoinspect.sdk.models.classifier_config import ClassifierConfig

if TYPE_CHECKING:
    from protoinspect.sdk.manifest import Manifest

ANOMALY_PRIORS = ("mebin", "gt")
VARIANTS = ("identity", "hflip", "vflip", "rot180")
#: ClassifierConfig keys that configs and bundles before the nesting held at the top level (read into ``classifier``).
FLAT_CLASSIFIER_KEYS = ("grid", "embed_dim", "num_layers", "num_heads", "proj_dim", "kappa")


#: ways to estimate the number of novel classes (``k_method``)
K_METHODS = ("silhouette_cosine", "consensus", "silhouette", "eigengap", "bic", "stability")


@dataclass(frozen=True)
class DiscoveryTrainConfig:
    """Everything that decides how the defect classifier is trained. Defaults suit a 2-core CPU.

    Attributes:
        classifier: the classifier's architecture (grid, embed_dim, num_layers, num_heads, mlp_ratio,
            proj_dim, kappa, attention_impl; ``--set classifier.kappa=16``). Training sets its
            ``in_channels`` (from the detector's features) and ``num_classes`` (known + novel).
        contrastive_steps: steps of representation learning (two-view InfoNCE + SupCon on labels).
        prototype_steps: steps of prototype learning (labels + balanced self-labelling).
        batch: crops per step.
        lr / weight_decay: AdamW settings (cosine schedule).
        temperature: InfoNCE temperature; supcon_temperature for the labelled SupCon term.
        sinkhorn_epsilon / sinkhorn_iters: entropic regularisation of the balanced assignments.
        contrastive_weight: weight of the InfoNCE term during prototype learning.
        k_max: largest number of novel classes considered when estimating it.
        k_method: how the number of novel classes is estimated on the unlabelled embeddings:
            ``silhouette_cosine`` (spherical k-means, the default of earlier versions) or a criterion of
            :func:`protoinspect.training.k_estimation.estimate_k` (``consensus``, ``silhouette``,
            ``eigengap``, ``bic``, ``stability``); every criterion's pick is recorded in the bundle.
        min_unlabelled / min_unlabelled_fraction: the fewest unlabelled anomalies discovery learns from,
            ``max(min_unlabelled, ceil(min_unlabelled_fraction * N))`` of the N unlabelled test images
            (capped at N): when the flag threshold flags fewer, the highest-scoring images are taken up to
            that count (detector scores only; :mod:`protoinspect.training.discovery_selection`). 16 = two
            images per candidate class at k_max = 8; a quarter, because a discovery set is gathered to hold
            defects (the synthetic line's test split is 36 of 56 defective), so the top quarter of the
            scores stays well inside them. ``min_unlabelled=0 min_unlabelled_fraction=0``: the threshold only.
        reject_quantile / reject_holdout_fraction: the outlier threshold is the ``reject_quantile``
            quantile of the vMF scores of held-out images: ``reject_holdout_fraction`` of the labelled and
            of the unlabelled training images (at least one of each group with 4 or more) take no part in
            training; 0: the training images' own scores (optimistic: they were fitted).
        region_method / peak_fraction: how the anomalous pixels of a map are found
            (:class:`protoinspect.sdk.stages.discovery_crops.DiscoverySettings`): ``peak`` (default) or ``mebin``.
        pretrain_steps / pretrain_per_kind: steps of pre-training on synthetic anomalies of every kind of
            :data:`protoinspect.training.pseudo_anomalies.KINDS` pasted on the training images (the kind is
            the label; :mod:`protoinspect.training.discovery_pretrain`), ``pretrain_per_kind`` images per
            kind; 0 steps: none. 100 by default: on the synthetic development line (seed 1, six products)
            it raised the mean NMI / ARI / F1 from 0.125 / 0.046 / 0.286 to 0.175 / 0.058 / 0.306
            (docs/results.md).
        descriptors: give the classifier the region descriptors of each crop as a third input
            (weight ``classifier.descriptor_weight``).
        jitters: random box jitters precomputed per crop and flip variant (views are drawn from them).
        box_jitter: relative shift/scale of jittered boxes.
        feature_noise / token_drop: feature-level augmentation of each view.
        anomaly_prior: ``mebin`` (our detector's maps, the product path) or ``gt`` (ground-truth
            masks; an ablation, reported separately).
        masker: object masker for the region guidance (``none`` or ``otsu``; as in the Inspector).
        seed / num_threads: reproducibility and CPU threads (0 = torch's default).
        vit_weights: a local pretrained ViT checkpoint (DINO / timm layout); set, the classifier's
            tokens come from image crops through it (stored in the bundle) instead of the detector's
            features. vit_input: the crops' side in pixels for the ViT.
    """

    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    contrastive_steps: int = 300
    prototype_steps: int = 300
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    temperature: float = 0.2
    supcon_temperature: float = 0.1
    sinkhorn_epsilon: float = 0.05
    sinkhorn_iters: int = 3
    contrastive_weight: float = 0.5
    k_max: int = 8
    k_method: str = "silhouette_cosine"
    min_unlabelled: int = 16
    min_unlabelled_fraction: float = 0.25
    reject_quantile: float = 0.05
    reject_holdout_fraction: float = 0.2
    region_method: str = "peak"
    peak_fraction: float = 0.5
    descriptors: bool = True
    pretrain_steps: int = 100
    pretrain_per_kind: int = 12
    jitters: int = 3
    box_jitter: float = 0.15
    feature_noise: float = 0.05
    token_drop: float = 0.1
    anomaly_prior: str = "mebin"
    masker: str = "none"
    seed: int = 0
    num_threads: int = 0
    vit_weights: str | None = None
    vit_input: int = 224

    def __post_init__(self) -> None:
        checks = [
            (self.contrastive_steps >= 0 and self.prototype_steps >= 0, "steps >= 0"),
            (self.batch >= 4, "batch >= 4"),
            (self.k_max >= 2, "k_max >= 2"),
            (self.k_method in K_METHODS, f"k_method in {K_METHODS}"),
            (self.min_unlabelled >= 0, "min_unlabelled >= 0"),
            (0.0 <= self.min_unlabelled_fraction <= 1.0, "min_unlabelled_fraction in [0, 1]"),
            (0.0 <= self.reject_quantile < 0.5, "reject_quantile in [0, 0.5)"),
            (self.jitters >= 1, "jitters >= 1"),
            (self.pretrain_steps >= 0 and self.pretrain_per_kind >= 1, "pretrain_steps >= 0, pretrain_per_kind >= 1"),
            (0.0 <= self.reject_holdout_fraction <= 0.5, "reject_holdout_fraction in [0, 0.5]"),
            (self.region_method in ("mebin", "peak"), "region_method in ('mebin', 'peak')"),
            (0.0 < self.peak_fraction < 1.0, "peak_fraction in (0, 1)"),
            (self.anomaly_prior in ANOMALY_PRIORS, f"anomaly_prior in {ANOMALY_PRIORS}"),
            (self.masker in ("none", "otsu"), "masker in ('none', 'otsu')"),
            (self.temperature > 0 and self.supcon_temperature > 0 and self.sinkhorn_epsilon > 0, "positive temperatures"),
        ]
        for ok, what in checks:
            if not ok:
                raise ConfigError(f"invalid discovery config: need {what}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (written into the bundle manifest; :func:`protoinspect.sdk.config_codec.to_dict`)."""
        return config_codec.to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DiscoveryTrainConfig:
        """Build from a (possibly partial) dict, also of the flat layout older bundles recorded; unknown keys
        are an error (:mod:`protoinspect.sdk.config_codec`)."""
        return config_codec.from_dict(cls, d)

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> DiscoveryTrainConfig:
        """The config a discovery bundle was trained with (``manifest.discovery.training.config``).

        Raises:
            ConfigError: the bundle has no discovery section (train one with ``train_discovery``).
        """
        if manifest.discovery is None:
            raise ConfigError("the bundle has no defect classifier (no discovery section in manifest.json); "
                              "train one with `python -m protoinspect.training.train_discovery`")
        return cls.from_dict(manifest.discovery.training.config)

    @classmethod
    def _migrate_dict(cls, d: dict[str, Any]) -> dict[str, Any]:
        """Configs and bundles before the nesting held the classifier keys flat (:data:`FLAT_CLASSIFIER_KEYS`)."""
        flat = [k for k in FLAT_CLASSIFIER_KEYS if k in d]
        if not flat:
            return d
        nested = d.get("classifier")
        nested = dict(nested) if isinstance(nested, Mapping) else {}
        both = [k for k in flat if k in nested]
        if both:
            raise ConfigError(f"discovery config gives {both} both at the top level (the old layout) and under "
                              f"'classifier'; keep only classifier.{both[0]}")
        d["classifier"] = {**nested, **{k: d.pop(k) for k in flat}}
        return d


def discovery_config(overrides: Sequence[str] | None = None) -> DiscoveryTrainConfig:
    """Defaults plus ``key=value`` overrides (:func:`protoinspect.sdk.config_overrides.apply_overrides`),
    e.g. ``["classifier.kappa=16", "prototype_steps=500"]``."""
    return apply_overrides(DiscoveryTrainConfig(), list(overrides or []))
