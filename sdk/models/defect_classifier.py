"""Defect classifier for novel-class discovery (after ProtoAnomalyNCD): region-guided attention over
detector feature tokens, a projection head and von Mises-Fisher prototypes.

Shapes (B crops, C feature channels, G x G token grid, N = G*G tokens, D embed dim, K classes):
    tokens  B x C x G x G   (a crop of the detector's fused feature map, resampled to G x G)
    regions B x 2 x G x G   (per token: anomaly fraction a_j (MEBin mask), object fraction o_j (mask))
    x = [cls; Linear(LN(tokens)) + Linear(regions) + pos]                 B x (1+N) x D
    per layer: bias_j = w_a a_j + w_o o_j (1 - a_j) - w_b (1 - o_j),  bias_cls = 0   (Region Guidance)
               logits = Q K^T / sqrt(Dh);  logits[cls row] += bias        (class-token row only)
               x = x + Attn(LN(x));  x = x + MLP(LN(x))
    z = normalize(LN(x_cls))                                              B x D  (the embedding)
    with region descriptors d (B x R, standardised; ``descriptor_dim`` R > 0, weight beta):
    z = normalize([sqrt(1 - beta) z, sqrt(beta) d / sqrt(R)])            B x (D + R)
    class logits = kappa * z . normalize(mu_k)                            B x K  (vMF prototypes)
    projection p = normalize(MLP(LN(x_cls)))                              B x P  (contrastive training)

The three region levels (w_a, w_o, w_b) are learned per layer: anomaly tokens are boosted, background
suppressed, normal object tokens kept (methods.md §1(b); our parameterisation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from protoinspect.kernels.attention_reference import region_guided_attention_reference
from protoinspect.sdk.errors import ConfigError
from protoinspect.sdk.models.attention_impl import kernel_errors, use_triton
from protoinspect.sdk.models.classifier_config import ClassifierConfig  # re-exported: its import path before the split
from torch import nn

_CLASS_TOKEN_ROW = slice(0, 1)  # the query row that gets the region-guidance bias


def region_guidance_bias(regions: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Per-key bias B x (1+N) from regions B x 2 x G x G and levels (w_a, w_o, w_b); the class token gets 0."""
    a = regions[:, 0].flatten(1)
    o = regions[:, 1].flatten(1)
    bias = levels[0] * a + levels[1] * o * (1.0 - a) - levels[2] * (1.0 - o)
    return torch.cat([torch.zeros_like(bias[:, :1]), bias], dim=1)


