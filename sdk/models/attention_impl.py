"""Choice between the PyTorch reference attention and the fused Triton kernels (``attention_impl``), and the
boundary where the kernels' own errors become ProtoInspect errors."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from protoinspect.kernels.errors import KernelBackwardUnsupportedError, KernelInputError, TritonNotInstalledError
from protoinspect.sdk.errors import ConfigError, InputError, MissingDependencyError

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


@contextlib.contextmanager
def kernel_errors() -> Iterator[None]:
    """Import and call a Triton launcher inside this block: kernel errors leave it as ProtoInspect errors.

    ``protoinspect.kernels`` depends on torch, triton and the standard library only, so it raises its own
    types (:mod:`protoinspect.kernels.errors`); the models are where the SDK calls it. The original error is
    kept as ``__cause__``.

    Raises:
        MissingDependencyError: triton is not installed (from ``TritonNotInstalledError``).
        InputError: a launcher rejected a shape, device or dtype (from ``KernelInputError`` /
            ``KernelDtypeError``).
        ConfigError: a forward-only kernel met inputs that require grad (from
            ``KernelBackwardUnsupportedError``): train with ``attention_impl='reference'``.
    """
    try:
        yield
    except TritonNotInstalledError as exc:
        raise MissingDependencyError(str(exc)) from exc
    except KernelInputError as exc:
        raise InputError(str(exc)) from exc
    except KernelBackwardUnsupportedError as exc:
        msg = (f"{exc}. With attention_impl='triton' this model runs inference only: "
               "train with attention_impl='reference'")
        raise ConfigError(msg) from exc
