"""Checkpointing, in one place: the `.pt` file format, atomic save, safe load, and `--resume`.

A checkpoint is a dict of tensors and plain Python types only (docs/architecture.md, "Checkpoint
.pt"), so it is read with `torch.load(..., weights_only=True)`: a file carrying a pickled object is
refused, never executed. Everything needed to continue a run bit for bit travels in that one dict:
model, EMA, optimizer, GradScaler, LR scheduler, epoch, best fitness, the RNG states of torch, CUDA,
numpy and Python, the results rows and the options. What `--resume` may change, finding the run to
resume and the resume command are the trainer's policy: `train_val_utils/training/resume.py`.
"""

from __future__ import annotations

import logging
import pickle
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from build_utils.atomic import atomic_write
from build_utils.errors import WeightsError
from build_utils.torch_utils import unwrap_model
from modules.model_files import describe_kind, sniff_model_file, wrong_kind_error

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "yolov3-suite/1"


def save_checkpoint(ckpt: Mapping[str, Any], path: str | Path) -> None:
    """Write atomically: temp file in the same folder, flush, fsync, `os.replace`.

    A crash mid-write leaves the previous checkpoint intact instead of a truncated file.
    """
    with atomic_write(path) as f:
        torch.save(dict(ckpt), f)


def _refused(path: Path, detail: str) -> WeightsError:
    return WeightsError(
        f"{path}: refused: it carries pickled Python objects, which could run code when loaded ({detail}). "
        "Only checkpoints of tensors and plain types are read; re-save it with state_dict()s and plain "
        "values (e.g. vars(args), not an argparse.Namespace)")


