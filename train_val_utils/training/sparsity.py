"""L1 sparsity on the batch-norm scales (`train.py --sr S`), the first step of channel pruning.

Network slimming: adding S * sign(gamma) to every batch-norm weight's gradient is the subgradient of
S * sum|gamma|, so during training the scales of channels the loss does not need drift to zero and
`data/scripts/prune.py` can remove them. It runs once per optimizer step, after the accumulated
backward and before the step, so S means the same whatever the batch size or accumulation. With a
gradient scaler the gradients are still scaled at that point, so the penalty is scaled with them.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)


def bn_layers(model: nn.Module) -> list[nn.BatchNorm2d]:
    """Every batch norm of `model` (DDP/compile wrappers included), in module order."""
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


KEPT_PULL = 0.01  # share of the L1 pull left on the channels --sr-keep protects


@torch.no_grad()
def add_bn_l1_grad(model: nn.Module, sr: float, grad_scale: float = 1.0, keep_share: float = 0.0) -> None:
    """grad(gamma) += sr * grad_scale * sign(gamma) for every batch norm; no-op when sr is 0.

    `keep_share` > 0 (`--sr-keep`, second half of a run): the share of all channels with the largest
    |gamma| (ranked over the whole network channel by channel; pruning ranks coupled channels together)
    get KEPT_PULL of the pull, so the channels pruning will keep recover from the penalty while the rest
    are driven towards zero and their removal costs little.
    """
    if not sr:
        return
    layers = [bn for bn in bn_layers(model) if bn.weight is not None and bn.weight.requires_grad]
    if not layers:  # frozen layers (--freeze) keep their scales
        return
    threshold = None
    if keep_share > 0:
        scales = torch.cat([bn.weight.detach().abs().flatten() for bn in layers])  # (all channels,)
        k = max(int(round(scales.numel() * (1.0 - keep_share))), 1)
        threshold = scales.kthvalue(k).values  # channels above it are kept
    for bn in layers:
        if bn.weight.grad is None:
            bn.weight.grad = torch.zeros_like(bn.weight)
        pull = torch.sign(bn.weight)  # (channels,)
        if threshold is not None:
            pull = torch.where(bn.weight.abs() > threshold, pull * KEPT_PULL, pull)
        bn.weight.grad.add_(pull, alpha=sr * grad_scale)


def bn_scales(model: nn.Module) -> np.ndarray:
    """All |gamma| of `model` as one float array (the histogram's data)."""
    scales = [bn.weight.detach().abs().float().cpu().flatten() for bn in bn_layers(model)
              if bn.weight is not None]
    return torch.cat(scales).numpy() if scales else np.zeros(0, dtype=np.float32)


def plot_bn_histogram(scales: np.ndarray, path: Any, title: str = "") -> None:
    """bn_scales.png: the distribution of |gamma|; a spike at zero means channels ready to prune."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), tight_layout=True)
    ax.hist(scales, bins=100, color="tab:blue")
    ax.set_xlabel("|batch-norm scale|")
    ax.set_ylabel("channels")
    small = float((scales < 0.01).mean()) if scales.size else 0.0
    ax.set_title(f"{title} {scales.size} channels, {100 * small:.1f}% below 0.01".strip())
    fig.savefig(path, dpi=150)
    plt.close(fig)
