"""Geometry and colour augmentation: `letterbox`, `random_affine`, `augment_hsv`, flips.

All functions take RGB uint8 (H, W, 3) arrays and boxes as `[class, x1, y1, x2, y2]` in pixels, so
the geometry is in one coordinate system; the dataset converts to normalised cxcywh at the very end.
Randomness always comes from an explicit `np.random.Generator`, so a sample is reproducible from
its (seed, epoch, index) whatever worker produced it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from build_utils.geometry import clip_coords

GREY = (114, 114, 114)


def letterbox(
    img: np.ndarray,
    new_shape: int | tuple[int, int] = 416,
    color: tuple[int, int, int] = GREY,
    auto: bool = False,
    scaleup: bool = True,
    stride: int = 32,
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Resize keeping the aspect ratio, then pad to `new_shape` (h, w).

    Returns `(img, (r_w, r_h), (pad_w, pad_h))` with the left/top padding in pixels (a half when
    the total padding is odd), which is what `scale_coords` needs to map boxes back. `auto` pads
    only up to the next multiple of `stride` (minimal rectangle, for inference); `scaleup=False`
    never enlarges (better mAP on small validation images).
    """
    shape = img.shape[:2]  # (h, w)
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    if not scaleup:
        r = min(r, 1.0)
    new_unpad = (int(round(shape[1] * r)), int(round(shape[0] * r)))  # (w, h)
    dw, dh = new_shape[1] - new_unpad[0], new_shape[0] - new_unpad[1]
    if auto:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    if (shape[1], shape[0]) != new_unpad:
        interp = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
        img = cv2.resize(img, new_unpad, interpolation=interp)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    ratio = (new_unpad[0] / shape[1], new_unpad[1] / shape[0])
    return img, ratio, (float(left), float(top))


