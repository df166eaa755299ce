"""Losses of discovery training: two-view InfoNCE, supervised contrastive, and balanced self-labelling."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(p1: torch.Tensor, p2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between unit projections of two views (B x P each); positives are the pairs."""
    z = torch.cat([p1, p2])  # 2B x P
    sim = z @ z.T / temperature
    n = p1.shape[0]
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(sim, target)


def supcon(p: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al.) over unit projections ``p`` (M x P) with labels (M)."""
    if p.shape[0] < 2:
        return p.sum() * 0.0
    sim = p @ p.T / temperature
    self_mask = torch.eye(p.shape[0], dtype=torch.bool)
    sim = sim.masked_fill(self_mask, float("-inf"))
    pos = (labels[:, None] == labels[None, :]) & ~self_mask
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    has_pos = pos.any(dim=1)
    if not has_pos.any():
        return p.sum() * 0.0
    mean_pos = (log_prob.masked_fill(~pos, 0.0).sum(dim=1) / pos.sum(dim=1).clamp(min=1))[has_pos]
    return -mean_pos.mean()


@torch.no_grad()
def sinkhorn(logits: torch.Tensor, epsilon: float, iters: int) -> torch.Tensor:
    """Balanced soft assignments (B x K, rows sum to 1) of a batch to K classes (Sinkhorn-Knopp, SwAV):
    every class receives the same total mass."""
    q = torch.exp((logits - logits.max()) / epsilon).T  # K x B
    q = q / q.sum()
    k, b = q.shape
    for _ in range(iters):
        q = q / q.sum(dim=1, keepdim=True).clamp(min=1e-30) / k
        q = q / q.sum(dim=0, keepdim=True).clamp(min=1e-30) / b
    return (q * b).T
