"""Backward of the fused prototype cross-attention (kernels/prototype_attention_kernel.py), recomputing P blockwise.

Shapes as in the forward (B batch, H heads, N tokens, M prototypes, D head dim); lse = log sum_j exp(S_ij)
(B x H x N, fp32, kept by the forward in log2 units) gives P_ij = exp(S_ij - lse_i) without a second softmax:
    delta = rowsum(dO * O)                      B x H x N       (PyTorch, fp32)
    dV    = P^T dO                              M x D per (b, h)
    dS    = P * (dO V^T - delta)                N x M per (b, h), never materialised
    dQ    = scale * dS K                        B x H x N x D   one program per query block
    dK    = scale * dS^T Q                      M x D per (b, h) one program per prototype block
dK and dV are written per batch element into fp32 buffers (B x H x M x D) and summed over the batch with
PyTorch when the prototypes are shared (k, v of shape H x M x D): deterministic, no atomics.
"""

from __future__ import annotations

import torch

from protoinspect.kernels.autotune_tiles import INTERPRET_CONFIGS, gpu_configs
from protoinspect.kernels.launch_checks import LOG2E, device_guard, dot_options, padded_head_dim, strides4
from protoinspect.kernels.mma import mma
from protoinspect.kernels.triton_loader import import_triton, interpreter_requested

triton, tl = import_triton()

_BWD_CONFIGS_GPU = gpu_configs(((32, 32, 4, 1), (32, 32, 4, 2), (64, 32, 4, 2), (32, 64, 4, 2), (64, 64, 4, 3),
                                (128, 64, 8, 2), (64, 128, 8, 2)))
_BWD_CONFIGS_INTERPRET = INTERPRET_CONFIGS
_BWD_CONFIGS = _BWD_CONFIGS_INTERPRET if interpreter_requested() else _BWD_CONFIGS_GPU


def keep_bwd_config(conf: triton.Config, head_dim_pad: int) -> bool:
    """At D = 256 keep only tiles that fit registers and shared memory (both operands of three dots)."""
    return head_dim_pad < 256 or (conf.kwargs["BLOCK_N"] <= 32 or conf.kwargs["BLOCK_M"] <= 32)


def _prune_bwd_configs(configs: list, named_args: dict, **kwargs) -> list:
    kept = [c for c in configs if keep_bwd_config(c, {**named_args, **kwargs}["HEAD_DIM_PAD"])]
    return kept or configs[:1]


_AUTOTUNE = {"key": ["N", "M", "HEAD_DIM"], "prune_configs_by": {"early_config_prune": _prune_bwd_configs}}


