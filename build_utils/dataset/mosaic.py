"""The 4-image mosaic: four training images around a random centre on a 2s x 2s grey canvas.

The canvas is then cropped back to s x s by `random_affine` (whose output centre is the canvas
centre), so every mosaic shows parts of up to four images at varied scales and positions: more
objects and more context per sample, the main reason YOLOv3-SPP trains well on small datasets.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from build_utils.dataset.augment import random_affine
from build_utils.geometry import clip_coords, xywhn2xyxy
from build_utils.hyp import AugmentHyp


def _place(canvas: np.ndarray, img: np.ndarray, quadrant: int, xc: int, yc: int) -> tuple[int, int]:
    """Paste `img` into `canvas` touching the centre from `quadrant` (0 TL, 1 TR, 2 BL, 3 BR).

    Returns the (padw, padh) offset that maps image pixels to canvas pixels.
    """
    s2h, s2w = canvas.shape[:2]
    h, w = img.shape[:2]
    if quadrant == 0:
        x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
        x1b, y1b = w - (x2a - x1a), h - (y2a - y1a)
    elif quadrant == 1:
        x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, s2w), yc
        x1b, y1b = 0, h - (y2a - y1a)
    elif quadrant == 2:
        x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(s2h, yc + h)
        x1b, y1b = w - (x2a - x1a), 0
    else:
        x1a, y1a, x2a, y2a = xc, yc, min(xc + w, s2w), min(s2h, yc + h)
        x1b, y1b = 0, 0
    canvas[y1a:y2a, x1a:x2a] = img[y1b:y1b + (y2a - y1a), x1b:x1b + (x2a - x1a)]
    return x1a - x1b, y1a - y1b


def load_mosaic(
    load_images: Callable[[list[int]], list[np.ndarray]],
    labels: list[np.ndarray],
    indices: list[int],
    img_size: int,
    hyp: AugmentHyp,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Mosaic of the four `indices`; returns (s, s, 3) uint8 and (n, 5) `[class, x1, y1, x2, y2]` px.

    `load_images(indices)` returns the images resized to long side `img_size`; `labels[i]` is its (n, 5)
    `[class, cx, cy, w, h]` normalised to the original image (so to any resize of it).
    """
    s = img_size
    canvas = np.full((2 * s, 2 * s, 3), 114, dtype=np.uint8)  # (2s, 2s, 3)
    xc, yc = (int(v) for v in rng.uniform(s * 0.5, s * 1.5, 2))
    boxes = []
    for quadrant, (index, img) in enumerate(zip(indices, load_images(indices))):
        h, w = img.shape[:2]
        padw, padh = _place(canvas, img, quadrant, xc, yc)
        lab = labels[index]  # (n, 5) normalised cxcywh
        if len(lab):
            boxes.append(np.concatenate([lab[:, :1], xywhn2xyxy(lab[:, 1:5], w, h, padw, padh)], 1))
    labels4 = np.concatenate(boxes, 0) if boxes else np.zeros((0, 5), np.float32)  # (n, 5) xyxy px
    if len(labels4):
        labels4[:, 1:] = clip_coords(labels4[:, 1:], (2 * s, 2 * s))
    return random_affine(canvas, labels4, degrees=hyp.degrees, translate=hyp.translate,
                         scale=hyp.scale, shear=hyp.shear, out_shape=(s, s), rng=rng)
