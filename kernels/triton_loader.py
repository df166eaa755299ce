"""The one place the kernels import triton (loud when it is missing), and Triton-interpreter detection.

Importing this module imports no triton; :func:`import_triton` does, and raises
:class:`~protoinspect.kernels.errors.TritonNotInstalledError` naming the ``triton`` extra when it cannot.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from protoinspect.kernels.errors import TRITON_INSTALL_HINT, TritonNotInstalledError


def import_triton() -> tuple[ModuleType, ModuleType]:
    """Return ``(triton, triton.language)``.

    Raises:
        TritonNotInstalledError: triton is not installed (an ``ImportError``); the message says
            ``pip install "protoinspect[triton]"``.
    """
    try:
        import triton
        import triton.language as tl
    except ImportError as exc:
        msg = (f"the Triton kernels need the optional dependency 'triton', which is not installed: "
               f"{TRITON_INSTALL_HINT} (or use the *_reference functions, which need only torch)")
        raise TritonNotInstalledError(msg) from exc
    return triton, tl


def interpreter_requested() -> bool:
    """True when ``TRITON_INTERPRET`` asks for the CPU interpreter (it only takes effect at ``@triton.jit`` time).

    Raises:
        TritonNotInstalledError: triton is not installed.
    """
    triton, _ = import_triton()
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
