"""The matrix multiply-accumulate every attention kernel calls: ``tl.dot`` with an interpreter-safe bf16 path."""

from __future__ import annotations

from protoinspect.kernels.triton_loader import import_triton

triton, tl = import_triton()


@triton.jit
def mma(a, b, acc, DOT_PRECISION: tl.constexpr, DOT_UPCAST: tl.constexpr):
    """``tl.dot(a, b, acc)``; with ``DOT_UPCAST`` the operands go through fp32 first.

    The interpreter multiplies bf16 operands as their raw uint16 bits (triton 3.9), so launchers set
    ``DOT_UPCAST`` only for bf16 under the interpreter: bf16 x bf16 products are exact in fp32, which is what
    the tensor cores compute too, so the result matches the GPU path up to summation order.
    """
    if DOT_UPCAST:
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        out = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
    return out
