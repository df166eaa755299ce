"""Pro-AD style prototype decoder: prototypes aggregate normal information, tokens are rebuilt only from them.

Shapes (B batch, N tokens at the bottleneck grid, M prototypes, D embed dim, L encoder levels):
    encoder features [B x C_l x H_l x W_l] -> noisy bottleneck tokens B x N x D
    per layer:  P' = P + g * Attn(P <- tokens)              (normal-information aggregation)
                x  = Attn(x -> P')   (no query residual)     (reconstruction through prototypes only)
                x  = x + FFN(x)
    output: one reconstruction per level, B x C_l x H_l x W_l.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from protoinspect.kernels.attention_reference import prototype_attention_reference
from protoinspect.sdk.models.attention_impl import kernel_errors, use_triton


class _MultiHeadCross(nn.Module):
    """Multi-head cross-attention with separate query/key/value projections and no residual."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            msg = f"embed_dim {dim} must be divisible by num_heads {num_heads}"
            raise ValueError(msg)
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.reshape(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)  # B x H x N x Dh

    def forward(self, query: torch.Tensor, context: torch.Tensor, topk: int | None = None,
                impl: str = "reference") -> torch.Tensor:
        q = self._heads(self.q_proj(query))
        k = self._heads(self.k_proj(context))
        v = self._heads(self.v_proj(context))
        if topk is None and use_triton(impl, q):
            with kernel_errors():
                from protoinspect.kernels.prototype_attention_kernel import prototype_attention  # fused Triton kernel

                out = prototype_attention(q, k, v)
        else:
            out = prototype_attention_reference(q, k, v, topk=topk)  # B x H x N x Dh
        b, h, n, dh = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * dh))


