"""Device selection, timing and model unwrapping, shared by training, validation and prediction."""

from __future__ import annotations

import os
import time

import torch
from torch import nn

from build_utils.errors import UserError


def select_device(device: str = "", local_rank: int | None = None) -> torch.device:
    """Turn a `--device` string ('', 'cpu', '0', '0,1', 'cuda:1', 'mps') into a torch.device.

    '' picks the first GPU when CUDA is available, else the CPU. A list such as '0,1' sets
    CUDA_VISIBLE_DEVICES-style ordering for torchrun users and returns the first of them;
    a process of a multi-process launch passes its `local_rank` (torchrun's LOCAL_RANK, SLURM's
    SLURM_LOCALID; LOCAL_RANK is read when not given) and gets GPU `local_rank` of '' or of the list.
    """
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", -1))
    spec = str(device).strip().lower().replace("cuda:", "")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise UserError("--device mps: the MPS backend is not available here; use --device cpu")
        return torch.device("mps")
    if spec == "":
        if torch.cuda.is_available():
            return torch.device("cuda", max(local_rank, 0))
        return torch.device("cpu")
    ids = [s for s in spec.split(",") if s != ""]
    if not all(s.isdigit() for s in ids):
        raise UserError(f"--device {device!r}: expected 'cpu', a GPU index such as '0', or a list like '0,1'")
    if not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    count = torch.cuda.device_count()
    bad = [i for i in ids if int(i) >= count]
    if bad:
        raise UserError(f"--device {device}: this machine has {count} GPU(s), index {bad[0]} does not exist")
    index = int(ids[local_rank]) if 0 <= local_rank < len(ids) else int(ids[0])
    return torch.device("cuda", index)


def time_sync() -> float:
    """Wall-clock seconds after waiting for queued GPU work, so timings measure the work."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel, DataParallel and `torch.compile` wrappers.

    The bare model is what owns the checkpoint's state-dict keys (no `module.` or `_orig_mod.`
    prefix), the EMA copy and the YOLO layers the loss reads; wrappers nest (a compiled DDP model),
    so they are peeled until none is left.
    """
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model
