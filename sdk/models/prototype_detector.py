"""PrototypeDetectorNet: frozen encoder + prototype decoder -> pixel anomaly map and image score."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from protoinspect.sdk.errors import ConfigError
from protoinspect.sdk.models.attention_impl import ATTENTION_IMPLS
from protoinspect.sdk.models.encoder import build_encoder
from protoinspect.sdk.models.prototype_decoder import PrototypeDecoder

MAP_MODES = ("prototype", "fused")
LEGACY_SEG_HEAD_WIDTH = 64  # the segmentation head width of bundles written before it was configurable


@dataclass(frozen=True)
class DetectorConfig:
    """Architecture of the detector (stored in the bundle manifest).

    Attributes:
        encoder: encoder registry name (``small_cnn`` or ``resnet18``).
        embed_dim / num_prototypes / num_layers / num_heads / topk / dynamic_prototypes: decoder.
        map_mode: ``prototype`` = per-level cosine distance between encoder and reconstruction only;
            ``fused`` = that plus the encoder's synthetic-defect segmentation head, each normalised
            by statistics of held-out normal images.
        blur_sigma: Gaussian smoothing of the map, in pixels of the input.
        score_top_fraction: image score = mean of the top fraction of map pixels.
        seg_head_width: channels of the segmentation head (32 by default; bundles written before
            this key existed used 64 and are read as such).
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
    map_mode: str = "fused"
    blur_sigma: float = 4.0
    score_top_fraction: float = 0.01
    level_weights: tuple[float, ...] = field(default=(1.0, 1.0, 0.0))
    seg_head_width: int = 32
    attention_impl: str = "reference"

    def __post_init__(self) -> None:
        if self.map_mode not in MAP_MODES:
            msg = f"map_mode must be one of {MAP_MODES}, got {self.map_mode!r}"
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
        """JSON-safe form."""
        d = asdict(self)
        d["level_weights"] = list(self.level_weights)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DetectorConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            msg = f"unknown detector config keys {sorted(unknown)}; known: {sorted(known)}"
            raise ConfigError(msg)
        d = dict(d)
        if "level_weights" in d:
            d["level_weights"] = tuple(d["level_weights"])
        return cls(**d)

    @classmethod
    def from_manifest(cls, d: dict[str, Any]) -> DetectorConfig:
        """Like :meth:`from_dict` for a bundle manifest's ``model.config``, reading keys that older
        bundles lack with the values those bundles were built with."""
        return cls.from_dict({"seg_head_width": LEGACY_SEG_HEAD_WIDTH, **d})


class SegmentationHead(nn.Module):
    """Predicts synthetic-defect logits at stride 4 from the three encoder levels (trains the encoder)."""

    def __init__(self, in_channels: tuple[int, ...], width: int = 64) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(width * len(in_channels), width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 1, 1),
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Features -> B x 1 x H/4 x W/4 logits."""
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
        self.seg_head = SegmentationHead(channels, width=config.seg_head_width)
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

    def freeze_encoder(self) -> None:
        """Stop gradients and BatchNorm updates in the encoder and its segmentation head."""
        for module in (self.encoder, self.seg_head):
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> PrototypeDetectorNet:
        """Train mode for the decoder; the encoder stays frozen if its parameters are frozen."""
        super().train(mode)
        if not any(p.requires_grad for p in self.encoder.parameters()):
            self.encoder.eval()
            self.seg_head.eval()
        return self

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

    def raw_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bx3xHxW -> (prototype-distance map, segmentation probability), both B x 1 x H/4 x W/4, unblurred."""
        features = self.encoder(x)
        return self.feature_distance(features, self.decoder(features)), torch.sigmoid(self.seg_head(features))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised Bx3xHxW -> (anomaly map B x 1 x H x W float32, image score B).

        The map is combined and blurred on the stride-4 grid, then upsampled once to the input size.
        """
        amap, score, _ = self.forward_with_features(x)
        return amap, score

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Like :meth:`forward`, also returning the fused encoder feature map (B x sum(C) x H/8 x W/8)
        that the prototype decoder reads and the defect classifier takes its tokens from."""
        size = x.shape[-2:]
        features = self.encoder(x)
        fused = self.decoder.fuse_levels(features)
        recon = self.decoder.forward_with_tokens(features, fused)[0]
        amap = (self.feature_distance(features, recon) - self.map_norm[0, 0]) / self.map_norm[0, 1]
        if self.config.map_mode == "fused":
            seg = torch.sigmoid(self.seg_head(features))  # B x 1 x H/4 x W/4
            amap = amap + (seg - self.map_norm[1, 0]) / self.map_norm[1, 1]
        amap = F.interpolate(self._blur(amap), size=size, mode="bilinear", align_corners=False)
        flat = amap.flatten(1)
        k = max(1, int(int(flat.shape[1]) * self.config.score_top_fraction + 0.5))  # static under tracing
        score = torch.topk(flat, k, dim=1).values.mean(dim=1)
        return amap, score, fused
