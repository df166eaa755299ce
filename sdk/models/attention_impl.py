"""Choice between the PyTorch reference attention and the fused Triton kernels (``attention_impl``)."""

from __future__ import annotations

import os

import torch

from protoinspect.sdk.errors import ConfigError

ATTENTION_IMPLS = ("reference", "triton")


def use_triton(impl: str, x: torch.Tensor) -> bool:
    """True when ``impl`` is ``"triton"`` and ``x`` can run it: a CUDA tensor, or a CPU tensor under
    Triton's interpreter (``TRITON_INTERPRET=1``, for tests).

    Raises:
        ConfigError: ``"triton"`` asked for on a CPU tensor without the interpreter (no silent fallback).
    """
    if impl != "triton":
        return False
    if x.is_cuda or os.environ.get("TRITON_INTERPRET", "0").strip().lower() in {"1", "true", "on", "yes"}:
        return True
    raise ConfigError("attention_impl='triton' needs CUDA tensors (or TRITON_INTERPRET=1 on CPU); "
                      "use attention_impl='reference' on this device")
