"""Errors the kernels raise on purpose; standard library only, so they can be caught without torch or triton.

Each subclasses the builtin a caller would expect (``ValueError`` for bad arguments, ``TypeError`` for bad
dtypes, ``ImportError`` for a missing triton). ``protoinspect.sdk`` turns them into its own typed errors where
it calls the kernels (``sdk/models/attention_impl.py``); the kernels never import ``protoinspect.sdk``.
"""

from __future__ import annotations

#: What to run when triton is missing; named in :class:`TritonNotInstalledError` messages.
TRITON_INSTALL_HINT = 'pip install "protoinspect[triton]"'


class KernelError(Exception):
    """Base class of every error a kernel or launcher raises on purpose."""


class KernelInputError(KernelError, ValueError):
    """A launcher argument is invalid: shape, device, head dim, scale or row range; the message names it."""


class KernelDtypeError(KernelInputError, TypeError):
    """A kernel input is not a float32/float16/bfloat16 tensor, or the inputs' dtypes differ."""


class KernelBackwardUnsupportedError(KernelError, NotImplementedError):
    """A forward-only kernel was called on inputs that require grad; use its ``*_reference`` for training."""


class TritonNotInstalledError(KernelError, ImportError):
    """The ``triton`` extra is not installed; the message says ``pip install "protoinspect[triton]"``."""
