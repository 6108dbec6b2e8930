"""`train.py --image-weights`: draw each epoch's images by the classes they hold (the classic recipe).

Class weight = inverse class frequency x (1 - the class's last AP@0.5)^2, so rare classes and
classes the model still misses are seen more often; an image's weight is the sum of its labels'
class weights. Images without labels get the smallest labelled image's weight, so backgrounds still
appear. The draw is seeded from (seed, epoch) alone: a resumed run draws the same images, and under
DDP every rank draws the same list and then takes its own shard (`rank::world`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


def class_frequency_weights(labels: Sequence[np.ndarray], nc: int) -> np.ndarray:
    """(nc,) inverse class frequency over all labels, normalised to sum 1 (absent classes count once)."""
    classes = np.concatenate([np.asarray(lb).reshape(-1, 5)[:, 0] for lb in labels]) if labels else []
    counts = np.bincount(np.asarray(classes, dtype=np.int64), minlength=nc)[:nc].astype(np.float64)
    counts[counts == 0] = 1.0
    weights = 1.0 / counts
    return weights / weights.sum()


def image_weights(labels: Sequence[np.ndarray], nc: int, class_weights: np.ndarray) -> np.ndarray:
    """(n,) sum of the class weights of each image's labels; label-free images get the smallest weight."""
    counts = np.stack([np.bincount(np.asarray(lb).reshape(-1, 5)[:, 0].astype(np.int64), minlength=nc)[:nc]
                       for lb in labels])  # (n, nc) labels of each class per image
    weights = counts @ class_weights  # (n,)
    positive = weights[weights > 0]
    floor = positive.min() if positive.size else 1.0
    return np.where(weights > 0, weights, floor)


class ImageWeightSampler(Sampler[int]):
    """Weighted draw with replacement of `len(labels)` indices per epoch, sharded over `world` ranks.

    `set_epoch(epoch)` before each epoch; `set_class_maps(maps)` after each evaluation (per-class
    AP@0.5, (nc,)); before any evaluation every class's AP counts as 0, so weights are the pure
    inverse frequency. Every rank yields `ceil(n / world)` indices (the list is padded by wrapping).
    """

    def __init__(self, labels: Sequence[np.ndarray], nc: int, seed: int = 0, rank: int = 0,
                 world: int = 1) -> None:
        self.labels, self.nc, self.seed, self.rank, self.world = list(labels), nc, seed, rank, world
        self.n = len(self.labels)
        self.epoch = 0
        self.freq = class_frequency_weights(self.labels, nc)
        self.class_maps = np.zeros(nc)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_class_maps(self, maps: Sequence[float]) -> None:
        self.class_maps = np.nan_to_num(np.asarray(maps, dtype=np.float64).reshape(self.nc), nan=0.0)

    def weights(self) -> np.ndarray:
        """(n,) this epoch's image weights."""
        return image_weights(self.labels, self.nc, self.freq * (1.0 - self.class_maps) ** 2)

    def draw(self) -> torch.Tensor:
        """(n,) indices for all ranks, the same on every rank: seeded from (seed, epoch) only."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        w = torch.from_numpy(self.weights())
        return torch.multinomial(w, self.n, replacement=True, generator=gen)

    def __iter__(self) -> Iterator[int]:
        idx = self.draw()
        total = len(self) * self.world
        idx = torch.cat([idx, idx[: total - self.n]]) if total > self.n else idx  # wrap to a multiple
        return iter(idx[self.rank:total:self.world].tolist())

    def __len__(self) -> int:
        return math.ceil(self.n / self.world)
