"""Multi-process training set-up for `torchrun` and SLURM `srun`, and the one rank-0 gate for I/O.

`torchrun` sets RANK, WORLD_SIZE and LOCAL_RANK (env:// init); under `srun` without torchrun the same
facts come from SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID, and MASTER_ADDR/MASTER_PORT from the
batch script. `init_distributed` picks NCCL on CUDA and gloo on CPU, gives every collective the
`--dist-timeout`, and returns a small `DistInfo`. Everything that writes files or prints bars asks
`DistInfo.is_main` once, so the loop never scatters `if rank == 0` checks around.

Only the global rank may shape what a rank computes: the local rank picks the GPU and nothing else.
One launch fact leaks into CPU numerics, though: torchrun sets OMP_NUM_THREADS=1 only on nodes that
run several processes, and the intra-op thread count changes the summation order of CPU kernels, so a
`--deterministic` CPU run pins it (`pin_cpu_threads`) to give every node layout the same weights.
"""

from __future__ import annotations

import datetime
import gc
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from build_utils.errors import UserError
from build_utils.torch_utils import select_device

logger = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_DIST_TIMEOUT_S = 1800  # torch's own default for gloo and NCCL process groups


@dataclass(frozen=True)
class LaunchEnv:
    """Where the launcher put this process: global `rank` of `world_size`, `local_rank` on its node."""

    rank: int
    world_size: int
    local_rank: int
    launcher: str  # "torchrun", "slurm" or "single"


def launch_env(environ: Mapping[str, str] | None = None) -> LaunchEnv:
    """Rank facts as torchrun sets them, else as SLURM's srun sets them, else a single process."""
    env = os.environ if environ is None else environ
    if int(env.get("WORLD_SIZE", 1)) > 1:
        return LaunchEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)), "torchrun")
    if "RANK" not in env and int(env.get("SLURM_NTASKS", 1)) > 1 and "SLURM_PROCID" in env:
        return LaunchEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)),
                         "slurm")
    return LaunchEnv(0, 1, 0, "single")


def init_method(launch: LaunchEnv, environ: Mapping[str, str] | None = None) -> str:
    """env:// under torchrun; tcp://MASTER_ADDR:MASTER_PORT (port 29500 by default) under srun."""
    env = os.environ if environ is None else environ
    if launch.launcher != "slurm":
        return "env://"
    if not env.get("MASTER_ADDR"):
        raise UserError("srun started this process as one of several SLURM tasks but MASTER_ADDR is not set; "
                        "add `export MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n 1)` "
                        "to the batch script (or launch with torchrun)")
    return f"tcp://{env['MASTER_ADDR']}:{env.get('MASTER_PORT', '29500')}"


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: `rank` 0..world_size-1, `local_rank` on its node, its device.

    `monitor` is a gloo group used only to name unresponsive ranks after a collective timed out.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    monitor: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def on_main(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """Call `fn` on rank 0 only (file writes, plots, logging of results); other ranks get None."""
        return fn(*args, **kwargs) if self.is_main else None


def init_distributed(device_arg: str, timeout_s: float = DEFAULT_DIST_TIMEOUT_S) -> DistInfo:
    """Single process unless launched by torchrun or srun; then join the process group.

    Every collective fails after `timeout_s` seconds instead of waiting forever for a hung or dead
    rank; `unresponsive_ranks_message` then names it.
    """
    launch = launch_env()
    if launch.world_size <= 1:
        return DistInfo(0, 1, 0, select_device(device_arg))
    rank, world_size, local_rank = launch.rank, launch.world_size, launch.local_rank
    device = select_device(device_arg, local_rank=local_rank)
    if device.type == "cuda":
        if device.index >= torch.cuda.device_count():
            raise UserError(f"{launch.launcher} started {world_size} processes but this node has "
                            f"{torch.cuda.device_count()} GPU(s); start at most one process per GPU")
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    if not dist.is_initialized():
        store = restart_store(launch, timeout)
        dist.init_process_group(backend=backend, init_method=None if store else init_method(launch),
                                rank=rank, world_size=world_size, timeout=timeout, store=store)
    monitor = dist.new_group(backend="gloo", timeout=timeout)
    logger.info("distributed: rank %d/%d (local %d, pid %d) on %s with %s via %s, collective timeout %.0f s",
                rank, world_size, local_rank, os.getpid(), device, backend, launch.launcher, timeout_s)
    return DistInfo(rank, world_size, local_rank, device, monitor)


def restart_store(launch: LaunchEnv, timeout: datetime.timedelta) -> dist.Store | None:
    """torchrun's agent store, with keys of this restart only (None = plain env:// is fine).

    torchrun keeps one agent store across `--max-restarts` restarts, and env:// reuses the process
    group's keys, so a restarted rank could read the dead group's gloo addresses before the new rank
    0 overwrote them ("Connection refused", seen in about half of the restarts here).
    """
    env = os.environ
    if launch.launcher != "torchrun" or env.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    agent = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), launch.world_size, is_master=False,
                          timeout=timeout)
    return dist.PrefixStore(f"/yolo/restart_{env.get('TORCHELASTIC_RESTART_COUNT', '0')}", agent)


