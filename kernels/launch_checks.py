"""Validation shared by the kernel launchers: device, dtype, shapes, head dim, scale and row ranges.

Imports torch and :mod:`protoinspect.kernels.errors` only (no triton), so the references can use it without the extra.
"""

from __future__ import annotations

import contextlib
import math

import torch

from protoinspect.kernels.errors import KernelDtypeError, KernelInputError

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 256
MIN_DOT_DIM = 16  # tl.dot needs every block dimension >= 16
LOG2E = 1.4426950408889634  # exp(x) = exp2(x * LOG2E): the kernels work in log2 units


def check_tensors(op: str, tensors: dict[str, torch.Tensor], *, interpreted: bool) -> torch.device:
    """Check that ``tensors`` are float tensors of one dtype on one device the kernels can run on.

    Args:
        op: launcher name, used in messages.
        tensors: argument name -> tensor, in argument order.
        interpreted: whether the kernels were decorated under ``TRITON_INTERPRET=1`` (CPU allowed).

    Returns:
        The common device.

    Raises:
        KernelDtypeError: a non-tensor, an unsupported dtype, or mixed dtypes.
        KernelInputError: mixed devices, or a device the kernels cannot run on.
    """
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            msg = f"{op}: {name} must be a torch.Tensor, got {type(tensor).__name__}"
            raise KernelDtypeError(msg)
        if tensor.dtype not in SUPPORTED_DTYPES:
            msg = f"{op}: {name} has dtype {tensor.dtype}; the kernels take torch.float32, torch.float16 or torch.bfloat16"
            raise KernelDtypeError(msg)
    if len({t.dtype for t in tensors.values()}) > 1:
        got = ", ".join(f"{name}={t.dtype}" for name, t in tensors.items())
        msg = f"{op}: all inputs must have the same dtype, got {got}"
        raise KernelDtypeError(msg)
    if len({t.device for t in tensors.values()}) > 1:
        got = ", ".join(f"{name}={t.device}" for name, t in tensors.items())
        msg = f"{op}: all inputs must be on the same device, got {got}"
        raise KernelInputError(msg)
    device = next(iter(tensors.values())).device
    if device.type == "cuda" or (device.type == "cpu" and interpreted):
        return device
    msg = (f"{op}: the Triton kernels need CUDA tensors, or CPU tensors with the Triton interpreter "
           f"(TRITON_INTERPRET=1 set before triton is imported; slow, for tests); got tensors on {device}. "
           f"Use the *_reference function to run on {device.type}.")
    raise KernelInputError(msg)


def shape_error(op: str, name: str, tensor: torch.Tensor, expected: str) -> KernelInputError:
    """The error for ``tensor`` not having the ``expected`` layout (e.g. ``"B x H x N x D (rank 4)"``)."""
    return KernelInputError(f"{op}: {name} must be {expected}, got shape {tuple(tensor.shape)}")


def padded_head_dim(op: str, head_dim: int) -> int:
    """The power-of-two block width (>= 16) that holds ``head_dim``; raise KernelInputError outside 1..256."""
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        msg = f"{op}: head dim D must be in 1..{MAX_HEAD_DIM}, got D={head_dim}"
        raise KernelInputError(msg)
    return max(MIN_DOT_DIM, 1 << (head_dim - 1).bit_length())


def resolve_scale(op: str, scale: float | None, head_dim: int) -> float:
    """``scale`` as a finite float, defaulting to 1/sqrt(D)."""
    if scale is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        msg = f"{op}: scale must be a finite float or None, got {scale!r}"
        raise KernelInputError(msg)
    return float(scale)


def resolve_rows(op: str, rows: slice | None, n: int) -> tuple[int, int]:
    """The half-open query-row range ``[start, stop)`` of ``rows`` (None = all rows) for ``n`` rows."""
    if rows is None:
        return 0, n
    if not isinstance(rows, slice):
        msg = f"{op}: bias_rows must be None or a slice of query rows (e.g. slice(0, 1)), got {rows!r}"
        raise KernelInputError(msg)
    try:
        start, stop, step = rows.indices(n)
    except TypeError as exc:
        msg = f"{op}: bias_rows must be a slice of ints, got {rows!r}"
        raise KernelInputError(msg) from exc
    if step != 1:
        msg = f"{op}: bias_rows must be a contiguous slice (step 1), got {rows!r}"
        raise KernelInputError(msg)
    return start, max(start, stop)


def needs_grad(*tensors: torch.Tensor) -> bool:
    """True when autograd will record an op on ``tensors``."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def device_guard(device: torch.device) -> contextlib.AbstractContextManager:
    """Make ``device`` current while launching (Triton launches on the current CUDA device)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def dot_options(dtype: torch.dtype, *, interpreted: bool) -> dict[str, object]:
    """Constexprs for ``kernels/mma.py``: IEEE fp32 dots for fp32 inputs (no TF32, so fp32 matches the
    reference to ~1e-5); bf16 operands upcast only under the interpreter (it mis-multiplies bf16)."""
    return {"DOT_PRECISION": "ieee" if dtype == torch.float32 else "tf32",
            "DOT_UPCAST": interpreted and dtype == torch.bfloat16}


def strides4(t: torch.Tensor) -> tuple[int, ...]:
    """Strides of ``t`` as a rank-4 tensor; a rank-3 tensor (shared by the batch) gets batch stride 0."""
    return (0, *t.stride()) if t.dim() == 3 else tuple(t.stride())
