"""`train_one_epoch`: one pass over the training data with AMP, multi-scale, accumulation and EMA.

One image's way through here: uint8 batch -> float [0, 1] -> (multi-scale) interpolate -> autocast
forward -> loss_fn (a `YoloLoss`) -> scaled backward -> every `accumulate` batches one optimizer step, then
the EMA update. The LR follows a linear warm-up over the first iterations (bias LR falling from
`warmup_bias_lr`, momentum rising from `warmup_momentum`), after which the epoch's cosine LambdaLR
value (stepped by train.py) applies. A non-finite loss stops the run before anything is saved.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from build_utils.errors import UserError
from train_val_utils.distributed_utils import DistInfo, reduce_mean
from train_val_utils.hyp import OptimizerHyp
from train_val_utils.loss import YoloLoss
from train_val_utils.optim import apply_warmup

logger = logging.getLogger(__name__)

LOSS_KEYS = ("box_loss", "obj_loss", "class_loss")


class NonFiniteLossError(UserError):
    """The loss became NaN/inf; the message names the batch's images (bad labels or too high LR)."""


@dataclass(frozen=True)
class EpochConfig:
    """What stays fixed during one epoch; `warmup_iters` counts batches from the run's start."""

    epoch: int
    epochs: int
    accumulate: int
    nbs: int
    warmup_iters: int
    img_size: int
    multi_scale: bool = False
    grid: int = 32
    amp: bool = False
    amp_dtype: torch.dtype = torch.float16
    seed: int = 0
    names: tuple[str, ...] = ()
    plot_dir: Path | None = None  # train_batch0..2.jpg are drawn here when set


def multi_scale_sizes(img_size: int, grid: int = 32) -> list[int]:
    """Sizes a multi-scale step may pick: multiples of `grid` within [0.67, 1.5] x img_size."""
    lo = max(math.ceil(0.67 * img_size / grid), 1)
    hi = max(math.floor(1.5 * img_size / grid), lo)
    return [g * grid for g in range(lo, hi + 1)]


def _plot_batch(imgs: torch.Tensor, targets: torch.Tensor, paths: Any, fname: Path, names: tuple) -> None:
    try:
        from train_val_utils.plots import plot_images
    except ImportError:  # the evaluation plots module is optional for training
        return
    plot_images(imgs, targets, paths, str(fname), list(names))


def _bar_text(cfg: EpochConfig, mloss: torch.Tensor, n_targets: int, size: int, device: torch.device) -> str:
    mem = f"{torch.cuda.memory_reserved(device) / 1e9:.3g}G" if device.type == "cuda" else "cpu"
    losses = "".join(f"{v:10.4g}" for v in mloss.tolist())
    return f"{cfg.epoch}/{cfg.epochs - 1}".rjust(10) + mem.rjust(10) + losses + f"{n_targets:10d}{size:10d}"


def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, dataloader: Any, device: torch.device,
                    loss_fn: YoloLoss, optim_hyp: OptimizerHyp, cfg: EpochConfig,
                    scaler: torch.amp.GradScaler, ema: Any, lr_factor: float,
                    dist_info: DistInfo) -> dict[str, float]:
    """Train one epoch; returns mean box/obj/class/total losses (reduced over ranks), targets seen, last size.

    `loss_fn` is the run's `YoloLoss`; `optim_hyp` the hyp file's optimizer section (warm-up
    values); `lr_factor` is the cosine schedule's value for this epoch, the target of the warm-up ramp.
    """
    model.train()
    nb = len(dataloader)
    pick = random.Random(cfg.seed * 100_003 + cfg.epoch)  # same sizes on every rank and after resume
    sizes = multi_scale_sizes(cfg.img_size, cfg.grid)
    size = cfg.img_size
    mloss = torch.zeros(4)  # running means of box, obj, cls, total
    n_targets = 0
    if dist_info.is_main:
        logger.info(("%10s" * 8), "epoch", "mem", "box", "obj", "cls", "total", "targets", "size")
    bar = tqdm(enumerate(dataloader), total=nb, disable=not dist_info.is_main,
               bar_format="{l_bar}{bar:10}{r_bar}")
    optimizer.zero_grad(set_to_none=True)
    for i, (imgs, targets, paths, _) in bar:
        ni = i + nb * cfg.epoch  # batches since the run started
        imgs = imgs.to(device, non_blocking=True).float() / 255.0  # (bs, 3, H, W) in [0, 1]
        targets = targets.to(device)  # (N, 6) image, class, cx, cy, w, h (normalised)
        if ni < cfg.warmup_iters:
            apply_warmup(optimizer, ni, cfg.warmup_iters, lr_factor, optim_hyp)
        if cfg.multi_scale:
            if i % cfg.accumulate == 0:
                size = pick.choice(sizes)
            if size != imgs.shape[-1] or size != imgs.shape[-2]:
                scale = size / max(imgs.shape[2:])
                new_hw = [max(math.ceil(d * scale / cfg.grid) * cfg.grid, cfg.grid) for d in imgs.shape[2:]]
                imgs = F.interpolate(imgs, size=new_hw, mode="bilinear", align_corners=False)
        with torch.autocast(device_type=device.type, dtype=cfg.amp_dtype, enabled=cfg.amp):
            preds = model(imgs)  # list of (bs, na, ny, nx, 5+nc)
            loss, items = loss_fn(preds, targets)
        item_vec = torch.stack([torch.as_tensor(items[k], dtype=torch.float32).detach().reshape(())
                                for k in LOSS_KEYS]).cpu()
        item_vec = torch.cat([item_vec, item_vec.sum().reshape(1)])  # (4,) box, obj, cls, total
        check = reduce_mean(torch.cat([item_vec, loss.detach().float().reshape(1).cpu()]).to(device),
                            dist_info).cpu()
        if not torch.isfinite(check).all():
            raise NonFiniteLossError(
                f"non-finite loss ({dict(zip((*LOSS_KEYS, 'total'), check[:4].tolist()))}) at epoch "
                f"{cfg.epoch}, batch {i}; images: {', '.join(str(p) for p in paths)}. Check their label "
                f"files, or lower lr0 in the hyp file. The last checkpoint (previous epoch) is intact")
        # the loss is a per-batch mean; bs/nbs makes one accumulated step see the mean gradient of ~nbs
        # images; DDP averages gradients over ranks, so each rank counts its images times world_size
        scaler.scale(loss * (imgs.shape[0] * dist_info.world_size / cfg.nbs)).backward()
        if (i + 1) % cfg.accumulate == 0 or i + 1 == nb:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model)
        mloss = (mloss * i + check[:4]) / (i + 1)
        bar.set_description(_bar_text(cfg, mloss, int(targets.shape[0]), int(imgs.shape[-1]), device))
        if cfg.plot_dir is not None and ni < 3 and dist_info.is_main:
            _plot_batch(imgs.detach().cpu(), targets.cpu(), paths, cfg.plot_dir / f"train_batch{ni}.jpg",
                        cfg.names)
        n_targets += int(targets.shape[0])
    return {**dict(zip((*LOSS_KEYS, "total_loss"), mloss.tolist())), "targets": n_targets,
            "img_size": int(imgs.shape[-1])}
