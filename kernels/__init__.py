"""Triton kernels (the ``triton`` extra) and their PyTorch references; importing this package imports no triton.

Public names resolve lazily, on first use::

    from protoinspect.kernels import prototype_attention, region_guided_attention  # imports triton now

``protoinspect.kernels.prototype_attention`` and ``protoinspect.kernels.region_guided_attention`` are always the launcher functions,
even after their modules were imported: ``from protoinspect.kernels.prototype_attention import ...`` works as usual, but
``import protoinspect.kernels.prototype_attention as m`` binds the function; use ``importlib.import_module`` for the module.
Without triton installed, resolving a kernel name raises ``MissingDependencyError``; the error types
(``KernelDtypeError``, ``KernelBackwardUnsupportedError``) need only torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_EXPORTS: dict[str, str] = {
    "prototype_attention": "protoinspect.kernels.prototype_attention",
    "prototype_attention_reference": "protoinspect.kernels.prototype_attention",
    "PrototypeAttentionFunction": "protoinspect.kernels.prototype_attention",
    "region_guided_attention": "protoinspect.kernels.region_guided_attention",
    "region_guided_attention_reference": "protoinspect.kernels.region_guided_attention",
    "KernelDtypeError": "protoinspect.kernels.launch_checks",
    "KernelBackwardUnsupportedError": "protoinspect.kernels.launch_checks",
}

__all__ = [  # noqa: RUF022 -- grouped by module, as in _EXPORTS
    "prototype_attention",
    "prototype_attention_reference",
    "PrototypeAttentionFunction",
    "region_guided_attention",
    "region_guided_attention_reference",
    "KernelDtypeError",
    "KernelBackwardUnsupportedError",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache; bypasses the guard below
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


class _KernelsPackage(types.ModuleType):
    """Keeps the launcher names bound to functions: importing ``protoinspect.kernels.prototype_attention`` (the module)
    would otherwise rebind the package attribute ``prototype_attention`` to the module."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _KernelsPackage
