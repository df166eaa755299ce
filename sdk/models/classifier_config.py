"""Architecture of the defect classifier (:class:`ClassifierConfig`): plain data, no torch import.

It lives apart from the network (:mod:`protoinspect.sdk.models.defect_classifier`) so the bundle manifest's typed
discovery section (:mod:`protoinspect.sdk.manifest_sections`) and discovery training's config can hold it on a
machine without torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from protoinspect.sdk import config_codec
from protoinspect.sdk.errors import ConfigError

#: ``reference`` (PyTorch ops, exportable) or ``triton`` (the fused kernel; CUDA); the choices of
#: :data:`protoinspect.sdk.models.attention_impl.ATTENTION_IMPLS`.
AttentionImpl = Literal["reference", "triton"]


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture of the defect classifier (stored in the bundle manifest).

    Attributes:
        in_channels: channels of the detector's ``features`` output. None only in a training config
            (``DiscoveryTrainConfig.classifier``), where training sets it from the detector; a network
            needs it.
        grid: token grid side G of a crop.
        embed_dim / num_layers / num_heads / mlp_ratio: the guided transformer.
        proj_dim: width of the contrastive projection.
        num_classes: number of vMF prototypes (known + discovered classes; training sets it).
        kappa: vMF concentration (cosine logits are multiplied by it).
        attention_impl: ``reference`` (PyTorch ops, exportable) or ``triton`` (the fused kernel; CUDA).
        descriptor_dim: length of the standardised region-descriptor input (0: none); training sets it.
        descriptor_weight: share ``beta`` of the embedding's squared norm given to the descriptors:
            ``z = normalize([sqrt(1 - beta) * z_tokens, sqrt(beta) * d / sqrt(descriptor_dim)])``.

    Raises:
        ConfigError: a value out of its domain (raised by the constructor).
    """

    in_channels: int | None = None
    grid: int = 8
    embed_dim: int = 128
    num_layers: int = 2
    num_heads: int = 4
    mlp_ratio: float = 2.0
    proj_dim: int = 64
    num_classes: int = 1
    kappa: float = 10.0
    attention_impl: AttentionImpl = "reference"
    descriptor_dim: int = 0
    descriptor_weight: float = 0.5

    @property
    def output_dim(self) -> int:
        """Length of the unit embedding (and of the prototypes)."""
        return self.embed_dim + self.descriptor_dim

    def __post_init__(self) -> None:
        problems = []
        if self.in_channels is not None and self.in_channels < 1:
            problems.append(f"in_channels must be >= 1 (or None in a training config), got {self.in_channels}")
        if self.grid < 1 or self.num_layers < 1 or self.num_classes < 1 or self.proj_dim < 1:
            problems.append("grid, num_layers, num_classes and proj_dim must be >= 1")
        if self.num_heads < 1 or self.embed_dim % self.num_heads:
            problems.append(f"embed_dim {self.embed_dim} must be divisible by num_heads {self.num_heads}")
        if not self.kappa > 0:
            problems.append(f"kappa must be > 0, got {self.kappa}")
        if not self.mlp_ratio > 0:
            problems.append(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        if self.descriptor_dim < 0 or not 0.0 <= self.descriptor_weight < 1.0:
            problems.append(f"descriptor_dim must be >= 0 and descriptor_weight in [0, 1), got "
                            f"{self.descriptor_dim} / {self.descriptor_weight}")
        if self.attention_impl not in get_args(AttentionImpl):
            problems.append(f"attention_impl must be one of {get_args(AttentionImpl)}, got {self.attention_impl!r}")
        if problems:
            raise ConfigError("classifier config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (:func:`protoinspect.sdk.config_codec.to_dict`)."""
        return config_codec.to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassifierConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (:mod:`protoinspect.sdk.config_codec`)."""
        return config_codec.from_dict(cls, d)
