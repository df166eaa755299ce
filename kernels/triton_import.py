"""The one place kernel modules import triton (loud when missing), interpreter detection, and the shared ``mma``."""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from protoinspect.sdk._imports import require


def import_triton() -> tuple[ModuleType, ModuleType]:
    """Return ``(triton, triton.language)``.

    Raises:
        MissingDependencyError: triton is not installed; the message names ``protoinspect[triton]``.
    """
    return require("triton"), require("triton.language")


def interpreter_requested() -> bool:
    """True when ``TRITON_INTERPRET`` asks for the CPU interpreter (it only takes effect at ``@triton.jit`` time)."""
    triton = require("triton")
    knobs = getattr(triton, "knobs", None)
    if knobs is not None:  # triton >= 3.4 parses the variable itself
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in {"1", "true", "on", "yes"}


def is_interpreted(kernel: Any) -> bool:
    """True when ``kernel`` (a ``@triton.jit`` function, possibly wrapped by autotune) runs in the interpreter."""
    from triton.runtime.interpreter import InterpretedFunction

    obj = kernel
    while not isinstance(obj, InterpretedFunction) and hasattr(obj, "fn"):
        obj = obj.fn
    return isinstance(obj, InterpretedFunction)


triton, tl = import_triton()

#: (BLOCK_N query rows, BLOCK_M keys, num_warps, num_stages) forward tiles of both attention kernels
FWD_TILES = ((32, 32, 4, 1), (32, 64, 4, 2), (64, 32, 4, 3), (64, 64, 4, 3), (64, 128, 4, 2),
             (128, 32, 4, 3), (128, 64, 4, 4), (128, 64, 8, 3), (128, 128, 8, 2))
#: The interpreter runs every program in Python: one config, blocks small enough that the tests cross
#: several key blocks (online-softmax rescaling) and leave ragged tails.
INTERPRET_CONFIGS = [triton.Config({"BLOCK_N": 32, "BLOCK_M": 32}, num_warps=4, num_stages=1)]


def gpu_configs(tiles: tuple[tuple[int, int, int, int], ...]) -> list:
    """``triton.Config`` objects for (BLOCK_N, BLOCK_M, num_warps, num_stages) tiles."""
    return [triton.Config({"BLOCK_N": bn, "BLOCK_M": bm}, num_warps=w, num_stages=s) for bn, bm, w, s in tiles]


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
