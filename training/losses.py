"""Loss functions of detector training."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float = 0.75) -> torch.Tensor:
    """Binary focal loss (soft targets allowed); logits and target B x 1 x h x w."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    a_t = alpha * target + (1 - alpha) * (1 - target)
    return (a_t * (1 - p_t) ** gamma * ce).mean()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss over the batch."""
    p = torch.sigmoid(logits)
    inter = (p * target).sum()
    return 1 - (2 * inter + eps) / (p.sum() + target.sum() + eps)


def reconstruction_loss(
    features: list[torch.Tensor], recon: list[torch.Tensor], weights: torch.Tensor, hard_mining: float = 0.0
) -> torch.Tensor:
    """Level-weighted mean cosine distance between encoder features and their reconstruction.

    ``hard_mining`` > 0 re-weights each location by (distance / mean distance) ** hard_mining,
    without gradient through the weight (INP-Former's soft mining), so training focuses on the
    normal regions that are still reconstructed poorly.
    """
    total = features[0].new_zeros(())
    for w, f, r in zip(weights, features, recon):
        d = 1.0 - F.cosine_similarity(f, r, dim=1)  # B x h x w
        if hard_mining > 0:
            dd = d.detach().clamp_min(0.0)  # 1 - cos rounds to slightly below 0 where f == r
            m = (dd / dd.mean().clamp_min(1e-6)) ** hard_mining
            d = d * m / m.mean().clamp_min(1e-6)
        total = total + w * d.mean()
    return total
