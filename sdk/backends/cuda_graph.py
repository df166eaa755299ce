"""CUDA-graph capture of a fixed-shape forward pass (the torch backend's low-latency GPU path).

One graph per input shape: static input/output buffers are captured once after a warm-up on a side
stream (as PyTorch's CUDA-graph notes prescribe); each call copies the input into the static buffer
and replays the graph, so the per-frame CPU cost is a copy and one launch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class CudaGraphRunner:
    """Replays ``fn`` (tensors in -> tuple of tensors out) from captured CUDA graphs, one per shape."""

    def __init__(self, fn: Callable[[Any], tuple[Any, ...]], warmup: int = 3) -> None:
        import torch

        self._torch = torch
        self.fn = fn
        self.warmup = warmup
        self._graphs: dict[tuple[int, ...], tuple[Any, Any, tuple[Any, ...]]] = {}

    def _capture(self, x: Any) -> tuple[Any, Any, tuple[Any, ...]]:
        torch = self._torch
        static_in = x.clone()
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.fn(static_in)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.fn(static_in)
        return graph, static_in, static_out

    def __call__(self, x: Any) -> tuple[Any, ...]:
        """Outputs for ``x`` (a CUDA tensor); the returned tensors are overwritten by the next call."""
        key = tuple(x.shape)
        if key not in self._graphs:
            self._graphs[key] = self._capture(x)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out

    @property
    def captured_shapes(self) -> list[tuple[int, ...]]:
        """Input shapes with a captured graph."""
        return list(self._graphs)
