"""Autotune tiles shared by the attention kernels: the GPU tile list and the interpreter's single config."""

from __future__ import annotations

from protoinspect.kernels.triton_loader import import_triton

triton, tl = import_triton()

#: (BLOCK_N query rows, BLOCK_M keys, num_warps, num_stages) forward tiles of both attention kernels
FWD_TILES = ((32, 32, 4, 1), (32, 64, 4, 2), (64, 32, 4, 3), (64, 64, 4, 3), (64, 128, 4, 2),
             (128, 32, 4, 3), (128, 64, 4, 4), (128, 64, 8, 3), (128, 128, 8, 2))
#: The interpreter runs every program in Python: one config, blocks small enough that the tests cross
#: several key blocks (online-softmax rescaling) and leave ragged tails.
INTERPRET_CONFIGS = [triton.Config({"BLOCK_N": 32, "BLOCK_M": 32}, num_warps=4, num_stages=1)]


def gpu_configs(tiles: tuple[tuple[int, int, int, int], ...]) -> list:
    """``triton.Config`` objects for (BLOCK_N, BLOCK_M, num_warps, num_stages) tiles."""
    return [triton.Config({"BLOCK_N": bn, "BLOCK_M": bm}, num_warps=w, num_stages=s) for bn, bm, w, s in tiles]
