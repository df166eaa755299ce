"""Autotune tiles shared by the attention kernels: the tile lists, the interpreter's single config, config
pruning and the ``@triton.autotune`` decorator every kernel takes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from protoinspect.kernels.triton_loader import import_triton, interpreter_requested

triton, tl = import_triton()

#: (BLOCK_N query rows, BLOCK_M keys, num_warps, num_stages) forward tiles of both attention kernels
FWD_TILES = ((32, 32, 4, 1), (32, 64, 4, 2), (64, 32, 4, 3), (64, 64, 4, 3), (64, 128, 4, 2),
             (128, 32, 4, 3), (128, 64, 4, 4), (128, 64, 8, 3), (128, 128, 8, 2))
#: (BLOCK_N query rows, BLOCK_M prototypes, num_warps, num_stages) tiles of the prototype-attention backward
BWD_TILES = ((32, 32, 4, 1), (32, 32, 4, 2), (64, 32, 4, 2), (32, 64, 4, 2), (64, 64, 4, 3),
             (128, 64, 8, 2), (64, 128, 8, 2))
#: The interpreter runs every program in Python: one config, blocks small enough that the tests cross
#: several key blocks (online-softmax rescaling) and leave ragged tails.
INTERPRET_CONFIGS = [triton.Config({"BLOCK_N": 32, "BLOCK_M": 32}, num_warps=4, num_stages=1)]

#: ``keep(config, launch_args) -> bool``: whether a config suits a launch (its named arguments and constexprs)
KeepConfig = Callable[[Any, dict[str, Any]], bool]


def gpu_configs(tiles: tuple[tuple[int, int, int, int], ...]) -> list:
    """``triton.Config`` objects for (BLOCK_N, BLOCK_M, num_warps, num_stages) tiles."""
    return [triton.Config({"BLOCK_N": bn, "BLOCK_M": bm}, num_warps=w, num_stages=s) for bn, bm, w, s in tiles]


def pruner(keep: KeepConfig) -> Callable[..., list]:
    """An ``early_config_prune`` for ``triton.autotune``: the configs ``keep`` accepts, else the first one."""

    def prune(configs: list, named_args: dict, **kwargs: Any) -> list:
        args = {**named_args, **kwargs}
        return [c for c in configs if keep(c, args)] or configs[:1]

    return prune


def tile_autotune(tiles: tuple[tuple[int, int, int, int], ...], key: list[str], keep: KeepConfig) -> Any:
    """``triton.autotune`` over ``tiles`` on a GPU (:data:`INTERPRET_CONFIGS` under the interpreter), keyed by
    ``key`` and pruned by ``keep`` before timing."""
    configs = INTERPRET_CONFIGS if interpreter_requested() else gpu_configs(tiles)
    return triton.autotune(configs=configs, key=key, prune_configs_by={"early_config_prune": pruner(keep)})


def forward_tile_filter(*, keys_are_tokens: bool) -> KeepConfig:
    """The :data:`KeepConfig` of a forward kernel: drop tiles much larger than N (the query block; the key block
    too when the keys are the N tokens themselves) and large tiles at D = 256 (registers / shared memory)."""

    def keep(conf: Any, args: dict[str, Any]) -> bool:
        block_n, block_m = conf.kwargs["BLOCK_N"], conf.kwargs["BLOCK_M"]
        if (max(block_n, block_m) if keys_are_tokens else block_n) > max(32, triton.next_power_of_2(args["N"])):
            return False
        return args["HEAD_DIM_PAD"] < 256 or (block_n <= 64 and block_m <= 64)

    return keep
