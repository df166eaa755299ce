"""Kernel-test fixtures: fresh random inputs every run (seed printed on failure) and a verbose assert_close.

These tests run on CUDA, or on CPU as a separate process with ``TRITON_INTERPRET=1`` (the variable is read
when ``@triton.jit`` decorates, at import); tests/kernels/test_interpreted_run.py starts that process.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> int:
    """Overrides the suite's fixed seed: kernel tests draw new inputs on every run."""
    seed = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(seed)
    return seed


@pytest.fixture()
def check_close(_seed: int) -> Callable[..., None]:
    """``check_close(actual, expected, tol, what)``: every element, with the seed and case in the message."""

    def check(actual: torch.Tensor, expected: torch.Tensor, tol: tuple[float, float], what: str,
              equal_nan: bool = False) -> None:
        atol, rtol = tol
        torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, equal_nan=equal_nan,
                                   msg=lambda m: f"{what} (torch seed {_seed}, atol={atol}, rtol={rtol}):\n{m}")

    return check
