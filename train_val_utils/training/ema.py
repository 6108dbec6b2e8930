"""Exponential moving average of model weights, the model that is evaluated and saved as `ema`.

Averaging the weights over recent optimizer steps smooths out the noise of individual batches,
which reliably adds mAP. The decay ramps up as `decay * (1 - exp(-updates / tau))`, so early on
(when the weights move fast) the average follows the model closely instead of being dragged
back towards the random initialisation.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import torch
from torch import nn

from build_utils.torch_utils import unwrap_model

logger = logging.getLogger(__name__)


class ModelEMA:
    """EMA of a model's parameters and buffers: `ema = d * ema + (1 - d) * model` after each step.

    `ema` is a deep copy in eval mode with `requires_grad=False`; `update(model)` accepts the raw or
    DDP-wrapped model. Floating-point state is averaged; integer buffers (BN's
    `num_batches_tracked`) are copied. `state_dict()` returns plain tensors and ints, so it fits a
    `weights_only=True` checkpoint (`{"ema": ..., "ema_updates": ...}` after `checkpoint_items()`).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000, updates: int = 0) -> None:
        self.ema = copy.deepcopy(unwrap_model(model)).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = updates

    def current_decay(self) -> float:
        """Decay the next update uses (after `updates` has been incremented)."""
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current weights into the average (call after each optimizer step)."""
        self.updates += 1
        d = self.current_decay()
        msd = unwrap_model(model).state_dict()
        for name, v in self.ema.state_dict().items():
            src = msd[name].detach()
            if v.dtype.is_floating_point:
                v.lerp_(src.to(v.dtype), 1 - d)  # d * v + (1 - d) * src
            else:
                v.copy_(src)

    def state_dict(self) -> dict[str, Any]:
        """`{"ema": model state_dict, "updates": int}`: tensors and ints only."""
        return {"ema": self.ema.state_dict(), "updates": int(self.updates)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()` output (for exact resume)."""
        self.ema.load_state_dict(state["ema"])
        self.updates = int(state["updates"])

    def checkpoint_items(self) -> dict[str, Any]:
        """The checkpoint keys of docs/architecture.md: `{"ema": state_dict, "ema_updates": int}`."""
        return {"ema": self.ema.state_dict(), "ema_updates": int(self.updates)}
