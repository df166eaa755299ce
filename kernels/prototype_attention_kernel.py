"""Fused prototype cross-attention: N feature tokens attend over M prototypes (softmax over the prototypes).

Shapes (B batch, H heads, N tokens, M prototypes, D head dim in 1..256):
    q                           B x H x N x D
    k, v                        H x M x D (prototypes shared by the batch) or B x H x M x D
    S = q k^T * scale           B x H x N x M    scale defaults to 1/sqrt(D); never materialised
    P = softmax over M of S     B x H x N x M
    out = P v                   B x H x N x D    in q's dtype
The forward kernel streams over blocks of prototypes with an online softmax (running max ``m_i``, running
sum ``l_i``, fp32 accumulator) and keeps ``lse = log sum_j exp(S_ij)`` (B x H x N, fp32) for the backward
(kernels/prototype_attention_backward.py), which recomputes P block by block. D is padded to a power of
two >= 16 with masks; N and M need not be multiples of the blocks. fp32 inputs use IEEE fp32 dots (no
TF32), so fp32 results match the reference (kernels/attention_reference.py) to ~1e-5.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from protoinspect.kernels.attention_tiles import (
    key_block,
    load_rows,
    program_block,
    softmax_state,
    softmax_step,
    store_rows,
    tile_grid,
)
from protoinspect.kernels.autotune_tiles import FWD_TILES, forward_tile_filter, tile_autotune
from protoinspect.kernels.errors import KernelInputError
from protoinspect.kernels.launch_checks import (
    LOG2E,
    check_tensors,
    device_guard,
    dot_options,
    needs_grad,
    padded_head_dim,
    resolve_scale,
    shape_error,
    strides4,
)
from protoinspect.kernels.mma import mma
from protoinspect.kernels.prototype_attention_backward import prototype_attention_bwd
from protoinspect.kernels.triton_loader import import_triton, is_interpreted

triton, tl = import_triton()

_OP = "prototype_attention"


#: autotune pruning: the query block is bounded by N (the M prototypes may take any block)
keep_config = forward_tile_filter(keys_are_tokens=False)


@tile_autotune(FWD_TILES, key=["N", "M", "HEAD_DIM"], keep=keep_config)
@triton.jit
def _prototype_attention_fwd_kernel(
    Q, K, V, Out, Lse,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_km, stride_kd,
    stride_vb, stride_vh, stride_vm, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    H, N, M, HEAD_DIM, qk_scale,  # qk_scale = scale * log2(e)
    HEAD_DIM_PAD: tl.constexpr, DOT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
):
    pid_bh, off_b, off_h, offs_n, mask_n, offs_d, mask_d = program_block(H, N, HEAD_DIM, BLOCK_N, HEAD_DIM_PAD)
    offs_m = tl.arange(0, BLOCK_M)
    row_mask = mask_n[:, None] & mask_d[None, :]
    q = load_rows(Q + off_b * stride_qb + off_h * stride_qh, offs_n, stride_qn, offs_d, stride_qd, row_mask)
    k_base = K + off_b * stride_kb + off_h * stride_kh  # stride_kb = 0: prototypes shared by the batch
    v_base = V + off_b * stride_vb + off_h * stride_vh

    m_i, l_i, acc = softmax_state(BLOCK_N, HEAD_DIM_PAD)
    for start_m in range(0, M, BLOCK_M):
        mask_m, k, v = key_block(k_base, v_base, start_m + offs_m, M, stride_km, stride_kd, stride_vm, stride_vd,
                                 offs_d, mask_d)
        # logits in log2 units; every block has >= 1 valid prototype, so the running max stays finite
        s = mma(q, tl.trans(k), None, DOT_PRECISION, DOT_UPCAST) * qk_scale  # BLOCK_N x BLOCK_M
        s = tl.where(mask_m[None, :], s, float("-inf"))
        m_i, l_i, acc = softmax_step(s, v, m_i, l_i, acc, DOT_PRECISION, DOT_UPCAST)
    store_rows(Out + off_b * stride_ob + off_h * stride_oh, offs_n, stride_on, offs_d, stride_od,
               acc / l_i[:, None], row_mask)
    tl.store(Lse + pid_bh * N + offs_n, m_i + tl.log2(l_i), mask=mask_n)  # log2 units


_INTERPRETED = is_interpreted(_prototype_attention_fwd_kernel)


def _validate(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None) -> float:
    check_tensors(_OP, {"q": q, "k": k, "v": v}, interpreted=_INTERPRETED)
    if q.dim() != 4:
        raise shape_error(_OP, "q", q, "B x H x N x D (rank 4)")
    b, h, _, d = q.shape
    if k.dim() not in (3, 4) or k.shape[-3] != h or k.shape[-1] != d or (k.dim() == 4 and k.shape[0] != b):
        raise shape_error(_OP, "k", k, f"H x M x D = {h} x M x {d} or B x H x M x D = {b} x {h} x M x {d}")
    if v.shape != k.shape:
        raise shape_error(_OP, "v", v, f"the shape of k {tuple(k.shape)}")
    if k.shape[-2] == 0:
        msg = f"{_OP}: softmax over zero prototypes is undefined; k has shape {tuple(k.shape)} (M = 0)"
        raise KernelInputError(msg)
    padded_head_dim(_OP, d)
    return resolve_scale(_OP, scale, d)


def _prototype_attention_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel on validated inputs; returns (out B x H x N x D, lse B x H x N fp32 log2)."""
    b, h, n, d = q.shape
    m = k.shape[-2]
    out = torch.empty((b, h, n, d), dtype=q.dtype, device=q.device)
    lse = torch.empty((b, h, n), dtype=torch.float32, device=q.device)
    if out.numel() == 0:
        return out, lse

    with device_guard(q.device):
        _prototype_attention_fwd_kernel[tile_grid(n, b * h)](
            q, k, v, out, lse,
            *q.stride(), *strides4(k), *strides4(v), *out.stride(),
            h, n, m, d, scale * LOG2E,
            HEAD_DIM_PAD=padded_head_dim(_OP, d), **dot_options(q.dtype, interpreted=_INTERPRETED),
        )
    return out, lse


