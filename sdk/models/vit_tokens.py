"""A plain ViT that returns its patch-token grid: the classifier's token source when a user has
pretrained ViT weights (DINO / timm layout: ``patch_embed.proj``, ``cls_token``, ``pos_embed``,
``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``norm``).

Shapes: crops B x 3 x S x S (ImageNet-normalised) -> tokens B x D x S/p x S/p (after the final norm).
The architecture (patch size p, width D, depth, heads = D / 64) is read from the weights.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from protoinspect.sdk.errors import BundleError, ConfigError
from protoinspect.sdk.preprocess import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401 - the one copy, re-exported


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, 3 * dim)
        self.attn.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, hidden)
        self.mlp.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.attn.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(qkv[0] @ qkv[1].transpose(-1, -2) / math.sqrt(d // self.heads), dim=-1) @ qkv[2]
        x = x + self.attn.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class ViTTokens(nn.Module):
    """ViT encoder returning the patch tokens as a feature map (see the module docstring)."""

    def __init__(self, patch: int = 16, dim: int = 384, depth: int = 12, heads: int | None = None,
                 hidden: int | None = None, num_pos: int = 197) -> None:
        super().__init__()
        self.patch = patch
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, num_pos, dim) * 0.02)
        self.blocks = nn.ModuleList(_Block(dim, heads or max(1, dim // 64), hidden or 4 * dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def _pos(self, h: int, w: int) -> torch.Tensor:
        cls_pos, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        side = int(round(math.sqrt(grid.shape[1])))
        if (side, side) != (h, w):  # interpolate the learned grid to the crop's grid (as DINO does)
            grid = grid.reshape(1, side, side, -1).permute(0, 3, 1, 2)
            grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
            grid = grid.reshape(1, h * w, -1)
        return torch.cat([cls_pos, grid], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B x 3 x S x S -> B x D x S/p x S/p patch tokens."""
        t = self.patch_embed.proj(x)
        b, d, h, w = t.shape
        t = torch.cat([self.cls_token.expand(b, -1, -1), t.flatten(2).transpose(1, 2)], dim=1) + self._pos(h, w)
        for block in self.blocks:
            t = block(t)
        return self.norm(t)[:, 1:].transpose(1, 2).reshape(b, d, h, w)


def vit_from_state_dict(state: dict[str, torch.Tensor]) -> ViTTokens:
    """Build a :class:`ViTTokens` whose shape fits ``state`` and load it (strict; heads = width / 64)."""
    try:
        proj = state["patch_embed.proj.weight"]
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        model = ViTTokens(patch=int(proj.shape[-1]), dim=int(proj.shape[0]), depth=depth,
                          hidden=int(state["blocks.0.mlp.fc1.weight"].shape[0]), num_pos=int(state["pos_embed"].shape[1]))
    except (KeyError, ValueError, IndexError) as exc:
        raise ConfigError(f"not ViT weights in the DINO/timm layout (missing or odd key: {exc})") from exc
    keep = {k: v for k, v in state.items() if not k.startswith("head")}  # classification heads are unused
    try:
        model.load_state_dict(keep, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"ViT weights do not fit a plain ViT: {exc}") from exc
    return model.eval()


def load_vit_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ViT state dict from a local ``.pth`` / ``.safetensors`` file (``model`` / ``state_dict``
    wrappers are unwrapped). Nothing is downloaded.

    Raises:
        ConfigError: the file is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ViT weights {path} not found (a local DINO/timm ViT checkpoint; nothing is downloaded)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch/safetensors raise many types
        raise ConfigError(f"cannot read ViT weights {path}: {exc}") from exc
    for key in ("model", "state_dict", "teacher"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}


def vit_from_bundle_bytes(data: bytes, name: str) -> ViTTokens:
    """The ViT stored in a bundle file (safetensors bytes)."""
    from safetensors.torch import load as load_safetensors

    try:
        return vit_from_state_dict(load_safetensors(data))
    except (ConfigError, ValueError) as exc:
        raise BundleError(f"{name}: {exc}") from exc
