"""Disk use of an `--evolve` study: every trial keeps its metrics, only the best trial keeps its weights.

Each trial is a full training run with `weights/last.pt` (optimizer and EMA included) and `weights/best.pt`;
kept for every trial they fill a disk (4 yolov3-tiny trials: ~0.5 GB, a yolov3-spp trial: ~1 GB). After each
trial, the `weights/` folders of finished trials (complete, pruned or failed) are deleted, except the best
complete trial's; a trial still running (another worker of a shared study) is never touched. Results,
plots and each trial's hyp.yaml stay, so evolve.csv and the per-trial curves remain. `--evolve-keep-weights`
keeps everything.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FINISHED = ("COMPLETE", "PRUNED", "FAIL")


def best_complete_trial(study: Any) -> Any:
    """The complete trial with the highest value, or None."""
    complete = [t for t in study.get_trials(deepcopy=False)
                if t.state.name == "COMPLETE" and t.value is not None]
    return max(complete, key=lambda t: t.value) if complete else None


def prune_trial_weights(study: Any, evolve_dir: Path) -> list[Path]:
    """Delete `trialN/weights` of every finished trial but the best complete one; returns what was deleted."""
    best = best_complete_trial(study)
    removed = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state.name not in FINISHED or (best is not None and trial.number == best.number):
            continue
        weights = Path(trial.user_attrs.get("run_dir", evolve_dir / f"trial{trial.number}")) / "weights"
        if weights.is_dir():
            shutil.rmtree(weights, ignore_errors=True)
            removed.append(weights)
    if removed:
        kept = f"trial {best.number}'s" if best is not None else "no trial's"
        logger.info("evolve: removed the weights of %s (keeping %s; --evolve-keep-weights keeps all)",
                    ", ".join(p.parent.name for p in removed), kept)
    return removed
