"""Triton attention kernels (the ``triton`` extra) and their PyTorch references; importing this package imports
neither triton nor torch.

Public names resolve lazily, on first use::

    from protoinspect.kernels import prototype_attention, region_guided_attention  # launchers: imports triton
    from protoinspect.kernels import prototype_attention_reference                  # references: torch only

Modules: ``attention_reference`` (the PyTorch specification of both ops), ``prototype_attention_kernel`` and
``region_guided_attention_kernel`` (the ``@triton.jit`` kernels and their launchers),
``prototype_attention_backward``, ``attention_tiles`` (tile plumbing every kernel body shares),
``launch_checks``, ``autotune_tiles``, ``mma``, ``triton_loader`` and ``errors``. Without triton installed,
resolving a launcher raises :class:`TritonNotInstalledError` (an ``ImportError`` naming
``pip install "protoinspect[triton]"``); the references and the error types need no triton.
The kernels depend on torch, triton and the standard library only.
"""

from __future__ import annotations

import importlib
from typing import Any

from protoinspect.kernels.errors import (
    KernelBackwardUnsupportedError,
    KernelDtypeError,
    KernelError,
    KernelInputError,
    TritonNotInstalledError,
)

_EXPORTS: dict[str, str] = {
    "prototype_attention": "protoinspect.kernels.prototype_attention_kernel",
    "PrototypeAttentionFunction": "protoinspect.kernels.prototype_attention_kernel",
    "region_guided_attention": "protoinspect.kernels.region_guided_attention_kernel",
    "prototype_attention_reference": "protoinspect.kernels.attention_reference",
    "region_guided_attention_reference": "protoinspect.kernels.attention_reference",
}

__all__ = [  # noqa: RUF022 -- launchers, references, then errors
    "prototype_attention",
    "PrototypeAttentionFunction",
    "region_guided_attention",
    "prototype_attention_reference",
    "region_guided_attention_reference",
    "KernelError",
    "KernelInputError",
    "KernelDtypeError",
    "KernelBackwardUnsupportedError",
    "TritonNotInstalledError",
]


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first use (PEP 562) and cache the value here."""
    module = _EXPORTS.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
