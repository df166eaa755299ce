"""Fused region-guided self-attention: softmax attention over tokens with a per-key bias on chosen query rows.

Shapes (B batch, H heads, N tokens, D head dim in 1..256, Hb = 1 or H bias heads, rows = ``bias_rows``):
    q, k, v                         B x H x N x D
    bias                            B x Hb x N      additive, per KEY (e.g. log of a region weight; -inf drops a key)
    S = q k^T * scale               B x H x N x N   scale defaults to 1/sqrt(D); never materialised
    S[b, h, i, j] += bias[b, h if Hb == H else 0, j]   for query rows i in ``bias_rows`` only
                                                    (None = every row, slice(0, 1) = the class-token row)
    out = softmax over j of S, times v              B x H x N x D   in q's dtype
The forward kernel streams over key blocks with an online softmax (running max ``m_i``, running sum ``l_i``,
fp32 accumulator); keys masked with -inf are handled, and a row whose keys are all -inf gives NaN, as the
reference (kernels/attention_reference.py) does. Forward only: inputs that require grad raise
``KernelBackwardUnsupportedError`` (train with ``region_guided_attention_reference``).
"""

from __future__ import annotations

import torch

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
from protoinspect.kernels.errors import KernelBackwardUnsupportedError
from protoinspect.kernels.launch_checks import (
    LOG2E,
    check_tensors,
    device_guard,
    dot_options,
    needs_grad,
    padded_head_dim,
    resolve_rows,
    resolve_scale,
    shape_error,
)
from protoinspect.kernels.mma import mma
from protoinspect.kernels.triton_loader import import_triton, is_interpreted

triton, tl = import_triton()

_OP = "region_guided_attention"


#: autotune pruning: query and key blocks are both bounded by N (the keys are the N tokens)
keep_config = forward_tile_filter(keys_are_tokens=True)


@tile_autotune(FWD_TILES, key=["N", "HEAD_DIM"], keep=keep_config)
@triton.jit
def _region_guided_attention_fwd_kernel(
    Q, K, V, Bias, Out,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_bb, stride_bh, stride_bn,  # stride_bh = 0 for a bias shared by the heads
    stride_ob, stride_oh, stride_on, stride_od,
    H, N, HEAD_DIM, ROW_START, ROW_STOP, qk_scale,  # qk_scale = scale * log2(e)
    HEAD_DIM_PAD: tl.constexpr, DOT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
):
    _, off_b, off_h, offs_n, mask_n, offs_d, mask_d = program_block(H, N, HEAD_DIM, BLOCK_N, HEAD_DIM_PAD)
    offs_m = tl.arange(0, BLOCK_M)
    row_mask = mask_n[:, None] & mask_d[None, :]
    biased = (offs_n >= ROW_START) & (offs_n < ROW_STOP)  # BLOCK_N: rows that get the bias
    q = load_rows(Q + off_b * stride_qb + off_h * stride_qh, offs_n, stride_qn, offs_d, stride_qd, row_mask)
    k_base = K + off_b * stride_kb + off_h * stride_kh
    v_base = V + off_b * stride_vb + off_h * stride_vh
    bias_base = Bias + off_b * stride_bb + off_h * stride_bh

    m_i, l_i, acc = softmax_state(BLOCK_N, HEAD_DIM_PAD)
    for start_m in range(0, N, BLOCK_M):
        cols = start_m + offs_m
        mask_m, k, v = key_block(k_base, v_base, cols, N, stride_kn, stride_kd, stride_vn, stride_vd, offs_d, mask_d)
        key_bias = tl.load(bias_base + cols * stride_bn, mask=mask_m, other=0.0).to(tl.float32)
        key_bias = key_bias * 1.4426950408889634  # log2(e): the logits are in log2 units
        # logits in log2 units, bias on the guided rows, -inf past the last key
        s = mma(q, tl.trans(k), None, DOT_PRECISION, DOT_UPCAST) * qk_scale  # BLOCK_N x BLOCK_M
        s = tl.where(biased[:, None], s + key_bias[None, :], s)
        s = tl.where(mask_m[None, :], s, float("-inf"))
        m_i, l_i, acc = softmax_step(s, v, m_i, l_i, acc, DOT_PRECISION, DOT_UPCAST)
    # l_i = 0 (every key -inf) gives NaN like the reference
    store_rows(Out + off_b * stride_ob + off_h * stride_oh, offs_n, stride_on, offs_d, stride_od,
               acc / l_i[:, None], row_mask)


_INTERPRETED = is_interpreted(_region_guided_attention_fwd_kernel)


def region_guided_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, *,
    bias_rows: slice | None = None, scale: float | None = None,
) -> torch.Tensor:
    """Fused self-attention with a per-key bias on the ``bias_rows`` query rows (Triton, forward only).

    Args:
        q, k, v: B x H x N x D, float32/float16/bfloat16, on CUDA (or CPU under TRITON_INTERPRET=1); any strides.
        bias: B x 1 x N or B x H x N additive per-key bias, q's dtype and device (-inf drops a key).
        bias_rows: query rows the bias applies to: None = all, or a step-1 slice (slice(0, 1) = first row).
        scale: logit scale, default 1/sqrt(D).

    Returns:
        B x H x N x D in q's dtype (contiguous).

    Raises:
        KernelInputError: wrong shapes, devices, a bad ``bias_rows`` or D outside 1..256 (a ``ValueError``).
        KernelDtypeError: non-float or mixed dtypes (a ``TypeError`` and a ``KernelInputError``).
        KernelBackwardUnsupportedError: an input requires grad (use ``region_guided_attention_reference``).
    """
    check_tensors(_OP, {"q": q, "k": k, "v": v, "bias": bias}, interpreted=_INTERPRETED)
    if q.dim() != 4:
        raise shape_error(_OP, "q", q, "B x H x N x D (rank 4)")
    b, h, n, d = q.shape
    for name, t in (("k", k), ("v", v)):
        if t.shape != q.shape:
            raise shape_error(_OP, name, t, f"the shape of q, B x H x N x D = {tuple(q.shape)}")
    if bias.dim() != 3 or bias.shape[0] != b or bias.shape[1] not in (1, h) or bias.shape[2] != n:
        raise shape_error(_OP, "bias", bias, f"B x 1 x N = {b} x 1 x {n} or B x H x N = {b} x {h} x {n}")
    head_dim_pad = padded_head_dim(_OP, d)
    scale = resolve_scale(_OP, scale, d)
    row_start, row_stop = resolve_rows(_OP, bias_rows, n)
    if needs_grad(q, k, v, bias):
        msg = (f"{_OP} is forward-only (no backward kernel) and an input requires grad: train with "
               "protoinspect.kernels.region_guided_attention_reference, or call this under torch.no_grad()")
        raise KernelBackwardUnsupportedError(msg)

    out = torch.empty((b, h, n, d), dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    stride_bb, stride_bh, stride_bn = bias.stride()
    if bias.shape[1] == 1:
        stride_bh = 0

    with device_guard(q.device):
        _region_guided_attention_fwd_kernel[tile_grid(n, b * h)](
            q, k, v, bias, out,
            *q.stride(), *k.stride(), *v.stride(), stride_bb, stride_bh, stride_bn, *out.stride(),
            h, n, d, row_start, row_stop, scale * LOG2E,
            HEAD_DIM_PAD=head_dim_pad, **dot_options(q.dtype, interpreted=_INTERPRETED),
        )
    return out
