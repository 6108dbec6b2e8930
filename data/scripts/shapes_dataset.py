"""The built-in synthetic "shapes" dataset: the default of `make demo` and of most tests.

Each image holds 1-8 geometric shapes on a noisy, textured background. The class is defined by the
shape alone (circle, square, triangle, cross, star); colour, size, aspect, rotation, filled vs
thick-outlined drawing and the background all vary, so a detector must learn geometry, yet the task
is easy enough to reach a high mAP@0.5 in a few CPU minutes. Every image is drawn from its own
generator seeded by (seed, split, index), so the dataset is identical for a seed whatever the
thread count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

SHAPE_NAMES = ("circle", "square", "triangle", "cross", "star")
SPLIT_IDS = {"train": 0, "val": 1}


@dataclass(frozen=True)
class ShapesConfig:
    """Knobs of the generator; the defaults suit a small CPU demo at 320 px."""

    img_size: int = 320
    min_objects: int = 1
    max_objects: int = 8
    min_frac: float = 0.08  # smallest object side as a fraction of the image side
    max_frac: float = 0.55
    outline_prob: float = 0.3  # thick outline instead of a filled shape
    max_overlap: float = 0.35  # at most this fraction of an earlier object may be covered


def _unit_polygon(cls: int) -> np.ndarray | None:
    """Vertices (k, 2) in [-1, 1] for polygon classes; None for the circle."""
    if cls == 0:
        return None
    if cls == 1:
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    if cls == 2:
        a = np.deg2rad([-90, 30, 150])
        return np.stack([np.cos(a), np.sin(a)], 1)
    if cls == 3:
        t = 0.33
        return np.array([[-t, -1], [t, -1], [t, -t], [1, -t], [1, t], [t, t], [t, 1], [-t, 1],
                         [-t, t], [-1, t], [-1, -t], [-t, -t]], dtype=np.float64)
    a = np.deg2rad(np.arange(10) * 36 - 90)
    r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    return np.stack([np.cos(a) * r, np.sin(a) * r], 1)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random colour field plus pixel noise: (size, size, 3) uint8."""
    cells = int(rng.integers(2, 9))
    coarse = rng.uniform(30, 225, (cells, cells, 3)).astype(np.float32)
    field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0, rng.uniform(3, 18), (size, size, 1)).astype(np.float32)
    return np.clip(field + noise, 0, 255).astype(np.uint8)


def _pick_colour(bg_mean: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int]:
    """A random colour at least ~90 (L2) away from the local background, so shapes stay visible."""
    colour = rng.uniform(0, 255, 3)
    for _ in range(8):
        if np.linalg.norm(colour - bg_mean) > 90:
            break
        colour = rng.uniform(0, 255, 3)
    else:
        colour = np.where(bg_mean > 127, 15.0, 240.0)
    return tuple(int(c) for c in colour)


def _overlaps_too_much(box: np.ndarray, boxes: list[np.ndarray], limit: float) -> bool:
    """True when `box` (xyxy) covers more than `limit` of any earlier box."""
    if not boxes:
        return False
    prev = np.array(boxes)  # (m, 4)
    iw = (np.minimum(prev[:, 2], box[2]) - np.maximum(prev[:, 0], box[0])).clip(0)
    ih = (np.minimum(prev[:, 3], box[3]) - np.maximum(prev[:, 1], box[1])).clip(0)
    area = (prev[:, 2] - prev[:, 0]) * (prev[:, 3] - prev[:, 1])
    return bool(np.any(iw * ih / area > limit))


def _draw_shape(img: np.ndarray, cls: int, centre: np.ndarray, half: np.ndarray, angle: float,
                colour: tuple[int, int, int], thickness: int) -> np.ndarray:
    """Draw one shape; returns its xyxy box (the hull of what was drawn)."""
    shift = 4  # sub-pixel precision for cv2 drawing
    if cls == 0:
        axes = (int(half[0] * (1 << shift)), int(half[1] * (1 << shift)))
        ctr = (int(centre[0] * (1 << shift)), int(centre[1] * (1 << shift)))
        cv2.ellipse(img, ctr, axes, 0, 0, 360, colour, thickness, cv2.LINE_AA, shift)
        pad = max(thickness, 0) / 2
        return np.array([*(centre - half - pad), *(centre + half + pad)])
    verts = _unit_polygon(cls) * half  # (k, 2)
    c, s = math.cos(angle), math.sin(angle)
    verts = verts @ np.array([[c, s], [-s, c]]) + centre
    pts = np.round(verts * (1 << shift)).astype(np.int32)[None]
    if thickness < 0:
        cv2.fillPoly(img, pts, colour, cv2.LINE_AA, shift)
    else:
        cv2.polylines(img, pts, True, colour, thickness, cv2.LINE_AA, shift)
    pad = max(thickness, 0) / 2
    return np.array([*(verts.min(0) - pad), *(verts.max(0) + pad)])


def make_shapes_image(seed: int, split: str, index: int,
                      cfg: ShapesConfig = ShapesConfig()) -> tuple[np.ndarray, np.ndarray]:
    """One image and its labels: (S, S, 3) uint8 RGB and (n, 5) `[class, cx, cy, w, h]` normalised."""
    rng = np.random.default_rng([seed, SPLIT_IDS.get(split, 2), index])
    size = cfg.img_size
    img = _background(size, rng)
    boxes: list[np.ndarray] = []
    classes: list[int] = []
    for _ in range(int(rng.integers(cfg.min_objects, cfg.max_objects + 1))):
        for _attempt in range(10):
            cls = int(rng.integers(0, len(SHAPE_NAMES)))
            side = math.exp(rng.uniform(math.log(cfg.min_frac), math.log(cfg.max_frac))) * size
            aspect = rng.uniform(0.8, 1.25)
            half = np.array([side * aspect, side / aspect]) / 2
            centre = rng.uniform(half.max(), size - half.max(), 2)
            angle = rng.uniform(-0.5, 0.5) if cls != 0 else 0.0
            box = np.concatenate([centre - half.max(), centre + half.max()])
            if not _overlaps_too_much(box, boxes, cfg.max_overlap):
                break
        else:
            continue
        y0, x0 = int(max(centre[1] - half[1], 0)), int(max(centre[0] - half[0], 0))
        local = img[y0:int(centre[1] + half[1]) + 1, x0:int(centre[0] + half[0]) + 1]
        colour = _pick_colour(local.reshape(-1, 3).mean(0), rng)
        outlined = rng.random() < cfg.outline_prob
        thickness = max(2, int(side * rng.uniform(0.08, 0.15))) if outlined else -1
        drawn = _draw_shape(img, cls, centre, half, angle, colour, thickness)
        boxes.append(np.clip(drawn, 0, size))
        classes.append(cls)
    if not boxes:
        return img, np.zeros((0, 5), dtype=np.float32)
    xyxy = np.array(boxes) / size  # (n, 4)
    labels = np.column_stack([classes, (xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2,
                              xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]])
    return img, labels.astype(np.float32)
