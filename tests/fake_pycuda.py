"""In-memory stand-in for ``pycuda.driver`` for CPU tests (used with :mod:`fake_tensorrt`).

Device memory is a dict of numpy byte buffers keyed by a fake address; streams record CUDA-graph captures
(``begin_capture`` / ``end_capture`` / ``instantiate`` / ``launch``); ``cuda.log`` records context pushes
and pops, captures, graph launches and device -> host copies (``("dtoh", source address)``) so tests can
assert on them.
"""

from __future__ import annotations

import itertools
import types
from typing import Any

import numpy as np

MEMORY: dict[int, np.ndarray] = {}
_ADDR = itertools.count(0x1000, 0x100000)


def make_cuda(compute_capability: tuple[int, int] = (8, 7), name: str = "Orin", devices: int = 1) -> types.ModuleType:
    """A fake ``pycuda.driver``; ``cuda.log`` records pushes/pops, captures, launches and device -> host copies."""
    cuda = types.ModuleType("pycuda.driver")
    cuda.log = []  # type: ignore[attr-defined]

    class DeviceAllocation:
        def __init__(self, nbytes: int) -> None:
            self.address = next(_ADDR)
            MEMORY[self.address] = np.zeros(nbytes, dtype=np.uint8)

        def __int__(self) -> int:
            return self.address

        def free(self) -> None:
            MEMORY.pop(self.address, None)

    class Context:
        def push(self) -> None:
            cuda.log.append("push")

        def detach(self) -> None:
            cuda.log.append("detach")

        @staticmethod
        def pop() -> None:
            cuda.log.append("pop")

    class Device:
        def __init__(self, index: int) -> None:
            self.index = index

        @staticmethod
        def count() -> int:
            return devices

        def name(self) -> str:
            return name

        def compute_capability(self) -> tuple[int, int]:
            return compute_capability

        def retain_primary_context(self) -> Context:
            return Context()

    class Graph:
        def __init__(self, ops: list) -> None:
            self.ops = ops

        def instantiate(self) -> Graph:
            return self

        def launch(self, stream: Any = None) -> None:
            cuda.log.append("graph_launch")
            for op in self.ops:
                op()

    class Stream:
        def __init__(self) -> None:
            self.handle = next(_ADDR)
            self.capture: list | None = None

        def synchronize(self) -> None:
            pass

        def begin_capture(self) -> None:
            cuda.log.append("begin_capture")
            self.capture = []

        def end_capture(self) -> Graph:
            ops, self.capture = self.capture, None
            return Graph(ops or [])

    def _write(dst: Any, src: np.ndarray) -> None:
        raw = np.ascontiguousarray(src).view(np.uint8).reshape(-1)
        MEMORY[int(dst)][: raw.size] = raw

    def _read(dst: np.ndarray, src: Any) -> None:
        flat = dst.reshape(-1).view(np.uint8)
        flat[:] = MEMORY[int(src)][: flat.size]

    cuda.init = lambda flags=0: None  # type: ignore[attr-defined]
    cuda.Device, cuda.Context, cuda.Stream = Device, Context, Stream  # type: ignore[attr-defined]
    cuda.mem_alloc = DeviceAllocation  # type: ignore[attr-defined]
    cuda.pagelocked_empty = lambda shape, dtype: np.empty(shape, dtype)  # type: ignore[attr-defined]
    cuda.memcpy_htod = _write  # type: ignore[attr-defined]
    cuda.memcpy_htod_async = lambda dst, src, stream=None: _write(dst, src)  # type: ignore[attr-defined]

    def memcpy_dtoh_async(dst: np.ndarray, src: Any, stream: Any = None) -> None:
        cuda.log.append(("dtoh", int(src)))
        _read(dst, src)

    cuda.memcpy_dtoh_async = memcpy_dtoh_async  # type: ignore[attr-defined]
    return cuda


#: stream handle -> fake Stream, so execute_async_v3(handle) can see an active capture
STREAMS: dict[int, Any] = {}
