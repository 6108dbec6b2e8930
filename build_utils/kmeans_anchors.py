"""Anchors for a dataset: k-means on label widths/heights with an IoU distance, then refinement.

Anchors are in pixels of the network input; label sizes are scaled the way the loader scales
images (long side = img_size), so the anchors fit what the model actually sees.
"""

from __future__ import annotations

import numpy as np

ANCHOR_T = 4.0  # a label is "recallable" when some anchor is within this wh ratio (the loss's rule)


def wh_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU of boxes sharing a corner: wh (n, 2), anchors (k, 2) -> (n, k)."""
    inter = np.minimum(wh[:, None], anchors[None]).prod(2)  # (n, k)
    return inter / (wh.prod(1)[:, None] + anchors.prod(1)[None] - inter)


def anchor_metrics(wh: np.ndarray, anchors: np.ndarray) -> dict[str, float]:
    """Best possible recall (ratio rule) and mean best IoU of `anchors` (k, 2) on `wh` (n, 2)."""
    ratio = wh[:, None] / anchors[None]  # (n, k, 2)
    worst = np.minimum(ratio, 1 / ratio).min(2)  # (n, k)
    best = worst.max(1)
    return {"bpr": float((best > 1 / ANCHOR_T).mean()), "mean_iou": float(wh_iou(wh, anchors).max(1).mean())}


def kmeans_iou(wh: np.ndarray, k: int, iters: int = 100,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """k-medians clustering of wh (n, 2) with distance 1 - IoU; returns (k, 2) sorted by area."""
    rng = rng if rng is not None else np.random.default_rng(0)
    if len(wh) < k:
        raise ValueError(f"{len(wh)} boxes are too few for {k} anchors")
    centres = wh[rng.choice(len(wh), k, replace=False)].astype(np.float64)
    for _ in range(iters):
        assign = wh_iou(wh, centres).argmax(1)  # (n,)
        new = np.array([np.median(wh[assign == j], 0) if np.any(assign == j) else centres[j]
                        for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return centres[np.argsort(centres.prod(1))]


def refine_anchors(wh: np.ndarray, anchors: np.ndarray, generations: int = 300,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """Random multiplicative mutations, kept when the mean best IoU improves (cheap hill climb)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    best, best_fit = anchors.copy(), wh_iou(wh, anchors).max(1).mean()
    for _ in range(generations):
        trial = best * np.clip(rng.normal(1, 0.1, best.shape), 0.3, 3.0)
        fit = wh_iou(wh, trial).max(1).mean()
        if fit > best_fit:
            best, best_fit = trial, fit
    return best[np.argsort(best.prod(1))]


def label_wh_pixels(labels: list[np.ndarray], shapes_hw: np.ndarray, img_size: int) -> np.ndarray:
    """(n, 2) label widths/heights in pixels once each image's long side is `img_size`."""
    scale = img_size / shapes_hw.max(1)  # (m,)
    parts = [lab[:, 3:5] * (hw[::-1] * s) for lab, hw, s in zip(labels, shapes_hw, scale) if len(lab)]
    wh = np.concatenate(parts, 0) if parts else np.zeros((0, 2))
    return wh[(wh >= 2).all(1)]  # sub-2-pixel boxes say nothing about anchor shapes
