"""Training plots: results.png (losses and metrics per epoch) and labels.jpg (what the data holds).

labels.jpg is drawn before the first epoch so a user sees class imbalance or tiny boxes before
spending hours of training; results.png is redrawn after every epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_PANELS = (("box_loss", "box loss"), ("obj_loss", "objectness loss"), ("class_loss", "class loss"),
           ("precision", "precision"), ("recall", "recall"), ("map50", "mAP@0.5"), ("map", "mAP@0.5:0.95"),
           ("lr", "learning rate"))


def plot_results(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """One small panel per column of results.csv against the epoch."""
    fig, axes = plt.subplots(2, 4, figsize=(14, 6), tight_layout=True)
    epochs = [int(r["epoch"]) for r in rows]
    for ax, (key, title) in zip(axes.ravel(), _PANELS):
        ax.plot(epochs, [float(r[key]) for r in rows], marker=".", linewidth=2, markersize=6)
        ax.set_title(title)
        ax.set_xlabel("epoch")
    fig.savefig(path, dpi=150)
    plt.close(fig)


def plot_labels(labels: Sequence[np.ndarray], names: Sequence[str], path: str | Path) -> None:
    """Class counts, box centres and box sizes of the training labels (`(n, 5)` class, cx, cy, w, h)."""
    arr = np.concatenate([np.asarray(lb, dtype=np.float32).reshape(-1, 5) for lb in labels] or
                         [np.zeros((0, 5), np.float32)], axis=0)  # (N, 5)
    nc = len(names)
    fig, axes = plt.subplots(1, 3, figsize=(15, 5), tight_layout=True)
    counts = np.bincount(arr[:, 0].astype(int), minlength=nc)[:max(nc, 1)]
    axes[0].bar(range(len(counts)), counts)
    axes[0].set_xticks(range(len(counts)))
    axes[0].set_xticklabels(list(names)[:len(counts)], rotation=90 if nc > 10 else 0)
    axes[0].set_title(f"instances per class ({len(arr)} boxes)")
    axes[1].hist2d(arr[:, 1], arr[:, 2], bins=50, range=[[0, 1], [0, 1]], cmap="Blues")
    axes[1].set_title("box centres (x, y)")
    axes[1].invert_yaxis()
    axes[2].hist2d(arr[:, 3], arr[:, 4], bins=50, range=[[0, 1], [0, 1]], cmap="Blues")
    axes[2].set_title("box sizes (w, h)")
    fig.savefig(path, dpi=120)
    plt.close(fig)
