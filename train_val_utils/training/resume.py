"""The resume policy of `train.py`: what a resumed run may change, finding the run to resume, when a
run counts as finished, and the command that continues it.

The checkpoint file itself (format, atomic save, safe load, restoring the state) is `modules/checkpoint.py`;
this module decides what a `--resume` means for the run's options.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from build_utils.errors import UserError
from build_utils.parse_config import read_cfg_text
from build_utils.project_files import locate
from modules.checkpoint import deployable_checkpoint, load_checkpoint, save_checkpoint
from train_val_utils.training.distributed_utils import DEFAULT_DIST_TIMEOUT_S

logger = logging.getLogger(__name__)

# What runs trained before an option existed did, so resuming one continues it bit for bit
# (channels_last is on by default now, but older checkpoints were trained in contiguous memory).
BEFORE_THE_OPTION_EXISTED = {"channels_last": False, "compile": False, "image_weights": False,
                             "save_period_steps": 0, "save_period_min": 0.0,
                             "dist_timeout": DEFAULT_DIST_TIMEOUT_S, "sr": 0.0, "sr_keep": 0.0,
                             "close_mosaic": 0, "teacher": "", "teacher_cfg": None, "distill": 0.25}


def mark_finished(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The same checkpoint, flagged as a run whose finalisation (final evaluation, plots) completed."""
    return {**ckpt, "finished": True}


def only_finalisation_left(ckpt: Mapping[str, Any], epochs: int) -> bool:
    """True when resuming `ckpt` for `epochs` epochs trains nothing and only finishes the run (final
    evaluation, plots): its last save came after the last epoch, before finalisation completed."""
    return epochs_done(ckpt, epochs)


def epochs_done(ckpt: Mapping[str, Any], epochs: int) -> bool:
    """True when a run of `epochs` epochs resumed from `ckpt` has no epoch left to train: all were
    trained, or --patience stopped it early and `epochs` is not above the run's own count."""
    stopped = bool(ckpt.get("early_stopped")) and epochs <= int((ckpt.get("options") or {}).get("epochs", 0))
    return int(ckpt["epoch"]) + 1 >= epochs or stopped


# Options a resumed run may change; everything else comes from the checkpoint.
RESUME_CHANGEABLE = ("device", "workers", "batch_size", "epochs", "resume", "verbose", "save_period_steps",
                     "save_period_min", "dist_timeout", "teacher", "teacher_cfg")  # a moved teacher file


