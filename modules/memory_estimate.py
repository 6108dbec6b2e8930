"""Will the activations fit? A lower bound on a model's memory at a batch and input size, by arithmetic.

A cfg layer with `filters=65536`, or `predict --img-size 32000`, asks the allocator for tens of GB and
dies there after minutes (or takes the machine into swap). The shape dry-run of `graph_check` already
knows every layer's output size without allocating, so the need is known in milliseconds: weights, plus
per image every layer's output for training (autograd keeps them for the backward pass), or the largest
two outputs plus the routed ones for inference. It is a lower bound (no workspace, no optimizer state
beyond the weights' copies), so a refusal is certain, never a guess. The RAM cache checks itself the
same way (`LoadImagesAndLabels.cache_estimate_bytes`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from build_utils.datasets import available_memory_bytes
from build_utils.errors import UserError
from build_utils.parse_config import parse_model_cfg_text
from modules.graph_check import GraphShape, check_graph

logger = logging.getLogger(__name__)

FLOAT_BYTES = 4
WEIGHT_COPIES_TRAINING = 4  # weights, gradients, momentum, EMA


def activation_elements(shape: GraphShape, height: int, width: int, routed: set[int],
                        training: bool) -> int:
    """Floats one image needs at (height, width): every layer output when training, else the routed
    outputs (kept for later layers) plus the largest input/output pair."""
    sizes = [m.c * max(1, -(-height // m.stride)) * max(1, -(-width // m.stride)) for m in shape.maps]
    if training:
        return sum(sizes)
    largest = sorted(sizes, reverse=True)[:2]
    return sum(sizes[i] for i in routed) + sum(largest)


def memory_need_bytes(module_defs: list[dict[str, Any]], net_info: dict[str, Any], source: str, batch: int,
                      height: int, width: int, training: bool, activation_bytes: int = FLOAT_BYTES) -> int:
    """Lower bound in bytes of the memory a forward (and, when training, backward) pass needs
    (`activation_bytes`: 2 under mixed precision)."""
    shape = check_graph(module_defs, net_info, source)
    routed = {j for m in module_defs for j in m.get("_from", [])}
    weights = shape.parameters * FLOAT_BYTES * (WEIGHT_COPIES_TRAINING if training else 1)
    return weights + batch * activation_elements(shape, height, width, routed, training) * activation_bytes


def available_bytes(device: torch.device) -> int:
    """Free memory of `device` (CUDA: free device memory; CPU: MemAvailable); 0 when unknown."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except RuntimeError:
            return 0
    return available_memory_bytes()


def check_memory(module_defs: list[dict[str, Any]], net_info: dict[str, Any], source: str, *, batch: int,
                 height: int, width: int, training: bool, device: torch.device, fix: str,
                 activation_bytes: int = FLOAT_BYTES) -> int:
    """Raise one `UserError` when the lower bound exceeds the free memory of `device`; returns the bound.

    `fix` names the flags to change (e.g. '--img-size or --batch-size').
    """
    need = memory_need_bytes(module_defs, net_info, source, batch, height, width, training, activation_bytes)
    avail = available_bytes(device)
    logger.debug("%s: at least %.2f GB needed at batch %d, %dx%d (%.2f GB free on %s)", source, need / 1e9,
                 batch, width, height, avail / 1e9, device)
    if avail and need > avail:
        what = "training" if training else "inference"
        raise UserError(f"{source}: {what} at batch {batch} and {width}x{height} needs at least "
                        f"{need / 1e9:.1f} GB (weights and layer outputs) but {avail / 1e9:.1f} GB is free "
                        f"on {device}; use a smaller {fix}, or fewer filters in the cfg")
    return need


def check_cfg_memory(cfg_text: str, source: str, **kwargs: Any) -> int:
    """`check_memory` for cfg text, before any module is built (so no weight is allocated either)."""
    sections = parse_model_cfg_text(cfg_text, source)
    return check_memory(sections[1:], sections[0], source, **kwargs)


def check_model_memory(model: Any, source: str, *, batch: int, img_size: int, device: torch.device,
                       fix: str = "--img-size or --batch-size") -> int | None:
    """`check_memory` for inference with a loaded model or PyTorch backend (square `img_size`, the
    letterbox's upper bound); exported graphs carry no cfg layers and are not checked (None)."""
    net = getattr(model, "model", model)
    if not hasattr(net, "module_defs"):
        return None
    return check_memory(net.module_defs, net.net_info, source, batch=batch, height=img_size, width=img_size,
                        training=False, device=device, fix=fix)
