"""PrototypeDetectorNet: frozen encoder + prototype decoder -> pixel anomaly map and image score."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from protoinspect.sdk import config_codec
from protoinspect.sdk.errors import ConfigError
from protoinspect.sdk.models.attention_impl import ATTENTION_IMPLS
from protoinspect.sdk.models.encoder import build_encoder
from protoinspect.sdk.models.prototype_decoder import PrototypeDecoder

MAP_MODES = ("prototype", "fused", "discriminator")
HEAD_INPUTS = ("features", "features+recon")
SCORE_MODES = ("top_fraction", "max_mean")
# values of keys that bundles written before the key existed were built with
LEGACY_DEFAULTS = {"seg_head_width": 64, "head_inputs": "features", "head_depth": 1, "score_mode": "top_fraction"}


@dataclass(frozen=True)
class DetectorConfig:
    """Architecture of the detector (stored in the bundle manifest).

    Attributes:
        encoder: encoder registry name (``small_cnn`` or ``resnet18``).
        embed_dim / num_prototypes / num_layers / num_heads / topk / dynamic_prototypes: decoder.
        map_mode: ``discriminator`` = the anomaly head's probability (the head sees what
            ``head_inputs`` says); ``prototype`` = per-level cosine distance between encoder and
            prototype reconstruction only; ``fused`` = the sum of both. Each map is normalised by
            statistics of held-out normal images.
        head_inputs: ``features+recon`` = the anomaly head compares the encoder features with their
            prototype reconstruction (DRAEM-style discriminator: features, their difference to the
            reconstruction and the cosine distance, per level); ``features`` = it sees the encoder
            features only (a plain segmenter, the design before v0.2).
        head_depth: 3x3 conv layers of the anomaly head after the per-level projections.
        blur_sigma: Gaussian smoothing of the map, in pixels of the input.
        score_mode: ``max_mean`` = image score is the maximum of the map averaged over a
            ``score_window`` x ``score_window`` pixel window (a small defect is not drowned);
            ``top_fraction`` = mean of the top ``score_top_fraction`` of map pixels.
        seg_head_width: channels of the anomaly head.

    Keys that older bundles lack are read with the values they were built with (:data:`LEGACY_DEFAULTS`).
    """

    encoder: str = "small_cnn"
    embed_dim: int = 128
    num_prototypes: int = 256
    num_layers: int = 2
    num_heads: int = 4
    topk: int | None = None
    dynamic_prototypes: bool = True
    noise_std: float = 0.2
    dropout: float = 0.2
    map_mode: str = "discriminator"
    head_inputs: str = "features+recon"
    head_depth: int = 2
    blur_sigma: float = 4.0
    score_mode: str = "max_mean"
    score_window: int = 21
    score_top_fraction: float = 0.01
    level_weights: tuple[float, ...] = field(default=(1.0, 1.0, 0.0))
    seg_head_width: int = 32
    attention_impl: str = "reference"

    def __post_init__(self) -> None:
        for key, allowed in (("map_mode", MAP_MODES), ("head_inputs", HEAD_INPUTS), ("score_mode", SCORE_MODES)):
            if getattr(self, key) not in allowed:
                msg = f"{key} must be one of {allowed}, got {getattr(self, key)!r}"
                raise ConfigError(msg)
        if self.head_depth < 1 or self.score_window < 1:
            msg = f"head_depth and score_window must be >= 1, got {self.head_depth} and {self.score_window}"
            raise ConfigError(msg)
        if not 0 < self.score_top_fraction <= 1:
            msg = f"score_top_fraction must be in (0, 1], got {self.score_top_fraction}"
            raise ConfigError(msg)
        if self.attention_impl not in ATTENTION_IMPLS:
            msg = f"attention_impl must be 'reference' or 'triton', got {self.attention_impl!r}"
            raise ConfigError(msg)
        if self.attention_impl == "triton" and self.topk is not None:
            msg = "attention_impl='triton' computes full softmax attention: it cannot be combined with topk"
            raise ConfigError(msg)
        if self.seg_head_width < 1:
            msg = f"seg_head_width must be >= 1, got {self.seg_head_width}"
            raise ConfigError(msg)
        if self.num_prototypes < 1 or self.embed_dim % self.num_heads:
            msg = "num_prototypes must be >= 1 and embed_dim divisible by num_heads"
            raise ConfigError(msg)
        object.__setattr__(self, "level_weights", tuple(float(w) for w in self.level_weights))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (:func:`protoinspect.sdk.config_codec.to_dict`)."""
        return config_codec.to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DetectorConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (:mod:`protoinspect.sdk.config_codec`)."""
        return config_codec.from_dict(cls, d)

    @classmethod
    def from_manifest(cls, d: Mapping[str, Any]) -> DetectorConfig:
        """Like :meth:`from_dict` for a bundle manifest's ``model.config``, reading keys that older
        bundles lack with the values those bundles were built with (:data:`LEGACY_DEFAULTS`)."""
        return cls.from_dict({**LEGACY_DEFAULTS, **d})


class SegmentationHead(nn.Module):
    """The anomaly head: logits at stride 4 from the three encoder levels (and their reconstruction).

    With ``compare=False`` it sees the encoder features only (a segmenter). With ``compare=True`` it is
    a discriminator: per level it sees the features ``f``, their difference to the prototype
    reconstruction ``f - r`` and the cosine distance ``1 - cos(f, r)``, so it can tell what the
    prototypes of normal appearance cannot rebuild.
    """

    def __init__(self, in_channels: tuple[int, ...], width: int = 64, compare: bool = False, depth: int = 1) -> None:
        super().__init__()
        self.compare = compare
        lateral_in = [2 * c + 1 if compare else c for c in in_channels]
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in lateral_in)
        layers: list[nn.Module] = []
        for i in range(depth):
            cin = width * len(in_channels) if i == 0 else width
            layers += [nn.Conv2d(cin, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        self.fuse = nn.Sequential(*layers, nn.Conv2d(width, 1, 1))

    def forward(self, features: list[torch.Tensor], recon: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Features (and, for a discriminator, their reconstruction) -> B x 1 x H/4 x W/4 logits."""
        if self.compare:
            if recon is None:
                msg = "this anomaly head compares features with their reconstruction: pass recon"
                raise ValueError(msg)
            features = [
                torch.cat([f, f - r, 1.0 - F.cosine_similarity(f, r, dim=1).unsqueeze(1)], dim=1)
                for f, r in zip(features, recon)
            ]
        size = features[0].shape[-2:]
        ups = [
            lat(f) if f.shape[-2:] == size else F.interpolate(lat(f), size=size, mode="bilinear", align_corners=False)
            for lat, f in zip(self.lateral, features)
        ]
        return self.fuse(torch.cat(ups, dim=1))


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


