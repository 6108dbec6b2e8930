"""Imported first by every entry script: OpenMP threads that sleep while they wait for work, and as
many of them as the cores other processes leave free.

PyTorch's CPU kernels run on an OpenMP pool (GNU libgomp) whose idle threads spin for ~300,000
iterations before they sleep. On a quiet machine that saves a wake-up per parallel region; on a shared
one a spinning thread burns the time slice another process (or its own sibling, which the region waits
for) needed, and throughput collapses. Measured on a 2-core box at load ~20: a yolov3-tiny forward at
416 took 2.5 s with the default policy and 0.21 s with `OMP_WAIT_POLICY=PASSIVE` (BENCHMARKS.md).

libgomp reads the variable once, when the library is loaded by `import torch`, so this module must be
imported before torch: the scripts import it on their first line, after `from __future__`. A value the
user set is kept (`OMP_WAIT_POLICY=ACTIVE` for a dedicated machine).

Thread count: with other processes busy, two threads on two cores wait for each other at every parallel
region while the scheduler gives their cores away. `STARTUP_SAMPLE`, taken here when the process starts,
and a second sample after the imports (about a second later, so measuring costs nothing) tell how many
cores the *other* processes kept busy meanwhile; `threads_for_free_cores` sizes the pool to the rest.
predict.py beside two spinning processes on 2 cores: 9.6 s with 1 thread, 11.2 s with 2 (BENCHMARKS.md).
It imports nothing but `os` and `time`.
"""

from __future__ import annotations

import os
import time
from collections.abc import MutableMapping
from typing import NamedTuple

WAIT_POLICY = "PASSIVE"


def prefer_passive_wait(environ: MutableMapping[str, str] = os.environ) -> str:
    """Set OMP_WAIT_POLICY=PASSIVE unless the user chose a policy; returns the policy in effect."""
    return environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)


class CpuSample(NamedTuple):
    """Machine-wide CPU jiffies (all cores, from /proc/stat) and this process's CPU seconds, at `wall`."""

    wall: float
    busy_jiffies: int
    total_jiffies: int
    own_cpu_s: float


def cpu_sample(stat_path: str = "/proc/stat") -> CpuSample | None:
    """Now's sample, or None where /proc/stat is not there (macOS, Windows)."""
    try:
        with open(stat_path) as f:
            # the "cpu" line: user nice system idle iowait irq softirq steal (guest time is inside user)
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    times = os.times()
    idle = fields[3] + fields[4]
    return CpuSample(time.monotonic(), sum(fields) - idle, sum(fields), times.user + times.system)


def cores_others_use(start: CpuSample, end: CpuSample, n_cpus: int) -> float | None:
    """Cores kept busy by other processes between two samples (machine busy minus this process), or None
    when the interval is too short to tell (under 0.2 s, or no jiffies elapsed)."""
    wall, total = end.wall - start.wall, end.total_jiffies - start.total_jiffies
    if wall < 0.2 or total <= 0:
        return None
    busy = n_cpus * (end.busy_jiffies - start.busy_jiffies) / total
    own = (end.own_cpu_s - start.own_cpu_s) / wall
    return max(busy - own, 0.0)


def threads_for_free_cores(default: int, start: CpuSample | None,
                           environ: MutableMapping[str, str] = os.environ) -> tuple[int, float | None]:
    """(threads to use, cores other processes keep busy): `default` less the busy cores, at least 1.

    `default` stays when the user set OMP_NUM_THREADS, or when the load cannot be measured.
    """
    end = cpu_sample()
    if "OMP_NUM_THREADS" in environ or start is None or end is None:
        return default, None
    n_cpus = os.cpu_count() or 1
    others = cores_others_use(start, end, n_cpus)
    if others is None:
        return default, None
    free = n_cpus - others
    return max(1, min(default, int(free + 0.5))), others


prefer_passive_wait()
STARTUP_SAMPLE = cpu_sample()  # the start of the window threads_for_free_cores measures
