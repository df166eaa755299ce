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

from protoinspect.kernels.attention_tiles import key_block, load_rows, program_block, store_rows, tile_grid
from protoinspect.kernels.autotune_tiles import BWD_TILES, tile_autotune
from protoinspect.kernels.launch_checks import LOG2E, device_guard, dot_options, padded_head_dim, strides4
from protoinspect.kernels.mma import mma
from protoinspect.kernels.triton_loader import import_triton

triton, tl = import_triton()


def keep_bwd_config(conf: triton.Config, args: dict) -> bool:
    """At D = 256 keep only tiles that fit registers and shared memory (both operands of three dots)."""
    return args["HEAD_DIM_PAD"] < 256 or (conf.kwargs["BLOCK_N"] <= 32 or conf.kwargs["BLOCK_M"] <= 32)


_AUTOTUNE = {"tiles": BWD_TILES, "key": ["N", "M", "HEAD_DIM"], "keep": keep_bwd_config}


@tile_autotune(**_AUTOTUNE)
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
    pid_bh, off_b, off_h, offs_n, mask_n, offs_d, mask_d = program_block(H, N, HEAD_DIM, BLOCK_N, HEAD_DIM_PAD)
    offs_m = tl.arange(0, BLOCK_M)
    row_mask = mask_n[:, None] & mask_d[None, :]

    q = load_rows(Q + off_b * stride_qb + off_h * stride_qh, offs_n, stride_qn, offs_d, stride_qd, row_mask)
    do = load_rows(DO + off_b * stride_dob + off_h * stride_doh, offs_n, stride_don, offs_d, stride_dod, row_mask)
    lse = tl.load(Lse + pid_bh * N + offs_n, mask=mask_n, other=0.0)
    delta = tl.load(Delta + pid_bh * N + offs_n, mask=mask_n, other=0.0)
    k_base = K + off_b * stride_kb + off_h * stride_kh
    v_base = V + off_b * stride_vb + off_h * stride_vh

    dq = tl.zeros([BLOCK_N, HEAD_DIM_PAD], dtype=tl.float32)
    for start_m in range(0, M, BLOCK_M):
        mask_m, k, v = key_block(k_base, v_base, start_m + offs_m, M, stride_km, stride_kd, stride_vm, stride_vd,
                                 offs_d, mask_d)
        s = mma(q, tl.trans(k), None, DOT_PRECISION, DOT_UPCAST) * qk_scale  # BLOCK_N x BLOCK_M, log2
        p = tl.where(mask_m[None, :], tl.exp2(s - lse[:, None]), 0.0)
        dp = mma(do, tl.trans(v), None, DOT_PRECISION, DOT_UPCAST)
        ds = p * (dp - delta[:, None])
        dq = mma(ds.to(k.dtype), k, dq, DOT_PRECISION, DOT_UPCAST)
    store_rows(DQ + off_b * stride_dqb + off_h * stride_dqh, offs_n, stride_dqn, offs_d, stride_dqd, dq * sm_scale,
               row_mask)


@tile_autotune(**_AUTOTUNE)
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
    pid_bh, off_b, off_h, offs_m, mask_m, offs_d, mask_d = program_block(H, M, HEAD_DIM, BLOCK_M, HEAD_DIM_PAD)
    offs_n = tl.arange(0, BLOCK_N)
    kv_mask = mask_m[:, None] & mask_d[None, :]

    k = load_rows(K + off_b * stride_kb + off_h * stride_kh, offs_m, stride_km, offs_d, stride_kd, kv_mask)
    v = load_rows(V + off_b * stride_vb + off_h * stride_vh, offs_m, stride_vm, offs_d, stride_vd, kv_mask)
    q_base = Q + off_b * stride_qb + off_h * stride_qh
    do_base = DO + off_b * stride_dob + off_h * stride_doh

    dk = tl.zeros([BLOCK_M, HEAD_DIM_PAD], dtype=tl.float32)
    dv = tl.zeros([BLOCK_M, HEAD_DIM_PAD], dtype=tl.float32)
    for start_n in range(0, N, BLOCK_N):
        rows = start_n + offs_n
        mask_n = rows < N
        row_mask = mask_n[:, None] & mask_d[None, :]
        q = load_rows(q_base, rows, stride_qn, offs_d, stride_qd, row_mask)
        do = load_rows(do_base, rows, stride_don, offs_d, stride_dod, row_mask)
        lse = tl.load(Lse + pid_bh * N + rows, mask=mask_n, other=0.0)
        delta = tl.load(Delta + pid_bh * N + rows, mask=mask_n, other=0.0)
        # -- transposed formulation: P^T (BLOCK_M x BLOCK_N) ------------------------------------------
        s_t = mma(k, tl.trans(q), None, DOT_PRECISION, DOT_UPCAST) * qk_scale
        p_t = tl.where(mask_n[None, :], tl.exp2(s_t - lse[None, :]), 0.0)
        dv = mma(p_t.to(do.dtype), do, dv, DOT_PRECISION, DOT_UPCAST)
        dp_t = mma(v, tl.trans(do), None, DOT_PRECISION, DOT_UPCAST)
        ds_t = p_t * (dp_t - delta[None, :])
        dk = mma(ds_t.to(q.dtype), q, dk, DOT_PRECISION, DOT_UPCAST)
    out_base = pid_bh * M * HEAD_DIM  # per (b, h): M x HEAD_DIM, contiguous
    store_rows(DK + out_base, offs_m, HEAD_DIM, offs_d, 1, dk * sm_scale, kv_mask)
    store_rows(DV + out_base, offs_m, HEAD_DIM, offs_d, 1, dv, kv_mask)


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

    with device_guard(q.device):
        _prototype_attention_bwd_dq_kernel[tile_grid(n, b * h)](
            q, k, v, grad_out, lse, delta, dq, *strides, *dq.stride(),
            h, n, m, d, scale * LOG2E, scale, **common,
        )
        _prototype_attention_bwd_dkdv_kernel[tile_grid(m, b * h, "BLOCK_M")](
            q, k, v, grad_out, lse, delta, dk, dv, *strides,
            h, n, m, d, scale * LOG2E, scale, **common,
        )
    if k.dim() == 3:  # prototypes shared by the batch: sum the per-element gradients
        dk, dv = dk.sum(0), dv.sum(0)
    return dq, dk.to(k.dtype), dv.to(v.dtype)
