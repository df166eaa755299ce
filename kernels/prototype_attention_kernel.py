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

from protoinspect.kernels.autotune_tiles import FWD_TILES, INTERPRET_CONFIGS, gpu_configs
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
from protoinspect.kernels.triton_loader import import_triton, interpreter_requested, is_interpreted

triton, tl = import_triton()

_OP = "prototype_attention"


# -- autotune configs ------------------------------------------------------------------------------------
_FWD_CONFIGS_GPU = gpu_configs(FWD_TILES)
_FWD_CONFIGS_INTERPRET = INTERPRET_CONFIGS


def keep_config(conf: triton.Config, n: int, head_dim_pad: int) -> bool:
    """Drop query blocks much larger than N, and large tiles at D = 256 (registers / shared memory)."""
    block_n, block_m = conf.kwargs["BLOCK_N"], conf.kwargs["BLOCK_M"]
    if block_n > max(32, triton.next_power_of_2(n)):
        return False
    return head_dim_pad < 256 or (block_n <= 64 and block_m <= 64)


def _prune_configs(configs: list, named_args: dict, **kwargs) -> list:
    args = {**named_args, **kwargs}
    kept = [c for c in configs if keep_config(c, args["N"], args["HEAD_DIM_PAD"])]
    return kept or configs[:1]


@triton.autotune(
    configs=_FWD_CONFIGS_INTERPRET if interpreter_requested() else _FWD_CONFIGS_GPU,
    key=["N", "M", "HEAD_DIM"],
    prune_configs_by={"early_config_prune": _prune_configs},
)
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
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    off_b = pid_bh // H
    off_h = pid_bh % H
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    mask_n = offs_n < N
    mask_d = offs_d < HEAD_DIM

    q_ptrs = Q + off_b * stride_qb + off_h * stride_qh + offs_n[:, None] * stride_qn + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=mask_n[:, None] & mask_d[None, :], other=0.0)  # BLOCK_N x HEAD_DIM_PAD
    k_base = K + off_b * stride_kb + off_h * stride_kh  # stride_kb = 0: prototypes shared by the batch
    v_base = V + off_b * stride_vb + off_h * stride_vh

    m_i = tl.full([BLOCK_N], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc = tl.zeros([BLOCK_N, HEAD_DIM_PAD], dtype=tl.float32)
    for start_m in range(0, M, BLOCK_M):
        cols = start_m + offs_m
        mask_m = cols < M
        kv_mask = mask_m[:, None] & mask_d[None, :]
        k = tl.load(k_base + cols[:, None] * stride_km + offs_d[None, :] * stride_kd, mask=kv_mask, other=0.0)
        v = tl.load(v_base + cols[:, None] * stride_vm + offs_d[None, :] * stride_vd, mask=kv_mask, other=0.0)
        # -- logits in log2 units; every block has >= 1 valid prototype, so m_new stays finite --------
        s = mma(q, tl.trans(k), None, DOT_PRECISION, DOT_UPCAST) * qk_scale  # BLOCK_N x BLOCK_M
        s = tl.where(mask_m[None, :], s, float("-inf"))
        # -- update m_i, l_i and rescale the accumulator ---------------------------------------------
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = mma(p.to(v.dtype), v, acc, DOT_PRECISION, DOT_UPCAST)
        m_i = m_new
    # -- epilogue ----------------------------------------------------------------------------------------
    acc = acc / l_i[:, None]
    o_ptrs = Out + off_b * stride_ob + off_h * stride_oh + offs_n[:, None] * stride_on + offs_d[None, :] * stride_od
    tl.store(o_ptrs, acc.to(Out.dtype.element_ty), mask=mask_n[:, None] & mask_d[None, :])
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

    def grid(meta: dict) -> tuple[int, int]:
        return triton.cdiv(n, meta["BLOCK_N"]), b * h

    with device_guard(q.device):
        _prototype_attention_fwd_kernel[grid](
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
