"""Evaluation and batch plots: image mosaics with boxes, PR/F1 curves, confusion matrix (matplotlib Agg)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from build_utils.drawing import class_color, draw_box
from build_utils.geometry import xywh2xyxy, xyxy2xywh
from train_val_utils.evaluation.thresholds import DEPLOY_CONF_THRES

logger = logging.getLogger(__name__)


def _pyplot():
    """matplotlib with the file-only Agg backend, imported lazily (training may never plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def predictions_to_targets(out: Sequence[torch.Tensor], img_shape: Sequence[int]) -> torch.Tensor:
    """NMS output (bs x (n, 6) xyxy input pixels) -> (N, 7) `[img_idx, cls, cx, cy, w, h, conf]` normalised,
    the layout `plot_images` draws (the 7th column adds the score to each label)."""
    h, w = int(img_shape[0]), int(img_shape[1])
    rows = []
    for i, det in enumerate(out):
        xywh = xyxy2xywh(det[:, :4].float().cpu()) / torch.tensor([w, h, w, h])
        idx = torch.full((det.shape[0], 1), float(i))
        rows.append(torch.cat((idx, det[:, 5:6].cpu(), xywh, det[:, 4:5].cpu()), 1))
    return torch.cat(rows) if rows else torch.zeros((0, 7))


def plot_images(imgs: torch.Tensor, targets: torch.Tensor, paths: Sequence[str] | None, fname: str,
                names: Sequence[str] | None = None, max_images: int = 16, max_size: int = 1920,
                conf_thres: float = DEPLOY_CONF_THRES) -> np.ndarray:
    """Save a mosaic of up to 16 images with their boxes; returns it (RGB).

    imgs: (bs, 3, H, W) uint8 or float in [0, 1]; targets: (N, 6) `[img_idx, cls, cx, cy, w, h]` normalised
    (labels) or (N, 7) with a confidence last (predictions, labelled with their score; only those above
    `conf_thres` are drawn, since evaluation keeps boxes down to 0.001 and they would bury the image).
    """
    imgs = imgs[:max_images].detach().cpu().float()
    if imgs.numel() and imgs.max() <= 1.0:
        imgs = imgs * 255
    bs, _, h, w = imgs.shape
    cols = math.ceil(math.sqrt(bs))
    rows = math.ceil(bs / cols)
    scale = min(1.0, max_size / max(cols * w, rows * h))
    th, tw = max(int(h * scale), 1), max(int(w * scale), 1)
    mosaic = np.full((rows * th, cols * tw, 3), 255, dtype=np.uint8)
    targets = targets.detach().cpu().float()
    if targets.shape[1] > 6:
        targets = targets[targets[:, 6] > conf_thres]
    for i in range(bs):
        img = imgs[i].permute(1, 2, 0).clamp(0, 255).byte().numpy()  # (H, W, 3) RGB
        tile = np.ascontiguousarray(cv2.resize(img, (tw, th)) if scale < 1 else img)
        t = targets[targets[:, 0] == i]
        xyxy = xywh2xyxy(t[:, 2:6]) * torch.tensor([tw, th, tw, th])
        for k in range(t.shape[0]):
            c = int(t[k, 1])
            name = names[c] if names is not None and c < len(names) else str(c)
            label = f"{name} {t[k, 6]:.2f}" if t.shape[1] > 6 else name
            draw_box(tile, xyxy[k].tolist(), label, class_color(c), thickness=1)
        if paths is not None and i < len(paths):
            cv2.putText(tile, Path(paths[i]).name[:40], (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (220, 220, 220), 1, cv2.LINE_AA)
        r, col = divmod(i, cols)
        mosaic[r * th:(r + 1) * th, col * tw:(col + 1) * tw] = tile
        cv2.rectangle(mosaic, (col * tw, r * th), ((col + 1) * tw - 1, (r + 1) * th - 1), (255, 255, 255), 2)
    Path(fname).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(fname), cv2.cvtColor(mosaic, cv2.COLOR_RGB2BGR))
    return mosaic


def plot_curves(ap: Any, save_dir: Path, names: Sequence[str]) -> None:
    """PR_curve.png (precision vs recall at IoU 0.5) and F1_curve.png (F1 vs confidence), per class + mean."""
    from train_val_utils.evaluation.metrics import CONF_POINTS, RECALL_POINTS

    plt = _pyplot()
    seen = np.nonzero(ap.n_gt > 0)[0]
    label_each = len(seen) < 21  # a legend with 80 entries is unreadable
    fig, ax = plt.subplots(1, 1, figsize=(9, 6), tight_layout=True)
    grey = None if label_each else "grey"
    for c in seen:
        ax.plot(RECALL_POINTS, ap.pr_curve[c], linewidth=1,
                label=f"{names[c]} {ap.ap50[c]:.3f}" if label_each else None, color=grey)
    if len(seen):
        ax.plot(RECALL_POINTS, ap.pr_curve[seen].mean(0), linewidth=3, color="blue",
                label=f"all classes {ap.ap50[seen].mean():.3f} mAP@0.5")
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.01), title="Precision-Recall")
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left", fontsize=7)
    fig.savefig(save_dir / "PR_curve.png", dpi=150)
    plt.close(fig)

    fig, ax = plt.subplots(1, 1, figsize=(9, 6), tight_layout=True)
    for c in seen:
        ax.plot(CONF_POINTS, ap.f1_curve[c], linewidth=1, label=names[c] if label_each else None, color=grey)
    if len(seen):
        mean_f1 = ap.f1_curve[seen].mean(0)
        ax.plot(CONF_POINTS, mean_f1, linewidth=3, color="blue",
                label=f"all classes {mean_f1.max():.2f} at {ap.best_conf:.3f}")
    ax.set(xlabel="Confidence", ylabel="F1", xlim=(0, 1), ylim=(0, 1.01), title="F1-Confidence")
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left", fontsize=7)
    fig.savefig(save_dir / "F1_curve.png", dpi=150)
    plt.close(fig)


def plot_confusion_matrix(matrix: np.ndarray, save_dir: Path, names: Sequence[str]) -> None:
    """confusion_matrix.png: columns (true class) normalised to 1; last row/column = background."""
    plt = _pyplot()
    m = matrix.astype(np.float64)
    m = m / (m.sum(0, keepdims=True) + 1e-9)
    m[m < 0.005] = np.nan  # blank cells read faster than a wall of zeros
    nc = len(names)
    fig, ax = plt.subplots(1, 1, figsize=(12, 9), tight_layout=True)
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046)
    if nc < 31:
        ticks = list(names) + ["background"]
        ax.set_xticks(range(nc + 1), ticks, rotation=90, fontsize=7)
        ax.set_yticks(range(nc + 1), ticks, fontsize=7)
        for (i, j), v in np.ndenumerate(m):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if v > 0.5 else "black")
    ax.set(xlabel="True", ylabel="Predicted", title="Confusion matrix (normalised per true class)")
    fig.savefig(save_dir / "confusion_matrix.png", dpi=150)
    plt.close(fig)
