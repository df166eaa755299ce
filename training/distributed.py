"""Device choice and data-parallel training (torchrun / DDP) for the detector trainer.

Started with ``torchrun --nproc_per_node N -m protoinspect.training.train_detector ...`` the trainer
runs one process per rank (NCCL on CUDA, gloo on CPU), each drawing its own batches; gradients are
averaged by DistributedDataParallel and rank 0 alone writes checkpoints and the bundle.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from protoinspect.sdk.errors import ConfigError


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` without a GPU is a :class:`ConfigError`."""
    if requested not in ("auto", "cpu", "cuda"):
        msg = f"device must be 'auto', 'cpu' or 'cuda', got {requested!r}"
        raise ConfigError(msg)
    if requested == "cuda" and not torch.cuda.is_available():
        msg = "device=cuda was asked for but torch sees no CUDA GPU (torch.cuda.is_available() is False); use device=cpu or auto"
        raise ConfigError(msg)
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


@dataclass
class DistributedContext:
    """Rank, world size and device of this training process (world size 1 without torchrun)."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints, logs and the bundle."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` wrapped in DistributedDataParallel when several processes train."""
        if not self.active:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    @staticmethod
    def unwrap(module: nn.Module) -> nn.Module:
        """The module inside a DDP wrapper (or the module itself)."""
        return getattr(module, "module", module)

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def close(self) -> None:
        """Leave the process group (a no-op for a single process)."""
        if self.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def setup_distributed(requested_device: str) -> DistributedContext:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1), pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(requested_device, local_rank)
    if world <= 1:
        return DistributedContext(0, 1, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(torch.distributed.get_rank(), torch.distributed.get_world_size(), device)
