"""An epoch's running losses, kept on the device so the host reads them only every few batches.

Reading a loss value on the host stalls a GPU until that step finishes, so `train_one_epoch` adds each batch's
loss items here and syncs every `sync_every` batches and at the epoch's end. A non-finite loss is noted with
its batch index and images, so the error raised at the next sync names what to check.
"""

from __future__ import annotations

from typing import Any

import torch

from build_utils.errors import UserError
from train_val_utils.evaluation.reporting import LOSS_KEYS
from train_val_utils.training.distributed_utils import DistInfo, reduce_sum


class NonFiniteLossError(UserError):
    """The loss became NaN/inf; the message names the batch's images (bad labels or too high LR)."""


class EpochMeter:
    """Running loss sums and the first non-finite batch, kept on the device between host syncs."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(5, device=device)  # box, obj, cls, total, non-finite batches
        self.count = 0
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.recent_paths: dict[int, Any] = {}  # batch index -> image paths, since the last sync

    def add(self, i: int, loss: torch.Tensor, items: dict[str, torch.Tensor], paths: Any) -> None:
        parts = torch.stack([items[k].detach().float().reshape(()) for k in LOSS_KEYS])  # (3,)
        total = parts.sum().reshape(1)
        bad = ~(torch.isfinite(parts).all() & torch.isfinite(loss.detach().float()))  # () bool
        self.sums += torch.cat([parts, total, bad.float().reshape(1)])
        self.first_bad = torch.where(bad & (self.first_bad < 0), torch.full_like(self.first_bad, i),
                                     self.first_bad)
        self.count += 1
        self.recent_paths[i] = paths

    def state(self) -> dict[str, Any]:
        return {"meter_sums": self.sums.detach().cpu().clone(), "meter_count": self.count}

    def load_state(self, state: dict[str, Any]) -> None:
        self.sums = state["meter_sums"].to(self.sums.device).clone()
        self.count = int(state["meter_count"])

    def sync(self, dist_info: DistInfo, epoch: int) -> torch.Tensor:
        """Host copy of the rank-averaged means (4,); raises when any rank saw a non-finite loss."""
        count = torch.tensor([float(self.count)], device=self.sums.device)
        totals = reduce_sum(torch.cat([self.sums, count]), dist_info).cpu()  # (6,) one collective per sync
        means = totals[:4] / max(float(totals[5]), 1.0)
        if totals[4] > 0:
            self._raise(means, epoch)
        self.recent_paths.clear()
        return means

    def _raise(self, means: torch.Tensor, epoch: int) -> None:
        first = int(self.first_bad)
        where = (f"batch {first}; images: {', '.join(str(p) for p in self.recent_paths.get(first, ()))}"
                 if first >= 0 else "a batch on another rank")
        raise NonFiniteLossError(
            f"non-finite loss (running means {dict(zip((*LOSS_KEYS, 'total'), means.tolist()))}) at epoch "
            f"{epoch}, {where}. Check their label files, or lower lr0 in the hyp file. The last checkpoint "
            "(previous epoch) is intact")
