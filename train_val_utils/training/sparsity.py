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


@torch.no_grad()
def add_bn_l1_grad(model: nn.Module, sr: float, grad_scale: float = 1.0) -> None:
    """grad(gamma) += sr * grad_scale * sign(gamma) for every batch norm; no-op when sr is 0."""
    if not sr:
        return
    for bn in bn_layers(model):
        if bn.weight is None or not bn.weight.requires_grad:
            continue  # frozen layers (--freeze) keep their scales
        if bn.weight.grad is None:
            bn.weight.grad = torch.zeros_like(bn.weight)
        bn.weight.grad.add_(torch.sign(bn.weight), alpha=sr * grad_scale)


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