def guided_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Softmax attention (B x H x T x Dh) with ``bias`` (B x T, per key) added to the first (class-token) row.

    The classifier's call of :func:`protoinspect.kernels.attention_reference.region_guided_attention_reference`
    (bias shared by the heads, ``bias_rows=slice(0, 1)``); the Triton path launches the kernel on the same arguments.
    """
    return region_guided_attention_reference(q, k, v, bias[:, None, :], bias_rows=_CLASS_TOKEN_ROW)


class _GuidedBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, impl: str) -> None:
        super().__init__()
        self.heads = heads
        self.impl = impl
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        # region levels (w_a, w_o, w_b): start by boosting anomaly tokens and damping background
        self.levels = nn.Parameter(torch.tensor([2.0, 0.0, 2.0]))

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if use_triton(self.impl, q):
            with kernel_errors():
                from protoinspect.kernels.region_guided_attention_kernel import region_guided_attention

                return region_guided_attention(q, k, v, bias[:, None, :], bias_rows=_CLASS_TOKEN_ROW)
        return guided_attention_reference(q, k, v, bias)

    def forward(self, x: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        bias = region_guidance_bias(regions, self.levels)
        out = self._attend(qkv[0], qkv[1], qkv[2], bias).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(out)
        return x + self.mlp(self.norm2(x))


class DefectClassifierNet(nn.Module):
    """Region-guided transformer over detector tokens with vMF prototypes (see the module docstring)."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        if config.in_channels is None:
            raise ConfigError("ClassifierConfig.in_channels is None: set it to the channels of the detector's "
                              "features (training does; a bundle's classifier config always has it)")
        self.config = config
        c, d, g = config.in_channels, config.embed_dim, config.grid
        self.in_norm = nn.LayerNorm(c)
        self.embed = nn.Linear(c, d)
        self.region_embed = nn.Linear(2, d)  # the region labels are token features too (shape of the defect)
        self.pos = nn.Parameter(torch.randn(1, g * g, d) * 0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.blocks = nn.ModuleList(
            _GuidedBlock(d, config.num_heads, config.mlp_ratio, config.attention_impl) for _ in range(config.num_layers)
        )
        self.norm = nn.LayerNorm(d)
        self.projector = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, config.proj_dim))
        self.prototypes = nn.Parameter(F.normalize(torch.randn(config.num_classes, config.output_dim), dim=-1))

    def _check(self, tokens: torch.Tensor, regions: torch.Tensor) -> None:
        cfg = self.config
        if tokens.dim() != 4 or tuple(tokens.shape[1:]) != (cfg.in_channels, cfg.grid, cfg.grid):
            msg = f"tokens must be B x {cfg.in_channels} x {cfg.grid} x {cfg.grid}, got {tuple(tokens.shape)}"
            raise ValueError(msg)
        if tuple(regions.shape) != (tokens.shape[0], 2, cfg.grid, cfg.grid):
            msg = f"regions must be {tokens.shape[0]} x 2 x {cfg.grid} x {cfg.grid}, got {tuple(regions.shape)}"
            raise ValueError(msg)

    def features(self, tokens: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        """Tokens B x C x G x G and regions B x 2 x G x G -> un-normalised class-token feature B x D."""
        self._check(tokens, regions)
        x = self.embed(self.in_norm(tokens.flatten(2).transpose(1, 2)))
        x = x + self.region_embed(regions.flatten(2).transpose(1, 2)) + self.pos
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x, regions)
        return self.norm(x[:, 0])

    def embed_descriptors(self, z: torch.Tensor, descriptors: torch.Tensor | None) -> torch.Tensor:
        """Unit token embedding B x D (+ descriptors B x R) -> unit embedding B x (D + R)."""
        r = self.config.descriptor_dim
        if r == 0:
            return z
        if descriptors is None or descriptors.dim() != 2 or tuple(descriptors.shape) != (z.shape[0], r):
            got = None if descriptors is None else tuple(descriptors.shape)
            raise ValueError(f"descriptors must be {z.shape[0]} x {r}, got {got}")
        beta = self.config.descriptor_weight
        joint = torch.cat([z * (1.0 - beta) ** 0.5, descriptors * (beta / r) ** 0.5], dim=-1)
        return F.normalize(joint, dim=-1)

    def classify(self, feature: torch.Tensor, descriptors: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class-token feature (+ descriptors) -> (unit embedding B x (D + R), vMF logits B x K)."""
        z = self.embed_descriptors(F.normalize(feature, dim=-1), descriptors)
        return z, self.config.kappa * z @ F.normalize(self.prototypes, dim=-1).T

    def project(self, feature: torch.Tensor) -> torch.Tensor:
        """Class-token feature -> unit projection B x P (contrastive losses only)."""
        return F.normalize(self.projector(feature), dim=-1)

    def forward(self, tokens: torch.Tensor, regions: torch.Tensor, descriptors: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(unit embedding, vMF logits B x K) — what the exported graph computes."""
        return self.classify(self.features(tokens, regions), descriptors)

    def set_prototypes(self, prototypes: torch.Tensor) -> None:
        """Replace the class prototypes (K' x D, normalised here); the config's ``num_classes`` follows."""
        from dataclasses import replace

        with torch.no_grad():
            self.prototypes = nn.Parameter(F.normalize(prototypes.detach().to(self.prototypes.dtype), dim=-1))
        self.config = replace(self.config, num_classes=int(prototypes.shape[0]))