def pin_cpu_threads(info: DistInfo, deterministic: bool) -> int | None:
    """A `--deterministic` CPU run of several processes uses OMP_NUM_THREADS intra-op threads, or 1.

    torchrun exports OMP_NUM_THREADS=1 only when a node runs more than one process, so without this
    two nodes of one process (all cores each) and one node of two (1 thread each) sum in different
    orders and end with different weights. Returns the thread count set, or None when untouched.
    """
    if not (deterministic and info.distributed and info.device.type == "cpu"):
        return None
    threads = int(os.environ.get("OMP_NUM_THREADS") or 1)
    torch.set_num_threads(threads)
    logger.info("deterministic CPU run: %d intra-op thread(s) per process (OMP_NUM_THREADS, else 1), the "
                "same for every node layout", threads)
    return threads


def unresponsive_ranks_message(info: DistInfo, err: BaseException, wait_s: float = 5.0) -> str:
    """After a collective failed: which ranks do not answer a monitored barrier within `wait_s`."""
    detail = (str(err).strip().splitlines() or [type(err).__name__])[-1][:200]
    if info.monitor is None:
        return f"rank {info.rank}: a collective failed ({detail})"
    try:
        dist.monitored_barrier(group=info.monitor, timeout=datetime.timedelta(seconds=wait_s),
                               wait_all_ranks=True)
    except RuntimeError as probe:
        found = re.search(r"Ranks? ([\d, ]+) failed to pass monitoredBarrier", str(probe))
        if found:
            ranks = found.group(1).strip().rstrip(",")
            return (f"rank {ranks} stopped answering (hung or dead): a collective failed on rank {info.rank} "
                    f"({detail}) and rank {ranks} missed a {wait_s:.0f} s barrier")
        return f"a collective failed on rank {info.rank} ({detail}); a peer is dead or unreachable"
    return f"a collective failed on rank {info.rank} ({detail}), yet every rank answers a barrier now"


class RankFailureError(UserError):
    """A collective timed out or lost a peer; the message names the rank that stopped answering."""


_COLLECTIVE_FAILURE = re.compile(r"Timed out waiting|Connection (closed|reset) by peer|gloo|NCCL|watchdog",
                                 re.IGNORECASE)


@contextmanager
def naming_failed_ranks(info: DistInfo, wait_s: float = 5.0) -> Iterator[None]:
    """Turn a collective's timeout or lost peer inside the block into a one-line `RankFailureError`
    naming the rank that stopped answering (the job then exits instead of hanging)."""
    try:
        yield
    except RuntimeError as err:
        if not (info.distributed and _COLLECTIVE_FAILURE.search(str(err))):
            raise
        message = unresponsive_ranks_message(info, err, wait_s)
        logger.error("%s", message)
        raise RankFailureError(f"{message}; the job stops (torchrun --max-restarts restarts it from the "
                               "newest checkpoint)") from None


def cleanup_distributed() -> None:
    """Free the run's unreachable objects, then destroy the process groups.

    The Trainer sits in reference cycles, so its DistributedDataParallel model would otherwise
    outlive the group it talks through until the interpreter's exit, where about one gloo run in ten
    aborted a rank after a finished run ("terminate called without an active exception", exit -6;
    0 of 45 runs with the collection first, 7 of 70 without).
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
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


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's value of a picklable object, in rank order, on every rank (per-rank resume state)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out
