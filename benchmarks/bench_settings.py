"""Settings shared by the benchmark files."""

from __future__ import annotations

import os


def bench_threads() -> int:
    """CPU threads of the measured runtimes ($PROTOINSPECT_THREADS, default 2: the target machine)."""
    return int(os.environ.get("PROTOINSPECT_THREADS", "2"))