def is_unfinished(path: Path) -> bool:
    """True when the run of the last.pt at `path` can be resumed: epochs left, or its finalisation
    (final evaluation, plots) never completed. Read memory-mapped: no full load."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError):
        return False
    if not isinstance(ckpt, dict) or (ckpt.get("options") or {}).get("epochs") is None:
        return False
    if "finished" in ckpt:  # written by this version: False until finalize() completed
        return not ckpt["finished"]
    return not epochs_done(ckpt, int(ckpt["options"]["epochs"]))  # older files: epochs left


def find_last_checkpoint(project: str | Path) -> Path:
    """The newest last.pt under `project` (runs/train) whose run is unfinished; logs which one."""
    found = sorted(Path(project).glob("*/weights/last.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not found:
        raise UserError(f"--resume: no */weights/last.pt under {project}; pass the checkpoint path, "
                        "e.g. --resume runs/train/exp/weights/last.pt")
    for path in found:
        if is_unfinished(path):
            logger.info("--resume: newest unfinished run under %s is %s", project, path)
            return path
    raise UserError(f"--resume: every run under {project} has finished its epochs (newest: {found[0]}); "
                    f"continue one with --resume {found[0]} --epochs N (more epochs), or fine-tune from it "
                    "with --weights")


def resume_command(last: Path) -> str:
    """What the `interrupted` line prints: the exact command that continues this run."""
    if last.is_file():
        return f"resume with: python train.py --resume {last}"
    return (f"no epoch finished yet ({last} not written), so there is nothing to resume; run the same "
            "train.py command again")


def _is_default(key: str, value: Any, defaults: dict[str, Any]) -> bool:
    return key in defaults and value == defaults[key]


def resume_options(ckpt: dict[str, Any], path: Path, given: dict[str, Any], defaults: dict[str, Any],
                   ignore: Iterable[str] = ()) -> dict[str, Any]:
    """The original run's options with the whitelisted changes from this command line.

    A run whose epochs are all done but whose finalisation was interrupted (killed after its last
    save) is accepted: the trainer then only finalises. Refuses a finished run, a different cfg or
    data, fewer epochs, and any other changed option
    (it would silently not apply, or break the bit-exact continuation).
    """
    saved = dict(ckpt.get("options") or {})
    if not saved:
        raise UserError(f"{path}: not a training checkpoint (no options); use it with --weights to fine-tune")
    if "optimizer" in ckpt and ckpt["optimizer"] is None:  # best.pt (stripped or deployable)
        last = path.parent / "last.pt"
        where = f"resume from {last}, or " if last.is_file() and last != path else ""
        raise UserError(f"{path}: holds deployable weights only (no optimizer state); {where}fine-tune "
                        "from it with --weights")
    changed = [k for k, v in given.items() if k not in RESUME_CHANGEABLE and k not in ignore
               and not _is_default(k, v, defaults) and k in saved and saved[k] != v]
    if changed:
        detail = ", ".join(f"--{k.replace('_', '-')} {given[k]!r} (run has {saved[k]!r})" for k in changed)
        what = "a different cfg or data" if {"cfg", "data"} & set(changed) else "changed options"
        raise UserError(f"{path}: --resume with {what}: {detail}; only "
                        f"{', '.join('--' + k.replace('_', '-') for k in RESUME_CHANGEABLE[:4])} may change "
                        "(epochs upward). Start a new run with --weights to train on something else")
    merged = dict(saved)
    for key in (k for k in RESUME_CHANGEABLE if k != "resume"):
        if key in given and not _is_default(key, given[key], defaults):
            merged[key] = given[key]
    if merged["epochs"] < saved["epochs"]:
        raise UserError(f"{path}: --epochs {merged['epochs']} is below the run's {saved['epochs']}; "
                        "epochs may only grow on resume")
    # checkpoints written before the `finished` flag existed count as finished, as they did then
    if epochs_done(ckpt, merged["epochs"]) and ckpt.get("finished", True):
        how = ("stopped early (--patience)" if int(ckpt["epoch"]) + 1 < merged["epochs"]
               else f"trained all {merged['epochs']} epochs")
        raise UserError(f"{path}: this run already finished: it {how} and completed its final evaluation; "
                        "pass a larger --epochs to continue it, or fine-tune from it with --weights")
    return merged


def reconcile_best(ckpt: Mapping[str, Any], best_path: Path) -> tuple[float, int | None]:
    """(best fitness, best epoch) a resumed run continues from, with best.pt made to match last.pt.

    The trainer commits best.pt before the last.pt that records it, so a kill between the two leaves
    best.pt one epoch ahead: it holds a genuinely evaluated epoch with a better fitness, which is kept
    (and its fitness adopted) rather than lost. When best.pt is missing or stale while last.pt itself is
    the best epoch (a file deleted, or written by an older version that saved last.pt first), best.pt
    is rebuilt from last.pt. Returns the checkpoint's own values otherwise.
    """
    fitness, epoch = float(ckpt["best_fitness"]), ckpt.get("best_epoch")
    if not (ckpt.get("options") or {}).get("savebest", True) or fitness < 0:
        return fitness, epoch
    best: dict[str, Any] | None = None
    if best_path.is_file():
        try:
            best = load_checkpoint(best_path)
        except UserError as err:
            logger.warning("%s: unreadable (%s); rebuilt if last.pt holds the best epoch", best_path, err)
    if best is not None and int(best.get("epoch", -1)) > int(ckpt["epoch"]) \
            and float(best.get("best_fitness", -1.0)) > fitness:
        logger.info("%s: holds epoch %d (fitness %.4f), saved just before the run was stopped; kept as the "
                    "best so far", best_path, best["epoch"], best["best_fitness"])
        return float(best["best_fitness"]), int(best["epoch"])
    if (best is None or int(best.get("epoch", -1)) != epoch) and epoch == int(ckpt["epoch"]):
        save_checkpoint(deployable_checkpoint(dict(ckpt)), best_path)
        logger.warning("%s: %s; rebuilt from last.pt (epoch %d, fitness %.4f)", best_path,
                       "missing" if best is None else f"holds epoch {best.get('epoch')}", epoch, fitness)
    elif best is None:
        known = f"epoch {epoch}" if epoch is not None else "not recorded by this older checkpoint"
        logger.warning("%s: missing, and last.pt does not hold the best epoch (%s); the best so far is "
                       "forgotten and the next evaluated epoch becomes best.pt", best_path, known)
        return -1.0, None
    return fitness, epoch


def check_cfg_unchanged(ckpt: Mapping[str, Any], ckpt_path: Path, cfg: str) -> str | None:
    """The cfg text the resumed run is built from: the one stored in last.pt, which stays the run's truth.

    The file at `cfg` must still hold that text (an edited cfg would silently train another model from
    this epoch on); a difference is refused naming the first differing line. A cfg file that is gone is
    no obstacle: the stored text is used. Returns None for checkpoints without stored text.
    """
    stored = ckpt.get("cfg_text")
    if not isinstance(stored, str):
        return None
    path = locate(cfg)
    if not path.is_file():
        logger.info("%s: not found; resuming with the cfg text stored in %s", cfg, ckpt_path)
        return stored
    current = read_cfg_text(path)
    if current != stored:
        old, new = stored.splitlines(), current.splitlines()
        n = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
        now = repr(new[n]) if n < len(new) else "the end of the file"
        was = repr(old[n]) if n < len(old) else "the end of the file"
        raise UserError(f"{path}:{n + 1}: the cfg changed since {ckpt_path} was saved (line {n + 1} is now "
                        f"{now}, the run was trained with {was}); restore the file to resume, or start a new "
                        f"run from these weights with --weights {ckpt_path}")
    return stored