@triton.autotune(configs=_BWD_CONFIGS, **_AUTOTUNE)
@triton.jit
def _prototype_attention_bwd_dq_kernel(
    Q, K, V, DO, Lse, Delta, DQ,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_km, stride_kd,
    stride_vb, stride_vh, stride_vm, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    stride_dqb, stride_dqh, stride_dqn, stride_dqd,
    H, N, M, HEAD_DIM, qk_scale, sm_scale,
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
    row_mask = mask_n[:, None] & mask_d[None, :]

    q = tl.load(Q + off_b * stride_qb + off_h * stride_qh + offs_n[:, None] * stride_qn
                + offs_d[None, :] * stride_qd, mask=row_mask, other=0.0)  # BLOCK_N x HEAD_DIM_PAD
    do = tl.load(DO + off_b * stride_dob + off_h * stride_doh + offs_n[:, None] * stride_don
                 + offs_d[None, :] * stride_dod, mask=row_mask, other=0.0)
    lse = tl.load(Lse + pid_bh * N + offs_n, mask=mask_n, other=0.0)
    delta = tl.load(Delta + pid_bh * N + offs_n, mask=mask_n, other=0.0)
    k_base = K + off_b * stride_kb + off_h * stride_kh
    v_base = V + off_b * stride_vb + off_h * stride_vh

    dq = tl.zeros([BLOCK_N, HEAD_DIM_PAD], dtype=tl.float32)
    for start_m in range(0, M, BLOCK_M):
        cols = start_m + offs_m
        mask_m = cols < M
        kv_mask = mask_m[:, None] & mask_d[None, :]
        k = tl.load(k_base + cols[:, None] * stride_km + offs_d[None, :] * stride_kd, mask=kv_mask, other=0.0)
        v = tl.load(v_base + cols[:, None] * stride_vm + offs_d[None, :] * stride_vd, mask=kv_mask, other=0.0)
        s = mma(q, tl.trans(k), None, DOT_PRECISION, DOT_UPCAST) * qk_scale  # BLOCK_N x BLOCK_M, log2
        p = tl.where(mask_m[None, :], tl.exp2(s - lse[:, None]), 0.0)
        dp = mma(do, tl.trans(v), None, DOT_PRECISION, DOT_UPCAST)
        ds = p * (dp - delta[:, None])
        dq = mma(ds.to(k.dtype), k, dq, DOT_PRECISION, DOT_UPCAST)
    dq = dq * sm_scale
    tl.store(DQ + off_b * stride_dqb + off_h * stride_dqh + offs_n[:, None] * stride_dqn
             + offs_d[None, :] * stride_dqd, dq.to(DQ.dtype.element_ty), mask=row_mask)


@triton.autotune(configs=_BWD_CONFIGS, **_AUTOTUNE)
@triton.jit
def _prototype_attention_bwd_dkdv_kernel(
    Q, K, V, DO, Lse, Delta, DK, DV,  # DK, DV: contiguous fp32 B x H x M x D
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_km, stride_kd,
    stride_vb, stride_vh, stride_vm, stride_vd,
    stride_dob, stride_doh, stride_don, stride_dod,
    H, N, M, HEAD_DIM, qk_scale, sm_scale,
    HEAD_DIM_PAD: tl.constexpr, DOT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    off_b = pid_bh // H
    off_h = pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    mask_m = offs_m < M
    mask_d = offs_d < HEAD_DIM
    kv_mask = mask_m[:, None] & mask_d[None, :]

    k = tl.load(K + off_b * stride_kb + off_h * stride_kh + offs_m[:, None] * stride_km
                + offs_d[None, :] * stride_kd, mask=kv_mask, other=0.0)  # BLOCK_M x HEAD_DIM_PAD
    v = tl.load(V + off_b * stride_vb + off_h * stride_vh + offs_m[:, None] * stride_vm
                + offs_d[None, :] * stride_vd, mask=kv_mask, other=0.0)
    q_base = Q + off_b * stride_qb + off_h * stride_qh
    do_base = DO + off_b * stride_dob + off_h * stride_doh

    dk = tl.zeros([BLOCK_M, HEAD_DIM_PAD], dtype=tl.float32)
    dv = tl.zeros([BLOCK_M, HEAD_DIM_PAD], dtype=tl.float32)
    for start_n in range(0, N, BLOCK_N):
        rows = start_n + offs_n
        mask_n = rows < N
        row_mask = mask_n[:, None] & mask_d[None, :]
        q = tl.load(q_base + rows[:, None] * stride_qn + offs_d[None, :] * stride_qd, mask=row_mask, other=0.0)
        do = tl.load(do_base + rows[:, None] * stride_don + offs_d[None, :] * stride_dod, mask=row_mask, other=0.0)
        lse = tl.load(Lse + pid_bh * N + rows, mask=mask_n, other=0.0)
        delta = tl.load(Delta + pid_bh * N + rows, mask=mask_n, other=0.0)
        # -- transposed formulation: P^T (BLOCK_M x BLOCK_N) ------------------------------------------
        s_t = mma(k, tl.trans(q), None, DOT_PRECISION, DOT_UPCAST) * qk_scale
        p_t = tl.where(mask_n[None, :], tl.exp2(s_t - lse[None, :]), 0.0)
        dv = mma(p_t.to(do.dtype), do, dv, DOT_PRECISION, DOT_UPCAST)
        dp_t = mma(v, tl.trans(do), None, DOT_PRECISION, DOT_UPCAST)
        ds_t = p_t * (dp_t - delta[None, :])
        dk = mma(ds_t.to(q.dtype), q, dk, DOT_PRECISION, DOT_UPCAST)
    dk = dk * sm_scale
    out_offs = pid_bh * M * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(DK + out_offs, dk, mask=kv_mask)
    tl.store(DV + out_offs, dv, mask=kv_mask)


def prototype_attention_bwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
    grad_out: torch.Tensor, scale: float, *, interpreted: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dq, dk, dv) shaped like (q, k, v) from the forward's ``out`` and log2 ``lse``.

    Inputs are the validated forward inputs; ``grad_out`` is B x H x N x D in q's dtype, any strides;
    ``interpreted`` says whether the kernels run under the Triton interpreter.
    """
    b, h, n, d = q.shape
    m = k.shape[-2]
    if b * h * n == 0:
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    delta = (grad_out.float() * out.float()).sum(-1).contiguous()  # B x H x N
    dq = torch.empty((b, h, n, d), dtype=q.dtype, device=q.device)
    dk = torch.empty((b, h, m, d), dtype=torch.float32, device=q.device)  # per batch element
    dv = torch.empty_like(dk)
    common = dict(HEAD_DIM_PAD=padded_head_dim("prototype_attention", d), **dot_options(q.dtype, interpreted=interpreted))
    strides = (*q.stride(), *strides4(k), *strides4(v), *grad_out.stride())

    def dq_grid(meta: dict) -> tuple[int, int]:
        return triton.cdiv(n, meta["BLOCK_N"]), b * h

    def dkdv_grid(meta: dict) -> tuple[int, int]:
        return triton.cdiv(m, meta["BLOCK_M"]), b * h

    with device_guard(q.device):
        _prototype_attention_bwd_dq_kernel[dq_grid](
            q, k, v, grad_out, lse, delta, dq, *strides, *dq.stride(),
            h, n, m, d, scale * LOG2E, scale, **common,
        )
        _prototype_attention_bwd_dkdv_kernel[dkdv_grid](
            q, k, v, grad_out, lse, delta, dk, dv, *strides,
            h, n, m, d, scale * LOG2E, scale, **common,
        )
    if k.dim() == 3:  # prototypes shared by the batch: sum the per-element gradients
        dk, dv = dk.sum(0), dv.sum(0)
    return dq, dk.to(k.dtype), dv.to(v.dtype)
