"""Device selection, the device's fast precision, timing and model unwrapping, shared by training,
validation and prediction."""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path

import torch
from torch import nn

from build_utils.errors import UserError
from build_utils.omp_env import STARTUP_SAMPLE, threads_for_free_cores

logger = logging.getLogger(__name__)

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


# CPU flags of a native bfloat16 matrix unit: AVX-512 BF16 dot products (Cooper Lake, Zen 4 and later)
# or AMX tiles (Sapphire Rapids and later). Without them oneDNN emulates bfloat16 and runs slower than
# float32, so bfloat16 is only ever a default where one of these is present.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The feature flags of the first CPU in `cpuinfo` (empty where the file does not exist: not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bfloat16 in hardware (AVX512_BF16 or AMX); read once per process."""
    return bool(cpu_flags() & set(NATIVE_BF16_FLAGS))


def fast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The reduced precision `device` runs natively: float16 on CUDA, bfloat16 on a CPU with native
    bfloat16, None elsewhere (float32 is then the fast path too)."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.float16
    if kind == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def inference_half(half: bool | None, device: torch.device) -> bool:
    """Whether `--half` runs reduced precision: float16 on CUDA, bfloat16 on a CPU.

    None (auto) is on only where it is native and checked: a CPU with AVX512_BF16/AMX (predict's
    default; mAP in BENCHMARKS.md). Asked for on a CPU without them, bfloat16 still runs (emulated,
    slower than float32) after a warning; on other devices float32 runs after a warning.
    """
    if half is None:
        return device.type == "cpu" and cpu_has_native_bf16()
    if not half:
        return False
    if device.type == "cpu" and not cpu_has_native_bf16():
        logger.warning("--half: this CPU has no native bfloat16 (AVX512_BF16 or AMX); bfloat16 is emulated "
                       "and slower than float32 here (--no-half)")
    if device.type not in ("cpu", "cuda"):
        logger.warning("--half: reduced precision runs on CUDA (float16) and CPUs (bfloat16); running "
                       "float32 on %s", device)
        return False
    return True


def half_dtype_name(device: torch.device) -> str:
    """What `--half` runs on `device`: 'float16' on CUDA, 'bfloat16' elsewhere (a CPU)."""
    return "float16" if device.type == "cuda" else "bfloat16"


def precision_name(dtype: torch.dtype) -> str:
    """'float32', 'bfloat16', 'float16': how log lines name a dtype."""
    return str(dtype).removeprefix("torch.")


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


def fit_threads_to_free_cores(device: torch.device) -> int:
    """On the CPU, shrink torch's thread pool to the cores other processes left free since this process
    started (`omp_env.threads_for_free_cores`; OMP_NUM_THREADS overrides); returns the threads in use."""
    threads = torch.get_num_threads()
    if device.type != "cpu":
        return threads
    wanted, others = threads_for_free_cores(threads, STARTUP_SAMPLE)
    if wanted < threads:
        torch.set_num_threads(wanted)
        logger.info("%d of %d CPU threads: other processes keep %.1f cores busy (OMP_NUM_THREADS=%d to "
                    "choose)", wanted, threads, others, threads)
    return wanted
