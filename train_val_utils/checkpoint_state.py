"""The training checkpoint (docs/architecture.md, "Checkpoint .pt") and the rules of `--resume`.

Everything needed to continue a run bit for bit travels in one dict of tensors and plain types:
model, EMA, optimizer, GradScaler, LR scheduler, epoch, best fitness, the RNG states of torch,
CUDA, numpy and Python, the results rows and the options. `weights_only=True` loading reads it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from build_utils.errors import UserError
from build_utils.torch_utils import unwrap_model
from modules.checkpoint import CHECKPOINT_FORMAT

logger = logging.getLogger(__name__)

# Options a resumed run may change; everything else comes from the checkpoint.
RESUME_CHANGEABLE = ("device", "workers", "batch_size", "epochs", "resume", "verbose")


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors and plain lists (no numpy objects: weights_only must read them)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": [py_version, list(py_state), py_gauss],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached"]))
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))


def build_checkpoint(model: nn.Module, ema: Any, optimizer: Any, scaler: Any, scheduler: Any, epoch: int,
                     best_fitness: float, hyp: dict[str, Any], options: dict[str, Any],
                     class_names: list[str], results: list[dict[str, Any]]) -> dict[str, Any]:
    """The dict saved as last.pt / best.pt (see the table in docs/architecture.md)."""
    net = unwrap_model(model)
    return {
        "format": CHECKPOINT_FORMAT,
        "cfg_text": net.cfg_text,
        "cfg_name": net.cfg_name,
        "class_names": list(class_names),
        "model": net.state_dict(),
        **(ema.checkpoint_items() if ema is not None else {"ema": None, "ema_updates": 0}),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": int(epoch),
        "best_fitness": float(best_fitness),
        "hyp": dict(hyp),
        "options": dict(options),
        "rng": rng_state(),
        "results": [dict(r) for r in results],
    }


def strip_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """best.pt for deployment: no optimizer/scaler/scheduler state (about 2/3 smaller)."""
    return {**ckpt, "optimizer": None, "scaler": None, "scheduler": None}


def restore_training_state(ckpt: dict[str, Any], model: nn.Module, ema: Any, optimizer: Any, scaler: Any,
                           scheduler: Any) -> tuple[int, float]:
    """Load everything a resumed run needs; returns (first epoch to run, best fitness)."""
    unwrap_model(model).load_state_dict(ckpt["model"])
    if ema is not None and ckpt.get("ema") is not None:
        ema.load_state_dict({"ema": ckpt["ema"], "updates": int(ckpt.get("ema_updates", 0))})
    for name, obj in (("optimizer", optimizer), ("scaler", scaler), ("scheduler", scheduler)):
        if obj is not None and ckpt.get(name) is not None:
            obj.load_state_dict(ckpt[name])
    set_rng_state(ckpt["rng"])
    return int(ckpt["epoch"]) + 1, float(ckpt["best_fitness"])


def find_last_checkpoint(project: str | Path) -> Path:
    """The most recently written last.pt under `project` (runs/train)."""
    found = sorted(Path(project).glob("*/weights/last.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(f"--resume: no */weights/last.pt under {project}; pass the checkpoint path, "
                        "e.g. --resume runs/train/exp/weights/last.pt")
    return found[-1]


def _is_default(key: str, value: Any, defaults: dict[str, Any]) -> bool:
    return key in defaults and value == defaults[key]


def resume_options(ckpt: dict[str, Any], path: Path, given: dict[str, Any], defaults: dict[str, Any],
                   ignore: Iterable[str] = ()) -> dict[str, Any]:
    """The original run's options with the whitelisted changes from this command line.

    Refuses a finished run, a different cfg or data, fewer epochs, and any other changed option
    (it would silently not apply, or break the bit-exact continuation).
    """
    saved = dict(ckpt.get("options") or {})
    if not saved:
        raise UserError(f"{path}: not a training checkpoint (no options); use it with --weights to fine-tune")
    changed = [k for k, v in given.items() if k not in RESUME_CHANGEABLE and k not in ignore
               and not _is_default(k, v, defaults) and k in saved and saved[k] != v]
    if changed:
        detail = ", ".join(f"--{k.replace('_', '-')} {given[k]!r} (run has {saved[k]!r})" for k in changed)
        what = "a different cfg or data" if {"cfg", "data"} & set(changed) else "changed options"
        raise UserError(f"{path}: --resume with {what}: {detail}; only "
                        f"{', '.join('--' + k.replace('_', '-') for k in RESUME_CHANGEABLE[:4])} may change "
                        "(epochs upward). Start a new run with --weights to train on something else")
    merged = dict(saved)
    for key in ("device", "workers", "batch_size", "epochs"):
        if key in given and not _is_default(key, given[key], defaults):
            merged[key] = given[key]
    if merged["epochs"] < saved["epochs"]:
        raise UserError(f"{path}: --epochs {merged['epochs']} is below the run's {saved['epochs']}; "
                        "epochs may only grow on resume")
    if int(ckpt["epoch"]) + 1 >= merged["epochs"]:
        raise UserError(f"{path}: this run already finished all {merged['epochs']} epochs; pass a larger "
                        "--epochs to continue it, or fine-tune from it with --weights")
    return merged
