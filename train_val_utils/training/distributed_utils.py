"""Multi-process training set-up for `torchrun`, and the one rank-0 gate for file and console I/O.

`torchrun --nproc_per_node N train.py ...` sets RANK, WORLD_SIZE and LOCAL_RANK; `init_distributed`
reads them (env:// init), picks NCCL on CUDA and gloo on CPU, and returns a small `DistInfo`.
Everything that writes files or prints bars asks `DistInfo.is_main` once, so the loop never
scatters `if rank == 0` checks around.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from build_utils.errors import UserError
from build_utils.torch_utils import select_device

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: `rank` 0..world_size-1, `local_rank` on its node, its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def on_main(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """Call `fn` on rank 0 only (file writes, plots, logging of results); other ranks get None."""
        return fn(*args, **kwargs) if self.is_main else None


def init_distributed(device_arg: str) -> DistInfo:
    """Single process unless launched by torchrun; then join the env:// process group."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size <= 1:
        return DistInfo(0, 1, 0, select_device(device_arg))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = select_device(device_arg)
    if device.type == "cuda":
        if torch.cuda.device_count() <= local_rank:
            raise UserError(f"torchrun started {world_size} processes but this node has "
                            f"{torch.cuda.device_count()} GPU(s); use --nproc_per_node <= the GPU count")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://")
    logger.info("distributed: rank %d/%d (local %d) on %s with %s", rank, world_size, local_rank, device,
                backend)
    return DistInfo(rank, world_size, local_rank, device)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of `tensor` over ranks (running loss sums and counts); a copy, the input is untouched."""
    out = tensor.detach().clone()
    if info.distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's value of a picklable object on every rank (e.g. the run folder, a stop flag)."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
