"""Starting weights and layer freezing for a training run.

Starting weights may come from our `.pt` (any class count: matching tensors load, the predictor
convs re-initialise), from full Darknet `.weights` (also of another class count: the file's count
is worked out from its size), or from a backbone file such as `darknet53.conv.74`, recognised by
its size: the cutoff is the number of leading layers whose floats the file holds exactly.
"""

from __future__ import annotations

import logging
from pathlib import Path

from build_utils.cfg_edit import rewrite_cfg_classes
from build_utils.errors import UserError, WeightsError
from modules.checkpoint import checkpoint_state_dict, load_checkpoint, load_matching_state_dict
from modules.model import DarkNet
from modules.weights import (
    darknet_file_floats,
    darknet_float_count,
    fitting_class_count,
    load_darknet_weights,
)

logger = logging.getLogger(__name__)

FREEZE_CHOICES = ("none", "backbone", "heads-only")


def load_darknet_start(model: DarkNet, path: Path) -> None:
    """Full weights, weights of another class count, or a backbone cutoff file, told apart by size."""
    have = darknet_file_floats(path)
    if have == darknet_float_count(model):
        load_darknet_weights(model, path)
        return
    other_nc = fitting_class_count(model, have)
    if other_nc is not None:
        donor = DarkNet.from_cfg_text(rewrite_cfg_classes(model.cfg_text, other_nc), source=str(path))
        load_darknet_weights(donor, path)
        n, _ = load_matching_state_dict(model, donor.state_dict(), f"{path} ({other_nc} classes)")
        logger.info("fine-tuning from %d-class Darknet weights: %d tensors loaded, predictor convs "
                    "re-initialised for %d classes", other_nc, n, model.nc)
        return
    for cutoff in range(1, len(model.module_defs)):
        if darknet_float_count(model, cutoff) == have:
            load_darknet_weights(model, path, cutoff=cutoff)
            logger.info("%s: backbone file, loaded layers 0-%d; the rest start from scratch", path.name,
                        cutoff - 1)
            return
    load_darknet_weights(model, path)  # raises WeightsError with both counts and the likely cause


def load_start_weights(model: DarkNet, weights: str) -> None:
    """Initialise `model` from `weights` ('' = from scratch, .pt, or Darknet .weights)."""
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
        load_matching_state_dict(model, checkpoint_state_dict(ckpt, path), str(path), origin)
        return
    load_darknet_start(model, path)


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
