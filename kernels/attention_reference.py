"""The PyTorch specification of both attention ops (torch only, no triton): what the kernels compute.

The models call these on every device (``attention_impl="reference"``, and ONNX export); the kernel tests
compare the Triton launchers against them. One reference per op:

    prototype attention      q B x H x N x D over prototypes k, v H x M x D or B x H x M x D -> B x H x N x D
    region-guided attention  q, k, v B x H x N x D, per-key bias B x Hb x N on the ``bias_rows`` query rows
                             -> B x H x N x D
"""

from __future__ import annotations

import math

import torch

from protoinspect.kernels.launch_checks import resolve_rows


def prototype_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None = None, topk: int | None = None
) -> torch.Tensor:
    """Softmax cross-attention of queries over prototypes.

    Args:
        q: B x H x N x D queries.
        k: H x M x D (prototypes shared by the batch) or B x H x M x D prototype keys.
        v: same shape as ``k``, prototype values.
        scale: logit scale, default 1/sqrt(D).
        topk: if set, only the ``topk`` best prototypes per query keep their logits (the prototype-based
            constraint against soft identity mapping). The Triton kernel has no ``topk``.

    Returns:
        B x H x N x D, q's dtype.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    logits = torch.matmul(q, k.transpose(-1, -2)) * scale  # B x H x N x M
    if topk is not None and topk < logits.shape[-1]:
        kth = torch.topk(logits, topk, dim=-1).values[..., -1:]  # B x H x N x 1
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.matmul(torch.softmax(logits, dim=-1), v)  # B x H x N x D


def region_guided_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, *,
    bias_rows: slice | None = None, scale: float | None = None,
) -> torch.Tensor:
    """Self-attention with an additive per-key bias on the ``bias_rows`` query rows.

    The biased rows are sliced and concatenated (no in-place writes), so the function traces to plain ONNX
    operators (Slice, Add, Concat).

    Args:
        q, k, v: B x H x N x D.
        bias: B x 1 x N (shared by the heads) or B x H x N additive per-key bias (-inf drops a key).
        bias_rows: query rows the bias applies to: None = all, or a step-1 slice (slice(0, 1) = the
            class-token row).
        scale: logit scale; None divides the logits by sqrt(D).

    Returns:
        B x H x N x D, q's dtype.

    Raises:
        KernelInputError: ``bias_rows`` is not None or a step-1 slice of ints.
    """
    n = q.shape[-2]
    start, stop = resolve_rows("region_guided_attention_reference", bias_rows, n)
    logits = torch.matmul(q, k.transpose(-1, -2))  # B x H x N x N
    logits = logits / math.sqrt(q.shape[-1]) if scale is None else logits * scale
    key_bias = bias[:, :, None, :]  # B x Hb x 1 x N, broadcast over the query rows
    if start == 0 and stop == n:
        logits = logits + key_bias
    elif start < stop:
        rows = [logits[:, :, :start]] if start > 0 else []
        rows.append(logits[:, :, start:stop] + key_bias)
        if stop < n:
            rows.append(logits[:, :, stop:])
        logits = torch.cat(rows, dim=2)  # B x H x N x N
    return torch.matmul(torch.softmax(logits, dim=-1), v)  # B x H x N x D