class PrototypeAttentionFunction(torch.autograd.Function):
    """Autograd wrapper: Triton forward, Triton backward (dQ over query blocks, dK/dV over prototype blocks)."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        scale = _validate(q, k, v, scale)
        out, lse = _prototype_attention_fwd(q, k, v, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = prototype_attention_bwd(q, k, v, out, lse, grad_out.to(q.dtype), ctx.scale, interpreted=_INTERPRETED)
        return dq, dk, dv, None


def prototype_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None = None
) -> torch.Tensor:
    """Fused softmax attention of queries over prototypes (Triton); differentiable.

    Args:
        q: B x H x N x D queries, float32/float16/bfloat16, on CUDA (or CPU under TRITON_INTERPRET=1).
        k: H x M x D (shared by the batch) or B x H x M x D prototype keys, q's dtype and device.
        v: same shape as ``k``, prototype values. Any strides are accepted.
        scale: logit scale, default 1/sqrt(D).

    Returns:
        B x H x N x D in q's dtype (contiguous). Goes through :class:`PrototypeAttentionFunction` when
        autograd is recording and any input requires grad.

    Raises:
        KernelInputError: wrong shapes, devices, M = 0 or D outside 1..256 (a ``ValueError``).
        KernelDtypeError: non-float or mixed dtypes (a ``TypeError`` and a ``KernelInputError``).
    """
    scale = _validate(q, k, v, scale)
    if needs_grad(q, k, v):
        return PrototypeAttentionFunction.apply(q, k, v, scale)
    return _prototype_attention_fwd(q, k, v, scale)[0]
