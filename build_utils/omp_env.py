"""Imported first by every entry script: OpenMP threads that sleep while they wait for work.

PyTorch's CPU kernels run on an OpenMP pool (GNU libgomp) whose idle threads spin for ~300,000
iterations before they sleep. On a quiet machine that saves a wake-up per parallel region; on a shared
one a spinning thread burns the time slice another process (or its own sibling, which the region waits
for) needed, and throughput collapses. Measured on a 2-core box at load ~20: a yolov3-tiny forward at
416 took 2.5 s with the default policy and 0.21 s with `OMP_WAIT_POLICY=PASSIVE` (BENCHMARKS.md).

libgomp reads the variable once, when the library is loaded by `import torch`, so this module must be
imported before torch: the scripts import it on their first line, after `from __future__`. A value the
user set is kept (`OMP_WAIT_POLICY=ACTIVE` for a dedicated machine). It imports nothing but `os`.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

WAIT_POLICY = "PASSIVE"


def prefer_passive_wait(environ: MutableMapping[str, str] = os.environ) -> str:
    """Set OMP_WAIT_POLICY=PASSIVE unless the user chose a policy; returns the policy in effect."""
    return environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)


prefer_passive_wait()