def _unpickling_error(path: Path, kind: str, err: pickle.UnpicklingError) -> WeightsError:
    """Tell a forbidden object (a GLOBAL the safe loader refuses) from bytes that are no pickle at all."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    forbidden = next((ln for ln in lines if "GLOBAL" in ln or "global" in ln.split(":")[0]), None)
    if forbidden is not None:
        return _refused(path, forbidden[:200])
    if kind == "pickle":  # a pickle stream torch's safe loader cannot parse: plain pickle.dump output
        return _refused(path, "a plain pickle stream, not a file written by torch.save")
    detail = next((ln for ln in lines if ln.startswith("Unsupported")), lines[-1] if lines else "")
    return WeightsError(f"{path}: not a valid PyTorch checkpoint: its data is corrupt ({detail[:120]}); "
                        "is the file truncated or damaged? Copy or download it again")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a `.pt` with `weights_only=True` onto the CPU.

    The file's first bytes say what it is: a zip archive (torch.save) or a pickle stream (torch's
    legacy format); anything else (text, empty, random bytes) is reported as not a checkpoint
    without being parsed. Pickled objects are refused, never run; any other failure of the reader on
    these bytes means a damaged file and is reported as such.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: checkpoint not found")
    kind = sniff_model_file(path)
    wrong = wrong_kind_error(path, kind, ".pt")
    if wrong is not None:  # a TorchScript or ONNX export named .pt
        raise wrong
    if kind not in ("checkpoint", "pickle", "zip-damaged"):
        raise WeightsError(f"{path}: not a PyTorch checkpoint: it is {describe_kind(kind)}; pass a .pt "
                           "written by train.py or export.py (or Darknet .weights with --cfg)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise _unpickling_error(path, kind, err) from None
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - any reader failure on these bytes is a damaged file
        first = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0]
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {first[:160]});"
                           f" the file ({path.stat().st_size:,} bytes) is truncated or damaged") from None
    if not isinstance(ckpt, dict):
        raise WeightsError(f"{path}: expected a checkpoint dict, found {type(ckpt).__name__}")
    return ckpt


def checkpoint_state_dict(ckpt: Mapping[str, Any], path: str | Path) -> dict[str, torch.Tensor]:
    """The weights to use from a checkpoint: the EMA when it holds one, else 'model'.

    Both must be a dict of name -> tensor; anything else (a string, a list) is a damaged or foreign file.
    """
    for key in ("ema", "model"):
        state = ckpt.get(key)
        if state is None:
            continue
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise WeightsError(f"{path}: its {key!r} entry is a {type(state).__name__}, not a state dict of "
                               "tensors; the file is damaged or not a checkpoint of this project")
        return dict(state)
    raise WeightsError(f"{path}: no 'model' or 'ema' state dict inside; is it a checkpoint of this project?")


def state_dict_shape_mismatches(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """'name: file (shape) vs model (shape)' for each tensor both have with different shapes."""
    own = model.state_dict()
    return [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state_dict.items()
            if k in own and own[k].shape != v.shape]


# Starting weights must fill at least this share of the model's floating tensors (weights, biases, BN
# statistics); integer BN counters (num_batches_tracked) match any cfg and are not counted.
MIN_MATCHED_FRACTION = 0.5


def _too_few_matched(model: nn.Module, matched: Mapping[str, torch.Tensor], state_dict: Mapping[str, Any],
                     source: str, origin: str | None) -> WeightsError | None:
    own = model.state_dict()
    own_float = sum(v.is_floating_point() for v in own.values())
    matched_float = sum(v.is_floating_point() for v in matched.values())
    if matched and matched_float >= MIN_MATCHED_FRACTION * own_float:
        return None
    cfg = getattr(model, "cfg_name", type(model).__name__)
    if not matched:
        what = f"none of its {len(state_dict)} tensors match the model built from {cfg}"
    else:
        counters = "all of them BN counters" if not matched_float else (
            f"{matched_float} of the model's {own_float} weight tensors; at least half must match")
        what = f"only {len(matched)}/{len(own)} tensors match {cfg} ({counters})"
    mismatch = state_dict_shape_mismatches(model, state_dict)
    example = f"; e.g. {mismatch[0]}" if mismatch else ""
    if origin and origin == cfg:
        fix = "it names this cfg but its shapes differ, so the file is damaged or was edited; pass other " \
              "--weights, or --weights '' to train from scratch"
    else:
        fix = (f"it was trained with {origin}" if origin else "it was made for another cfg") + \
            ": pass that --cfg, or --weights '' to train from scratch"
    return WeightsError(f"{source}: {what}{example}; {fix}")


def load_matching_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                             source: str, origin: str | None = None) -> tuple[int, list[str]]:
    """Copy every tensor whose name and shape match; the rest keep their fresh initialisation.

    This is what lets COCO weights start a model with another class count: the predictor convs
    are skipped and re-initialised. Logs one summary line. Loading next to nothing is an error:
    fewer than MIN_MATCHED_FRACTION of the model's floating tensors (`origin`: the cfg the
    weights were trained with, named in that error when known).
    """
    own = model.state_dict()
    matched = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(k for k in own if k not in matched)
    error = _too_few_matched(model, matched, state_dict, source, origin)
    if error is not None:
        raise error
    model.load_state_dict(matched, strict=False)
    shown = ", ".join(skipped[:8]) + (f", ... ({len(skipped) - 8} more)" if len(skipped) > 8 else "")
    logger.info("loaded %d/%d tensors from %s%s", len(matched), len(own), source,
                f"; re-initialised (name or shape differ): {shown}" if skipped else "")
    return len(matched), skipped


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
    """Restore what `rng_state` saved; CUDA states only when the same number of GPUs is visible."""
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
                     class_names: list[str], results: list[dict[str, Any]],
                     early_stopped: bool = False, category_ids: list[int] | None = None) -> dict[str, Any]:
    """The dict saved as last.pt / best.pt (see the table in docs/architecture.md).

    `finished` is False here; the trainer re-saves last.pt with `mark_finished` once the final
    evaluation and plots are done, so `--resume` can tell a run killed during finalisation.
    `img_size` and `strides` travel at the top level so inference defaults to the training size.
    """
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
        "early_stopped": bool(early_stopped),
        "finished": False,
        "img_size": options.get("img_size"),
        "strides": [int(m.stride) for m in net.yolo_modules()] if hasattr(net, "yolo_modules") else [],
        "category_ids": list(category_ids) if category_ids is not None else None,
    }


def deployable_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """best.pt as deployed: one set of weights (the EMA, else the model) in float16, no optimizer,
    scaler, scheduler, EMA copy or RNG state (yolov3-tiny: ~17 MB instead of ~71 MB), as the classic
    tools ship it. Readers cast to their own dtype on load; resume needs last.pt."""
    state = ckpt.get("ema") if ckpt.get("ema") is not None else ckpt["model"]
    half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    return {**ckpt, "model": half, "ema": None, "ema_updates": 0, "optimizer": None, "scaler": None,
            "scheduler": None, "rng": None}


def restore_training_state(ckpt: dict[str, Any], model: nn.Module, ema: Any, optimizer: Any, scaler: Any,
                           scheduler: Any) -> tuple[int, float]:
    """Load everything a resumed run needs; returns (first epoch to run, best fitness)."""
    try:
        unwrap_model(model).load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, AttributeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise WeightsError(f"--resume checkpoint: its model state does not fit the run's cfg "
                           f"({first[:160]}); the file is damaged") from None
    if ema is not None and ckpt.get("ema") is not None:
        ema.load_state_dict({"ema": ckpt["ema"], "updates": int(ckpt.get("ema_updates", 0))})
    for name, obj in (("optimizer", optimizer), ("scaler", scaler), ("scheduler", scheduler)):
        if obj is not None and ckpt.get(name) is not None:
            obj.load_state_dict(ckpt[name])
    set_rng_state(ckpt["rng"])
    return int(ckpt["epoch"]) + 1, float(ckpt["best_fitness"])