@dataclass(frozen=True, kw_only=True)
class Letterboxed:
    """A network input made from one image, and how to map boxes back to the image.

    `chw` is contiguous (3, h, w) uint8 RGB; `gain_wh` the resize factors (new/old) along x and y and
    `pad_wh` the left/top padding in pixels, both (x, y) ordered.
    """

    chw: np.ndarray
    gain_wh: tuple[float, float]
    pad_wh: tuple[float, float]

    @property
    def ratio_pad(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """The dataset contract's `((gain_h, gain_w), (pad_w, pad_h))`, which `scale_coords` takes."""
        return (self.gain_wh[1], self.gain_wh[0]), self.pad_wh


def letterbox_chw(img_rgb: np.ndarray, img_size: int | tuple[int, int], *, stride: int = 32,
                  auto: bool = False, scaleup: bool = True) -> Letterboxed:
    """(H, W, 3) RGB -> the letterboxed (3, h, w) network input: the one read -> letterbox -> tensor path of
    predict, export checks and int8 calibration. `auto` pads only to the next multiple of `stride`."""
    img, gain_wh, pad_wh = letterbox(img_rgb, img_size, auto=auto, scaleup=scaleup, stride=stride)
    return Letterboxed(chw=np.ascontiguousarray(img.transpose(2, 0, 1)), gain_wh=gain_wh, pad_wh=pad_wh)


def affine_matrix(
    size_hw: tuple[int, int],
    out_hw: tuple[int, int],
    degrees: float,
    translate: float,
    scale: float,
    shear: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """A random 2x3 matrix mapping input pixels to output pixels.

    The input centre is moved to the origin, rotated/scaled/sheared, then placed at the output
    centre shifted by up to `translate` of the output size.
    """
    h, w = size_hw
    oh, ow = out_hw
    centre = np.eye(3)
    centre[0, 2], centre[1, 2] = -w / 2, -h / 2
    rot = np.eye(3)
    angle = rng.uniform(-degrees, degrees)
    s = rng.uniform(1 - scale, 1 + scale)
    rot[:2] = cv2.getRotationMatrix2D(angle=angle, center=(0, 0), scale=s)
    sh = np.eye(3)
    sh[0, 1] = math.tan(math.radians(rng.uniform(-shear, shear)))
    sh[1, 0] = math.tan(math.radians(rng.uniform(-shear, shear)))
    tr = np.eye(3)
    tr[0, 2] = ow / 2 + rng.uniform(-translate, translate) * ow
    tr[1, 2] = oh / 2 + rng.uniform(-translate, translate) * oh
    return (tr @ sh @ rot @ centre)[:2]


def transform_boxes_xyxy(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to (n, 4) xyxy boxes; returns the (n, 4) xyxy hull of the 4 corners."""
    n = len(boxes)
    if n == 0:
        return boxes.reshape(0, 4).astype(np.float32)
    corners = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)  # (n*4, 2) x,y
    ones = np.ones((n * 4, 1), dtype=np.float64)
    xy = (np.hstack([corners, ones]) @ matrix.T).reshape(n, 8)  # (n, 8)
    x, y = xy[:, 0::2], xy[:, 1::2]
    return np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], axis=1).astype(np.float32)


def box_candidates(before: np.ndarray, after: np.ndarray, wh_thr: float = 2, ar_thr: float = 20,
                   area_thr: float = 0.2) -> np.ndarray:
    """Boolean mask of boxes worth keeping after augmentation (both (n, 4) xyxy, `after` clipped).

    Dropped: a side of `wh_thr` px or less, less than `area_thr` of the (scaled) area kept, or an
    aspect ratio above `ar_thr`; such slivers teach the model to fire on nothing.
    """
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    ar = np.maximum(w2 / (h2 + 1e-16), h2 / (w2 + 1e-16))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + 1e-16) > area_thr) & (ar < ar_thr)


def _shift_crop(img: np.ndarray, dx: int, dy: int, out_shape: tuple[int, int]) -> np.ndarray:
    """What warpAffine does for an integer translation, as a copy: (oh, ow, 3) with grey fill."""
    oh, ow = out_shape
    if dx == 0 and dy == 0 and img.shape[:2] == (oh, ow):
        return img
    out = np.full((oh, ow, img.shape[2]), GREY[0], dtype=img.dtype)
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(dx, 0), max(dy, 0), min(w + dx, ow), min(h + dy, oh)  # output window
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = img[y0 - dy:y1 - dy, x0 - dx:x1 - dx]
    return out


def random_affine(
    img: np.ndarray,
    labels: np.ndarray,
    degrees: float = 0.0,
    translate: float = 0.0,
    scale: float = 0.0,
    shear: float = 0.0,
    out_shape: tuple[int, int] | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Warp `img` by a random rotation/scale/shear/translation into `out_shape` (h, w).

    `labels` is (n, 5) `[class, x1, y1, x2, y2]` in input pixels; the result's boxes are the hulls
    of the transformed corners, clipped to the output, with degenerate ones dropped (see
    `box_candidates`). With a mosaic (2s x 2s canvas) `out_shape=(s, s)` crops back to `img_size`.
    The uncovered area is grey 114.
    """
    rng = rng if rng is not None else np.random.default_rng()
    out_shape = out_shape or img.shape[:2]
    matrix = affine_matrix(img.shape[:2], out_shape, degrees, translate, scale, shear, rng)
    if np.allclose(matrix[:, :2], np.eye(2)) and np.allclose(matrix[:, 2], np.round(matrix[:, 2])):
        img = _shift_crop(img, int(round(matrix[0, 2])), int(round(matrix[1, 2])), out_shape)
    else:
        img = cv2.warpAffine(img, matrix, dsize=(out_shape[1], out_shape[0]), flags=cv2.INTER_LINEAR,
                             borderValue=GREY)
    if len(labels) == 0:
        return img, labels.reshape(0, 5).astype(np.float32)
    new = clip_coords(transform_boxes_xyxy(labels[:, 1:5].astype(np.float64), matrix), out_shape)  # (n, 4)
    s = math.sqrt(abs(np.linalg.det(matrix[:, :2])))  # area scale of the transform
    keep = box_candidates(labels[:, 1:5] * s, new)
    out = np.concatenate([labels[keep, :1], new[keep]], axis=1).astype(np.float32)
    return img, out


def hsv_luts(hgain: float, sgain: float, vgain: float, rng: np.random.Generator) -> np.ndarray:
    """Three 256-entry lookup tables (hue mod 180, saturation, value) for one random gain draw."""
    gains = rng.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1
    x = np.arange(256, dtype=np.float32)
    lut_h = ((x * gains[0]) % 180).astype(np.uint8)
    lut_s = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_v = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    return np.stack([lut_h, lut_s, lut_v])  # (3, 256)


def augment_hsv(img: np.ndarray, hgain: float = 0.5, sgain: float = 0.5, vgain: float = 0.5,
                rng: np.random.Generator | None = None) -> np.ndarray:
    """Random hue/saturation/value gains on an RGB uint8 image, in place (also returned).

    Applied through lookup tables: three table lookups per pixel instead of float maths on every
    pixel, which is what keeps HSV cheap in a CPU-bound loader.
    """
    if hgain == 0 and sgain == 0 and vgain == 0:
        return img
    rng = rng if rng is not None else np.random.default_rng()
    luts = hsv_luts(hgain, sgain, vgain, rng)
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_RGB2HSV))
    hsv = cv2.merge((cv2.LUT(hue, luts[0]), cv2.LUT(sat, luts[1]), cv2.LUT(val, luts[2])))
    cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB, dst=img)
    return img


def flip_lr(img: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right; `labels` (n, 5) `[class, cx, cy, w, h]` normalised (a new array)."""
    labels = labels.copy()
    labels[:, 1] = 1 - labels[:, 1]
    return cv2.flip(img, 1), labels


def flip_ud(img: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror up-down; `labels` (n, 5) `[class, cx, cy, w, h]` normalised (a new array)."""
    labels = labels.copy()
    labels[:, 2] = 1 - labels[:, 2]
    return cv2.flip(img, 0), labels
