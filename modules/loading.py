"""`load_model`: the one way inference scripts turn `--weights` (and `--cfg`) into a ready model."""

from __future__ import annotations

import logging
from copy import deepcopy
from pathlib import Path

import torch

from build_utils.errors import WeightsError
from modules.checkpoint import (
    checkpoint_state_dict,
    load_checkpoint,
    load_matching_state_dict,
    state_dict_shape_mismatches,
)
from modules.model import DarkNet
from modules.weights import load_darknet_weights

logger = logging.getLogger(__name__)


def _from_checkpoint(path: Path, cfg: str | Path | None) -> tuple[DarkNet, list[str] | None]:
    """A `.pt` rebuilds its own cfg; an explicit `cfg` overrides it and loads what matches."""
    ckpt = load_checkpoint(path)
    state = checkpoint_state_dict(ckpt, path)
    origin = ckpt.get("cfg_name") if isinstance(ckpt.get("cfg_name"), str) else None
    if cfg is not None:
        model = DarkNet(cfg)
        load_matching_state_dict(model, state, str(path), origin)
    elif isinstance(ckpt.get("cfg_text"), str) and ckpt["cfg_text"]:
        model = DarkNet.from_cfg_text(ckpt["cfg_text"], origin or str(path))
        wrong = state_dict_shape_mismatches(model, state)
        if wrong:
            raise WeightsError(f"{path}: {len(wrong)} of its {len(state)} tensors do not fit the cfg it "
                               f"carries (e.g. {wrong[0]}); the file is damaged or was edited")
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise WeightsError(f"{path}: its state dict does not fit its own cfg (missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]}); the file is damaged")
    else:
        raise WeightsError(
            f"{path}: the checkpoint carries no cfg_text; pass --cfg with the cfg it was trained with"
        )
    model.train_img_size = ckpt.get("img_size") or (ckpt.get("options") or {}).get("img_size")
    model.category_ids = ckpt.get("category_ids")
    return model, ckpt.get("class_names")


def load_model(weights: str | Path, cfg: str | Path | None = None, device: str | torch.device = "cpu",
               fuse: bool = False) -> tuple[DarkNet, list[str] | None]:
    """Build and load a model for inference; returns it in eval mode on `device`, with class names.

    `.pt`: cfg and class names come from the checkpoint (EMA weights when present).
    Darknet `.weights`: `cfg` is required; class names are None (the caller takes them from a .data/.names).
    The model carries `train_img_size` and `category_ids` (None when the file does not record them).
    """
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.suffix == ".pt":
        model, names = _from_checkpoint(path, cfg)
    elif path.suffix == ".weights" or path.suffix == "" or path.name.startswith("darknet53"):
        if cfg is None:
            raise WeightsError(f"{path}: Darknet weights carry no cfg; pass --cfg (e.g. cfg/yolov3-spp.cfg)")
        model, names = DarkNet(cfg), None
        load_darknet_weights(model, path)
        model.train_img_size, model.category_ids = None, None  # Darknet files record neither
    else:
        raise WeightsError(
            f"{path}: unknown weights format {path.suffix!r}; expected a .pt checkpoint or Darknet .weights"
        )
    if fuse:
        model.fuse()
    return model.to(device).eval(), names


def as_deployed(model: DarkNet) -> DarkNet:
    """A copy of `model` as validation.py runs best.pt: weights rounded through float16
    (`deployable_checkpoint` saves best.pt so), batch norm folded on the CPU, channels_last, in eval mode,
    on `model`'s device. Training scores this copy, so its log shows the mAP that best.pt gives later."""
    device = next(model.parameters()).device
    copy = deepcopy(model).cpu().float().to(memory_format=torch.contiguous_format)  # no RNG use (init would)
    with torch.no_grad():
        for tensor in copy.state_dict().values():  # views of the parameters and buffers
            if tensor.is_floating_point():
                tensor.copy_(tensor.half())  # float16 values in float32 tensors, as load_model reads best.pt
    return copy.fuse().to(device, memory_format=torch.channels_last).eval()


DEFAULT_IMG_SIZE = 416


def default_img_size(requested: int | None, trained: int | None) -> int:
    """`--img-size` when given, else the size the model was trained at (`trained`), else 416 (logged)."""
    if requested is not None:
        return requested
    size = int(trained) if trained else DEFAULT_IMG_SIZE
    logger.info("--img-size %d (%s)", size, "the model's training size" if trained else "default")
    return size
