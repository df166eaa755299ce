"""Tile plumbing shared by the attention kernels: the launch grid and the ``@triton.jit`` pieces every kernel
body repeats (program offsets, row-tile loads and stores, the online-softmax state and its update).

A program handles one block of rows (query rows, or prototype rows in the dK/dV backward) along grid axis 0
for one (batch, head) pair along grid axis 1; a row tile is ``rows`` x the head dim padded to ``HEAD_DIM_PAD``.
"""

from __future__ import annotations

from collections.abc import Callable

from protoinspect.kernels.mma import mma
from protoinspect.kernels.triton_loader import import_triton

triton, tl = import_triton()


def tile_grid(rows: int, batch_heads: int, block: str = "BLOCK_N") -> Callable[[dict], tuple[int, int]]:
    """The launch grid of a kernel tiling ``rows`` rows by its ``block`` size: (row blocks, B * H)."""

    def grid(meta: dict) -> tuple[int, int]:
        return triton.cdiv(rows, meta[block]), batch_heads

    return grid


@triton.jit
def program_block(H, ROWS, HEAD_DIM, BLOCK: tl.constexpr, HEAD_DIM_PAD: tl.constexpr):
    """This program's (batch, head) and row block: ``(pid_bh, off_b, off_h, offs, mask, offs_d, mask_d)``, with
    ``offs`` the BLOCK row indices (``mask``: < ROWS) and ``offs_d`` the padded head-dim columns (< HEAD_DIM)."""
    pid_bh = tl.program_id(1).to(tl.int64)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    return pid_bh, pid_bh // H, pid_bh % H, offs, offs < ROWS, offs_d, offs_d < HEAD_DIM


@triton.jit
def load_rows(base, rows, stride_row, offs_d, stride_d, mask):
    """The ``rows`` x ``offs_d`` tile at ``base`` (zeros where ``mask`` is False)."""
    return tl.load(base + rows[:, None] * stride_row + offs_d[None, :] * stride_d, mask=mask, other=0.0)


@triton.jit
def key_block(k_base, v_base, cols, num_keys, stride_kr, stride_kd, stride_vr, stride_vd, offs_d, mask_d):
    """``(mask, k, v)``: which of the key rows ``cols`` exist (< ``num_keys``) and their key and value tiles
    (zeros past the last key and the head dim)."""
    mask = cols < num_keys
    kv_mask = mask[:, None] & mask_d[None, :]
    k = load_rows(k_base, cols, stride_kr, offs_d, stride_kd, kv_mask)
    return mask, k, load_rows(v_base, cols, stride_vr, offs_d, stride_vd, kv_mask)


@triton.jit
def store_rows(base, rows, stride_row, offs_d, stride_d, value, mask):
    """Store ``value`` as the ``rows`` x ``offs_d`` tile at ``base``, in the element type of ``base``."""
    tl.store(base + rows[:, None] * stride_row + offs_d[None, :] * stride_d, value.to(base.dtype.element_ty),
             mask=mask)


@triton.jit
def softmax_state(BLOCK_N: tl.constexpr, HEAD_DIM_PAD: tl.constexpr):
    """Empty online-softmax state ``(m_i, l_i, acc)``: running max (-inf), running sum (0), fp32 accumulator."""
    m_i = tl.full([BLOCK_N], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_N], dtype=tl.float32)
    acc = tl.zeros([BLOCK_N, HEAD_DIM_PAD], dtype=tl.float32)
    return m_i, l_i, acc


@triton.jit
def softmax_step(s, v, m_i, l_i, acc, DOT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr):
    """Fold one block of logits ``s`` (BLOCK_N x BLOCK_M, log2 units, -inf = no key) and its values ``v`` into
    the online-softmax state; returns the new ``(m_i, l_i, acc)``.

    A row whose logits are all -inf so far keeps p = 0 and alpha = 0 (no NaN); the caller's ``acc / l_i``
    then gives NaN for a row with no key at all, like the reference.
    """
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_safe)
    p = tl.exp2(s - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = mma(p.to(v.dtype), v, acc * alpha[:, None], DOT_PRECISION, DOT_UPCAST)
    return m_new, l_i, acc