class _DecoderLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dynamic: bool) -> None:
        super().__init__()
        self.dynamic = dynamic
        if dynamic:
            self.norm_p = nn.LayerNorm(dim)
            self.norm_ctx = nn.LayerNorm(dim)
            self.aggregate = _MultiHeadCross(dim, num_heads)
            self.gate = nn.Parameter(torch.zeros(1))  # starts as static prototypes
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.reconstruct = _MultiHeadCross(dim, num_heads)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(
        self, x: torch.Tensor, prototypes: torch.Tensor, tokens: torch.Tensor, topk: int | None,
        impl: str = "reference",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.dynamic:
            ctx = self.norm_ctx(tokens)
            prototypes = prototypes + torch.tanh(self.gate) * self.aggregate(self.norm_p(prototypes), ctx, impl=impl)
        x = self.reconstruct(self.norm_q(x), self.norm_kv(prototypes), topk=topk, impl=impl)  # no query residual
        x = x + self.mlp(self.norm_mlp(x))
        return x, prototypes


class PrototypeDecoder(nn.Module):
    """Reconstructs multi-level encoder features through an expanded set of learnable prototypes.

    Args:
        in_channels: channel count of each encoder level.
        embed_dim: token width D.
        num_prototypes: M, the (large) prototype set.
        num_layers: decoder layers, each aggregating into the prototypes then reconstructing.
        num_heads: attention heads.
        topk: prototypes each token may use per head (None = all); the prototype-based constraint.
        dynamic_prototypes: per-image aggregation of normal information into the prototypes.
        noise_std: relative Gaussian noise of the bottleneck during training (noisy bottleneck).
        dropout: dropout of the bottleneck tokens during training.
        grid_level: which encoder level sets the token grid (1 = stride 8).
        attention_impl: ``reference`` (PyTorch ops; exported to ONNX) or ``triton`` (the fused
            kernel of :mod:`protoinspect.kernels.prototype_attention_kernel`, used on CUDA when ``topk`` is None).
    """

    def __init__(
        self,
        in_channels: tuple[int, ...],
        embed_dim: int = 192,
        num_prototypes: int = 512,
        num_layers: int = 2,
        num_heads: int = 4,
        topk: int | None = None,
        dynamic_prototypes: bool = True,
        noise_std: float = 0.2,
        dropout: float = 0.2,
        grid_level: int = 1,
        mlp_ratio: float = 2.0,
        attention_impl: str = "reference",
    ) -> None:
        super().__init__()
        self.attention_impl = attention_impl
        self.in_channels = tuple(in_channels)
        self.grid_level = grid_level
        self.topk = topk
        self.noise_std = noise_std
        self.bottleneck = nn.Sequential(
            nn.Conv2d(sum(in_channels), embed_dim, 1), nn.GELU(), nn.Conv2d(embed_dim, embed_dim, 1)
        )
        self.dropout = nn.Dropout(dropout)
        self.prototypes = nn.Parameter(torch.randn(num_prototypes, embed_dim) * 0.02)
        self.layers = nn.ModuleList(
            _DecoderLayer(embed_dim, num_heads, mlp_ratio, dynamic_prototypes) for _ in range(num_layers)
        )
        self.norm_out = nn.LayerNorm(embed_dim)
        self.heads = nn.ModuleList(nn.Conv2d(embed_dim, c, 1) for c in in_channels)

    def fuse_levels(self, features: list[torch.Tensor]) -> torch.Tensor:
        """All encoder levels on the grid of ``grid_level``, concatenated: B x sum(C_l) x h x w.

        This is also the feature map the defect classifier takes its tokens from.
        """
        h, w = (int(v) for v in features[self.grid_level].shape[-2:])  # static under ONNX tracing
        resized = []
        for f in features:
            fw = int(f.shape[-1])
            if fw > w:  # finer level: average pooling by the (integer) stride ratio
                f = F.avg_pool2d(f, kernel_size=fw // w)
            elif fw < w:
                f = F.interpolate(f, size=(h, w), mode="bilinear", align_corners=False)
            resized.append(f)
        return torch.cat(resized, dim=1)

    def encode_tokens(self, features: list[torch.Tensor],
                      fused: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
        """Fuse the levels on the grid of ``grid_level`` -> (B x N x D tokens, (h, w)).

        ``fused``: the output of :meth:`fuse_levels` when the caller already has it.
        """
        fused = self.fuse_levels(features) if fused is None else fused
        h, w = (int(v) for v in fused.shape[-2:])
        if self.training and self.noise_std > 0:
            fused = fused + torch.randn_like(fused) * fused.std(dim=1, keepdim=True) * self.noise_std
        tokens = self.bottleneck(fused).flatten(2).transpose(1, 2)  # B x N x D
        return self.dropout(tokens), (h, w)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Encoder features -> reconstructed features, same shapes, rebuilt only via prototypes."""
        return self.forward_with_tokens(features)[0]

    def forward_with_tokens(self, features: list[torch.Tensor],
                            fused: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Like :meth:`forward`, also returning the bottleneck tokens (B x N x D) for the constraint loss.

        ``fused``: the output of :meth:`fuse_levels` when the caller already has it.
        """
        tokens, (h, w) = self.encode_tokens(features, fused)
        x = tokens
        prototypes = self.prototypes.unsqueeze(0).expand(tokens.shape[0], -1, -1)  # B x M x D
        for layer in self.layers:
            x, prototypes = layer(x, prototypes, tokens, self.topk, self.attention_impl)
        grid = self.norm_out(x).transpose(1, 2).reshape(x.shape[0], -1, h, w)  # B x D x h x w
        outs = []
        for head, f in zip(self.heads, features):
            r = head(grid)
            if r.shape[-2:] != f.shape[-2:]:
                r = F.interpolate(r, size=f.shape[-2:], mode="bilinear", align_corners=False)
            outs.append(r)
        return outs, tokens

    def prototype_constraint(self, tokens: torch.Tensor) -> torch.Tensor:
        """Coherence loss: every bottleneck token (B x N x D) lies near some prototype (mean min cosine distance)."""
        sim = F.normalize(tokens, dim=-1) @ F.normalize(self.prototypes, dim=-1).T  # B x N x M
        return (1.0 - sim.max(dim=-1).values).mean()
