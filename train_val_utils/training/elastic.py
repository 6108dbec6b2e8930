"""Elastic restarts: a worker group that `torchrun --max-restarts N` restarts resumes by itself.

torchrun restarts every worker with the same command line and TORCHELASTIC_RESTART_COUNT = k; the
first launch marks its run folder with TORCHELASTIC_RUN_ID (the `--rdzv-id`, a fresh uuid under
`--standalone`), so a restart finds that folder, resumes its newest `weights/last.pt` (epoch-end or
mid-epoch) without `--resume`, checks that every rank read the same epoch and step, and logs
"restart k: resumed from <file> at epoch e, step s". The run folder must be on a filesystem every
node sees (it already must be for `--resume` under several nodes).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from build_utils.errors import UserError
from train_val_utils.training.distributed_utils import DistInfo, broadcast_object, gather_objects
from train_val_utils.training.resume import is_unfinished

logger = logging.getLogger(__name__)
MARKER = "elastic_run_id.txt"  # in the run folder: the TORCHELASTIC_RUN_ID of the launch that made it


def restart_count(environ: Mapping[str, str] | None = None) -> int:
    """0 on a first launch (and outside torchrun), k on torchrun's k-th restart of the worker group."""
    return int((os.environ if environ is None else environ).get("TORCHELASTIC_RESTART_COUNT", 0))


def mark_run_folder(save_dir: Path, environ: Mapping[str, str] | None = None) -> None:
    """Record the torchrun run id in a new run folder (nothing outside torchrun)."""
    run_id = (os.environ if environ is None else environ).get("TORCHELASTIC_RUN_ID")
    if run_id:
        (Path(save_dir) / MARKER).write_text(run_id + "\n")


def find_restart_checkpoint(project: str | Path, run_id: str) -> Path | None:
    """The newest unfinished `weights/last.pt` of a run folder under `project` marked with `run_id`."""
    found = [d / "weights" / "last.pt" for d in Path(project).glob("*/")
             if (d / MARKER).is_file() and (d / MARKER).read_text().strip() == run_id]
    found = sorted((p for p in found if p.is_file() and is_unfinished(p)), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def elastic_resume_path(options: Mapping[str, Any], info: DistInfo) -> str | None:
    """On a torchrun restart of a run that did not pass --resume: rank 0's choice of the checkpoint to
    resume, shared with every rank (None on a first launch, or when no checkpoint was written yet)."""
    k = restart_count()
    if k == 0 or options.get("resume") is not None or options.get("evolve"):
        return None
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    path = info.on_main(find_restart_checkpoint, options["project"], run_id)
    path = broadcast_object(str(path) if path else None, info)
    if path is None:
        logger.warning("restart %d: no checkpoint of run id %s under %s yet; starting the run again", k,
                       run_id, options["project"])
    return path


def position_of(ckpt: Mapping[str, Any]) -> tuple[int, int]:
    """(epoch, step) a checkpoint resumes at: step = batches of that epoch already trained."""
    mid = ckpt.get("mid_epoch")
    return (int(mid["epoch"]), int(mid["batch"])) if mid else (int(ckpt["epoch"]) + 1, 0)


def agree_on_restart(ckpt: Mapping[str, Any], path: Path, info: DistInfo) -> tuple[int, int]:
    """Every rank read the same (epoch, step) from `path`, else a `UserError` naming the ranks; logs
    the restart line on rank 0 and returns the position."""
    where = position_of(ckpt)
    seen = gather_objects(where, info)
    if any(s != where for s in seen):
        detail = ", ".join(f"rank {r}: epoch {e} step {s}" for r, (e, s) in enumerate(seen))
        raise UserError(f"restart {restart_count()}: the ranks read different checkpoints from {path} "
                        f"({detail}); put the run folder on a filesystem every node shares")
    if info.is_main:
        logger.info("restart %d: resumed from %s at epoch %d, step %d", restart_count(), path, *where)
    return where
