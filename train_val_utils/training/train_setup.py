"""Starting weights, layer freezing, seeding and the class-count check of a training run.

Starting weights may come from our `.pt` (any class count: matching tensors load), from full Darknet
`.weights` (also of another class count: the file's count is worked out from its size), or from a
backbone file such as `darknet53.conv.74`, recognised by its size: the cutoff is the number of leading
layers whose floats the file holds exactly. When the weights' class names are known, the predictor
rows of the classes they share with the new model load in its class order (`ClassTransfer`); the
other classes start from the bias prior.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from build_utils.cfg_edit import rewrite_cfg_classes
from build_utils.data_cfg import load_class_names
from build_utils.errors import ConfigError, UserError, WeightsError
from modules.checkpoint import checkpoint_state_dict, load_checkpoint, load_matching_state_dict
from modules.class_transfer import darknet_source_names, transfer_classes
from modules.model import DarkNet
from modules.weights import (
    darknet_file_floats,
    darknet_float_count,
    fitting_class_count,
    load_darknet_weights,
)

logger = logging.getLogger(__name__)

FREEZE_CHOICES = ("none", "backbone", "heads-only")


@dataclass(frozen=True)
class ClassTransfer:
    """How starting weights of other classes are matched by name (`--transfer`, the default).

    `class_names`: the new model's classes; `source_names`: `--source-names` (a .names file giving the
    starting weights' classes; by default a .pt's own names, or data/coco.names for 80-class Darknet
    weights).
    """

    class_names: Sequence[str]
    source_names: str | None = None


def _source_names(ckpt: dict[str, Any], transfer: ClassTransfer) -> list[str] | None:
    if transfer.source_names is not None:
        return load_class_names(transfer.source_names)
    names = ckpt.get("class_names")
    return list(names) if isinstance(names, list) and all(isinstance(n, str) for n in names) else None


def load_darknet_start(model: DarkNet, path: Path, transfer: ClassTransfer | None = None) -> None:
    """Full weights, weights of another class count, or a backbone cutoff file, told apart by size."""
    have = darknet_file_floats(path)
    same = have == darknet_float_count(model)
    source_nc = model.nc if same else fitting_class_count(model, have)
    if source_nc is not None:
        names = darknet_source_names(source_nc, transfer.source_names) if transfer is not None else None
        if same and (names is None or list(names) == list(transfer.class_names)):
            load_darknet_weights(model, path)
            return
        donor = DarkNet.from_cfg_text(rewrite_cfg_classes(model.cfg_text, source_nc), source=str(path))
        load_darknet_weights(donor, path)
        label = f"{path} ({source_nc} classes)"
        state = donor.state_dict()
        if names is not None:
            state = transfer_classes(model, state, names, transfer.class_names, label)
        n, _ = load_matching_state_dict(model, state, label)
        if names is None:
            logger.info("fine-tuning from %d-class Darknet weights: %d tensors loaded, predictor convs "
                        "re-initialised for %d classes (class names of the weights unknown: pass "
                        "--source-names to transfer the matching ones)", source_nc, n, model.nc)
        return
    for cutoff in range(1, len(model.module_defs)):
        if darknet_float_count(model, cutoff) == have:
            load_darknet_weights(model, path, cutoff=cutoff)
            logger.info("%s: backbone file, loaded layers 0-%d; the rest start from scratch", path.name,
                        cutoff - 1)
            return
    load_darknet_weights(model, path)  # raises WeightsError with both counts and the likely cause


def load_start_weights(model: DarkNet, weights: str, transfer: ClassTransfer | None = None) -> None:
    """Initialise `model` from `weights` ('' = from scratch, .pt, or Darknet .weights).

    With `transfer` (None = `--no-transfer`) the predictor rows of classes the weights know by name
    are loaded in the new class order (`modules.class_transfer`); otherwise predictor convs of another
    class count re-initialise and those of the same count load as they are.
    """
    if not weights:
        logger.info("weights: none, training %s from scratch", model.cfg_name)
        return
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"--weights {path}: file not found; pass '' to train from scratch")
    if path.suffix in (".onnx", ".torchscript"):
        raise WeightsError(f"--weights {path}: an exported graph cannot be training's starting weights; "
                           "pass the .pt (or Darknet .weights) it was exported from")
    if path.suffix == ".pt":
        ckpt = load_checkpoint(path)
        origin = ckpt.get("cfg_name") if isinstance(ckpt.get("cfg_name"), str) else None
        state = checkpoint_state_dict(ckpt, path)
        names = _source_names(ckpt, transfer) if transfer is not None else None
        if names is not None and list(names) != list(transfer.class_names):
            state = transfer_classes(model, state, names, transfer.class_names, str(path))
        load_matching_state_dict(model, state, str(path), origin)
        return
    load_darknet_start(model, path, transfer)


def backbone_end(model: DarkNet) -> int:
    """Index after the backbone: after the last [shortcut] (layer 74 for Darknet-53), else after the
    last [maxpool] (cfgs without residuals, such as yolov3-tiny)."""
    kinds = [m["type"] for m in model.module_defs]
    for kind in ("shortcut", "maxpool"):
        found = [i for i, k in enumerate(kinds) if k == kind]
        if found:
            return found[-1] + 1
    return 0


def freeze_layers(model: DarkNet, mode: str) -> int:
    """Set requires_grad=False per `--freeze`; returns the number of frozen parameters (logged)."""
    if mode not in FREEZE_CHOICES:
        raise UserError(f"--freeze {mode!r}: expected one of {', '.join(FREEZE_CHOICES)}")
    n_layers = len(model.module_list)
    if mode == "none":
        frozen: set[int] = set()
    elif mode == "backbone":
        frozen = set(range(backbone_end(model)))
    else:
        trainable = {i - 1 for i in model.yolo_layers}
        frozen = set(range(n_layers)) - trainable
    count = 0
    for i, module in enumerate(model.module_list):
        for p in module.parameters():
            p.requires_grad_(i not in frozen)
            count += p.numel() if i in frozen else 0
    what = {"none": "nothing frozen, all layers train",
            "backbone": f"backbone layers 0-{backbone_end(model) - 1} frozen",
            "heads-only": f"all but the {len(model.yolo_layers)} predictor convs frozen"}[mode]
    logger.info("freeze %s: %s (%s parameters frozen)", mode, what, f"{count:,}")
    return count


def first_closed_epoch(epochs: int, close_mosaic: int) -> int:
    """The first epoch that draws no mosaic under `--close-mosaic` (`epochs` when every epoch may)."""
    return max(epochs - close_mosaic, 0)


def mosaic_plan(epochs: int, close_mosaic: int, probability: float, rect: bool) -> str | None:
    """The log line that says which epochs draw mosaics (`--close-mosaic`), or None without mosaics.

    Mosaics teach small, cut and crowded objects but are not what evaluation sees; the last epochs on
    whole letterboxed images let the weights and batch-norm statistics settle on that. A short
    fine-tune from weights that already detect loses accuracy to mosaics (5 epochs of yolov3-tiny on
    three coco128 classes: 0.85x the source mAP with them, 0.99x without).
    """
    if rect or probability <= 0:
        return None
    first_closed = first_closed_epoch(epochs, close_mosaic)
    if first_closed >= epochs:
        return f"mosaic (p={probability:g}) in every epoch (--close-mosaic 0)"
    if first_closed == 0:
        return f"no mosaic: all {epochs} epochs on whole images (--close-mosaic {close_mosaic} >= --epochs)"
    return (f"mosaic (p={probability:g}) in epochs 0-{first_closed - 1}, whole images in the last "
            f"{epochs - first_closed} (--close-mosaic {close_mosaic})")


def class_mismatch_error(model: DarkNet, cfg: str, data: str, nc: int, single_cls: bool) -> ConfigError:
    """cfg:line of the first [yolo] classes= and a make_cfg command that writes the matching cfg."""
    yolo = next(m for m in model.module_defs if m["type"] == "yolo")
    line = yolo.get("_key_lines", {}).get("classes", yolo.get("_line", 0))
    out = Path(cfg).with_name(f"{Path(cfg).stem}-{nc}cls.cfg")
    flag = " (--single-cls)" if single_cls else ""
    return ConfigError(f"{cfg}:{line}: the cfg has classes={model.nc} but {data} has {nc}{flag}; generate a "
                       "matching cfg and train with it: "
                       f"python data/scripts/make_cfg.py --base {cfg} --classes {nc} --out {out}")


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and torch; `--deterministic` also asks torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
