"""Data-parallel training with ``torchrun``: join the process group, agree on when to stop."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    """This process's place in the group (rank 0 of 1 without ``torchrun``)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Distributed:
    """Join the process group that torchrun describes in the environment (gloo on CPU, nccl on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size())


def rank_device(device: torch.device) -> torch.device:
    """Under torchrun each rank uses its ``LOCAL_RANK`` GPU."""
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def agree(flag: bool, group: Distributed) -> bool:
    """Rank 0's value of ``flag`` on every rank (so all ranks stop at the same step)."""
    if group.world_size <= 1:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0])
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def barrier(group: Distributed) -> None:
    if group.world_size > 1:
        dist.barrier()


__all__ = ["Distributed", "agree", "barrier", "init_distributed", "rank_device"]
