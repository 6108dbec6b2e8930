"""Optimizer with three parameter groups, the cosine LR schedule and the warm-up rule.

Weight decay is a prior on filter magnitudes; applied to BN scales or biases it only shifts
activations and hurts, so those get none. Biases get their own group because warm-up starts
them at a high LR (`warmup_bias_lr`) while the weights start from 0: a freshly initialised
objectness bias must move quickly, the weights must not.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from build_utils.hyp import OptimizerHyp, optimizer_hyp

logger = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam", "adamw")
_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """(decayed weights, norm-layer weights, biases) among parameters that require grad."""
    decay, norm, bias = [], [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue  # frozen layers (--freeze) stay out of the optimizer
            if name == "bias":
                bias.append(p)
            elif isinstance(module, _NORM_TYPES):
                norm.append(p)
            else:
                decay.append(p)
    return decay, norm, bias


def build_optimizer(
    model: nn.Module, name: str, hyp: Mapping[str, Any] | OptimizerHyp
) -> torch.optim.Optimizer:
    """SGD (nesterov, hyp momentum), Adam or AdamW (betas (momentum, 0.999)) with three groups.

    `hyp` is the validated hyp dict or its `optimizer_hyp` section. Groups, in this order: 0 = norm
    weights (no decay), 1 = conv/linear weights (`weight_decay`), 2 = biases (no decay,
    `is_bias=True`, for warm-up). Every group starts at `lr0` and gets `initial_lr` (what LambdaLR
    and `apply_warmup` scale).
    """
    name = name.lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer {name!r} is not one of {', '.join(OPTIMIZERS)}")
    h = optimizer_hyp(hyp)
    decay, norm, bias = split_parameters(model)
    lr, momentum = h.lr0, h.momentum
    groups = [
        {"params": norm, "weight_decay": 0.0, "is_bias": False, "group_name": "norm"},
        {"params": decay, "weight_decay": h.weight_decay, "is_bias": False, "group_name": "weights"},
        {"params": bias, "weight_decay": 0.0, "is_bias": True, "group_name": "bias"},
    ]
    for g in groups:
        g["initial_lr"] = lr
    if name == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    elif name == "adam":
        opt = torch.optim.Adam(groups, lr=lr, betas=(momentum, 0.999))
    else:
        opt = torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    logger.info("optimizer %s: %d weights (decay %g), %d norm weights, %d biases (no decay)",
                name, len(decay), h.weight_decay, len(norm), len(bias))
    return opt


def cosine_lr_lambda(epochs: int, lrf: float) -> Callable[[int], float]:
    """LambdaLR factor: 1 at epoch 0 down to `lrf` at epoch `epochs` along half a cosine."""
    def factor(epoch: int) -> float:
        return ((1 + math.cos(epoch * math.pi / epochs)) / 2) * (1 - lrf) + lrf
    return factor


WARMUP_MIN_ITERATIONS = 100  # a warm-up shorter than this barely moves momentum and bias LR
WARMUP_MAX_SHARE = 1 / 3  # warm-up never takes more than this share of a run's iterations


def warmup_iterations(n_batches_per_epoch: int, hyp: Mapping[str, Any] | OptimizerHyp,
                      total_iterations: int | None = None) -> int:
    """Warm-up length in iterations (batches): max(round(warmup_epochs * nb), 100), never more than a
    third of the run's `total_iterations` (0 when warmup_epochs is 0).

    The cap is what lets a short fine-tune (80 images, 5 epochs) leave warm-up and train at lr0;
    without it the 100-iteration floor would cover the whole run.
    """
    warmup_epochs = optimizer_hyp(hyp).warmup_epochs
    if warmup_epochs <= 0:
        return 0
    n = max(round(warmup_epochs * n_batches_per_epoch), WARMUP_MIN_ITERATIONS)
    if total_iterations is not None:
        n = min(n, max(int(total_iterations * WARMUP_MAX_SHARE), 1))
    return n


def warmup_accumulate(ni: int, n_warmup: int, accumulate: int) -> int:
    """Batches per optimizer step at iteration `ni`: ramps 1 -> `accumulate` over warm-up (as the
    classic code did), so the first steps come early instead of every `accumulate` batches."""
    if ni >= n_warmup:
        return accumulate
    return max(1, round(_interp(ni, n_warmup, 1.0, float(accumulate))))


def optimizer_steps(n_batches_per_epoch: int, epochs: int, n_warmup: int, accumulate: int) -> int:
    """How many optimizer steps a run of `epochs` takes under `warmup_accumulate` (logged at start).

    Mirrors the loop's rule: a step when `ni - last_step >= warmup_accumulate(ni)`, and at each
    epoch's last batch.
    """
    steps = 0
    for epoch in range(epochs):
        last = -1  # batch index (within the epoch) of the last step
        for i in range(n_batches_per_epoch):
            ni = i + epoch * n_batches_per_epoch
            if i - last >= warmup_accumulate(ni, n_warmup, accumulate) or i + 1 == n_batches_per_epoch:
                steps, last = steps + 1, i
    return steps


def log_step_plan(n_batches_per_epoch: int, epochs: int, n_warmup: int, accumulate: int) -> int:
    """Log how long warm-up lasts and how many optimizer steps the run takes; returns the steps."""
    steps = optimizer_steps(n_batches_per_epoch, epochs, n_warmup, accumulate)
    total = n_batches_per_epoch * epochs
    logger.info("warm-up %d of %d iterations (%.1f epochs; accumulation 1 -> %d); %d optimizer steps in all",
                n_warmup, total, n_warmup / max(n_batches_per_epoch, 1), accumulate, steps)
    if steps < 50:
        logger.warning("only %d optimizer steps: a lower --nbs (accumulate = nbs / batch) or more epochs "
                       "gives the optimizer more updates", steps)
    return steps


def _interp(ni: int, n_warmup: int, start: float, end: float) -> float:
    t = min(max(ni / n_warmup, 0.0), 1.0)
    return start + (end - start) * t


def apply_warmup(
    optimizer: torch.optim.Optimizer, ni: int, n_warmup: int, lr_factor: float,
    hyp: Mapping[str, Any] | OptimizerHyp,
) -> None:
    """Set LR (and momentum) of every group for iteration `ni` (0-based, counted over all epochs).

    Linear over `n_warmup` iterations: weight groups from 0, the bias group from
    `warmup_bias_lr`, both to `initial_lr * lr_factor` (the scheduler's current factor);
    momentum (SGD momentum / Adam beta1) from `warmup_momentum` to `momentum`. Call only while
    `ni < n_warmup`; afterwards the scheduler alone sets the LR.
    """
    if n_warmup <= 0:
        return
    h = optimizer_hyp(hyp)
    for g in optimizer.param_groups:
        target = g["initial_lr"] * lr_factor
        start = h.warmup_bias_lr if g.get("is_bias", False) else 0.0
        g["lr"] = _interp(ni, n_warmup, start, target)
        m = _interp(ni, n_warmup, h.warmup_momentum, h.momentum)
        if "momentum" in g:
            g["momentum"] = m
        if "betas" in g:
            g["betas"] = (m, g["betas"][1])
