"""Mid-epoch checkpoints (`--save-period-steps`, `--save-period-min`) and resuming inside an epoch.

A save happens right after an optimizer step, when no gradient is half accumulated, so the loop's
whole state is small: the next batch index, the last step's index, the multi-scale size and its
random.Random state, and per rank the running loss sums, the target count and the RNG states. The
sampler needs no state of its own: every sampler's order is a function of (seed, epoch), so a
resumed epoch rebuilds the same order and `ResumeSampler` skips the batches already trained. Loader
workers hold no RNG state that training reads: a sample's augmentation is drawn from (seed, epoch,
index) whatever worker makes it. The checkpoint's `epoch` stays the last *finished* epoch, so the
epoch-end resume logic holds unchanged; `mid_epoch` says where inside the next one to continue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from build_utils.errors import UserError
from modules.checkpoint import rng_state, set_rng_state
from train_val_utils.training.distributed_utils import DistInfo, gather_objects

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochPosition:
    """Where a resumed epoch starts (`batch` = first batch to run) and this rank's loop state there.

    `loop` holds what `train_one_epoch` snapshotted: `last_step`, `size`, `pick` (random.Random
    state as a list), `meter_sums` (5,), `meter_count`, `n_targets`.
    """

    epoch: int
    batch: int
    loop: dict[str, Any]


class ResumeSampler(Sampler[int]):
    """The training sampler, minus the first `skip` indices of the next epoch only (a resumed epoch)."""

    def __init__(self, inner: Sampler[int]) -> None:
        self.inner, self.skip = inner, 0

    def skip_next_epoch(self, n_indices: int) -> None:
        self.skip = n_indices

    def __iter__(self) -> Iterator[int]:
        skip, self.skip = self.skip, 0
        for k, index in enumerate(self.inner):
            if k >= skip:
                yield index

    def __len__(self) -> int:
        inner: Sized = self.inner  # type: ignore[assignment]  # every training sampler has a length
        return max(len(inner) - self.skip, 0)


class SavePeriod:
    """When a mid-epoch save is due: every `steps` optimizer steps and/or `minutes` after the last save.

    Every rank must agree (the save gathers per-rank state), so a time-based decision is rank 0's
    clock shared by one tiny broadcast per optimizer step; a step-based one needs no communication.
    """

    def __init__(self, steps: int, minutes: float) -> None:
        self.steps, self.seconds = steps, minutes * 60.0
        self.since, self.last = 0, time.monotonic()

    @property
    def enabled(self) -> bool:
        return self.steps > 0 or self.seconds > 0

    def reset(self) -> None:
        """A save just happened (mid-epoch or at an epoch's end)."""
        self.since, self.last = 0, time.monotonic()

    def due(self, info: DistInfo) -> bool:
        """Call once per optimizer step on every rank; True on all ranks at once when a save is due."""
        self.since += 1
        due = self.steps > 0 and self.since >= self.steps
        if self.seconds > 0:
            flag = torch.tensor([int(due or time.monotonic() - self.last >= self.seconds)])
            if info.distributed:
                dist.broadcast(flag, src=0, group=info.monitor)
            due = bool(flag.item())
        return due


def rank_state(loop: dict[str, Any]) -> dict[str, Any]:
    """This rank's share of a mid-epoch checkpoint: its loop state and RNG states (plain types)."""
    return {**loop, "rng": rng_state()}


def mid_epoch_entry(epoch: int, batch: int, world_size: int, batch_per_rank: int,
                    ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """The checkpoint's `mid_epoch` value: epoch `epoch` trained up to batch `batch` (exclusive)."""
    return {"epoch": int(epoch), "batch": int(batch), "world_size": int(world_size),
            "batch_per_rank": int(batch_per_rank), "ranks": ranks}


def restore_position(ckpt: dict[str, Any], path: Any, info: DistInfo,
                     batch_per_rank: int) -> EpochPosition | None:
    """This rank's `EpochPosition` from a mid-epoch checkpoint (None for an epoch-end one); restores
    this rank's RNG states. Refuses another process count or per-rank batch: the position would not
    name the same images."""
    entry = ckpt.get("mid_epoch")
    if not entry:
        return None
    if entry["world_size"] != info.world_size or entry["batch_per_rank"] != batch_per_rank:
        raise UserError(f"{path}: saved mid-epoch by {entry['world_size']} process(es) of batch "
                        f"{entry['batch_per_rank']}, resumed by {info.world_size} of batch {batch_per_rank}; "
                        "resume with the same process count and --batch-size")
    mine = dict(entry["ranks"][info.rank])
    set_rng_state(mine.pop("rng"))
    return EpochPosition(int(entry["epoch"]), int(entry["batch"]), mine)


class MidEpochSaver:
    """Writes last.pt after an optimizer step when `SavePeriod` says so.

    `write(epoch, entry)` is the trainer's: on rank 0 it saves last.pt (the state after epoch - 1)
    with `entry` as its `mid_epoch`. Every rank takes part: the per-rank state is gathered first.
    """

    def __init__(self, info: DistInfo, batch_per_rank: int, steps: int, minutes: float,
                 write: Callable[[int, dict[str, Any]], None]) -> None:
        self.info, self.batch_per_rank, self.write = info, batch_per_rank, write
        self.period = SavePeriod(steps, minutes)

    def on_step(self, epoch: int) -> Callable[[int, Callable[[], dict[str, Any]]], None] | None:
        """The engine's `on_step` hook for `epoch`, or None when mid-epoch saves are off."""
        if not self.period.enabled:
            return None
        return lambda i, snapshot: self.maybe_save(epoch, i, snapshot)

    def maybe_save(self, epoch: int, i: int, snapshot: Callable[[], dict[str, Any]]) -> bool:
        """Save when due after batch `i`'s optimizer step; True when it saved."""
        if not self.period.due(self.info):
            return False
        t0 = time.perf_counter()
        ranks = gather_objects(rank_state(snapshot()), self.info)
        if self.info.is_main:
            self.write(epoch, mid_epoch_entry(epoch, i + 1, self.info.world_size, self.batch_per_rank, ranks))
            logger.info("mid-epoch save: epoch %d, step %d (batches trained) written in %.3f s", epoch, i + 1,
                        time.perf_counter() - t0)
        self.period.reset()
        return True