class PrototypeDetectorNet(nn.Module):
    """Encoder -> prototype decoder -> anomaly map (B x 1 x H x W) and image score (B).

    The map is the level-weighted mean of ``1 - cos(encoder, reconstruction)`` upsampled to the input
    size (optionally fused with the segmentation head, see :class:`DetectorConfig`), then blurred.
    """

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = build_encoder(config.encoder)
        channels = tuple(self.encoder.channels)
        if len(config.level_weights) != len(channels):
            msg = f"level_weights needs {len(channels)} values, got {config.level_weights}"
            raise ConfigError(msg)
        self.decoder = PrototypeDecoder(
            channels,
            embed_dim=config.embed_dim,
            num_prototypes=config.num_prototypes,
            num_layers=config.num_layers,
            num_heads=config.num_heads,
            topk=config.topk,
            dynamic_prototypes=config.dynamic_prototypes,
            noise_std=config.noise_std,
            dropout=config.dropout,
            attention_impl=config.attention_impl,
        )
        self.seg_head = SegmentationHead(channels, width=config.seg_head_width,
                                         compare=config.head_inputs == "features+recon", depth=config.head_depth)
        w = torch.tensor(config.level_weights, dtype=torch.float32)
        # derived from the config, so not part of the weights (inference settings can change them)
        self.register_buffer("level_weights", w / w.sum(), persistent=False)
        # the map is blurred on the stride-4 grid: sigma in input pixels / 4
        kernel = _gaussian_kernel(config.blur_sigma / 4) if config.blur_sigma > 0 else torch.ones(1)
        self.register_buffer("blur_kernel", kernel, persistent=False)
        # (location, scale) of the prototype map and the segmentation map on held-out normal images
        self.register_buffer("map_norm", torch.tensor([[0.0, 1.0], [0.0, 1.0]]))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: ANN001, ANN201
        """As nn.Module's, ignoring config-derived buffers that weights written before v0.1 carried."""
        state_dict = {k: v for k, v in state_dict.items() if k not in ("level_weights", "blur_kernel")}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def feature_distance(self, features: list[torch.Tensor], recon: list[torch.Tensor]) -> torch.Tensor:
        """Level-weighted sum of ``1 - cos`` over channels on the finest grid -> B x 1 x H/4 x W/4.

        Levels with weight 0 are skipped.
        """
        size = features[0].shape[-2:]
        total = None
        for i, (f, r) in enumerate(zip(features, recon)):
            if float(self.config.level_weights[i]) == 0.0:
                continue
            d = 1.0 - F.cosine_similarity(f, r, dim=1).unsqueeze(1)  # B x 1 x h x w
            if d.shape[-2:] != size:
                d = F.interpolate(d, size=size, mode="bilinear", align_corners=False)
            d = d * self.level_weights[i]
            total = d if total is None else total + d
        return total

    def _blur(self, amap: torch.Tensor) -> torch.Tensor:
        k = self.blur_kernel
        if k.numel() == 1:
            return amap
        r = k.numel() // 2
        amap = F.conv2d(F.pad(amap, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        return F.conv2d(F.pad(amap, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))

    def head_logits(self, features: list[torch.Tensor], recon: list[torch.Tensor]) -> torch.Tensor:
        """The anomaly head's logits (B x 1 x H/4 x W/4) for encoder features and their reconstruction."""
        return self.seg_head(features, recon if self.seg_head.compare else None)

    def raw_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bx3xHxW -> (prototype-distance map, anomaly-head probability), both B x 1 x H/4 x W/4, unblurred."""
        features = self.encoder(x)
        recon = self.decoder(features)
        dist = self.feature_distance(features, recon)
        if dist is None:
            dist = torch.zeros_like(features[0][:, :1])
        return dist, torch.sigmoid(self.head_logits(features, recon))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised Bx3xHxW -> (anomaly map B x 1 x H x W float32, image score B).

        The map is combined and blurred on the stride-4 grid, then upsampled once to the input size.
        """
        amap, score, _ = self.forward_with_features(x)
        return amap, score

    def max_mean_score(self, amap4: torch.Tensor) -> torch.Tensor:
        """Image score: maximum of the blurred stride-4 map (B x 1 x h x w) averaged over a
        ``score_window``-pixel window (DRAEM's mean-filtered maximum)."""
        k = max(1, int(round(self.config.score_window / 4)))
        k += 1 - k % 2  # odd: the window is centred
        pooled = F.avg_pool2d(amap4, k, stride=1, padding=k // 2, count_include_pad=False) if k > 1 else amap4
        return pooled.flatten(1).amax(dim=1)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Like :meth:`forward`, also returning the fused encoder feature map (B x sum(C) x H/8 x W/8)
        that the prototype decoder reads and the defect classifier takes its tokens from."""
        size = x.shape[-2:]
        features = self.encoder(x)
        fused = self.decoder.fuse_levels(features)
        recon = self.decoder.forward_with_tokens(features, fused)[0]
        mode = self.config.map_mode
        amap = None
        if mode in ("prototype", "fused"):
            amap = (self.feature_distance(features, recon) - self.map_norm[0, 0]) / self.map_norm[0, 1]
        if mode in ("fused", "discriminator"):
            seg = torch.sigmoid(self.head_logits(features, recon))  # B x 1 x H/4 x W/4
            seg = (seg - self.map_norm[1, 0]) / self.map_norm[1, 1]
            amap = seg if amap is None else amap + seg
        amap4 = self._blur(amap)
        amap = F.interpolate(amap4, size=size, mode="bilinear", align_corners=False)
        if self.config.score_mode == "max_mean":
            score = self.max_mean_score(amap4)
        else:  # the pre-v0.2 score: top fraction of the full-resolution map
            flat = amap.flatten(1)
            k = max(1, int(int(flat.shape[1]) * self.config.score_top_fraction + 0.5))  # static under tracing
            score = torch.topk(flat, k, dim=1).values.mean(dim=1)
        return amap, score, fused
