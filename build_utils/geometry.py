"""Box geometry, one home: format conversions, clipping, letterbox inversion and every IoU kind.

Formats are named in function names: `xywh` = centre x, centre y, width, height; `xyxy` = corners;
a trailing `n` (`xywhn`) means normalised to the image (0..1), otherwise pixels. Boxes are the last
axis of size 4, any leading shape. Every function takes torch tensors and, where the dataset and
augmentation need them, numpy arrays, returns a new array of the same kind and dtype, and never
modifies its input. The loss (`bbox_iou`, `wh_iou`), NMS and metrics (`box_iou`), the dataset,
mosaic and label verification (conversions, `clip_coords`) and inference (`scale_coords`) all use
this module. It imports only torch, numpy and math, so `build_utils` may import it without a cycle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

Boxes = torch.Tensor | np.ndarray

# Box-regression IoU kinds the loss accepts (hyp.yaml's `iou_type` is validated against this list).
IOU_KINDS = ("iou", "giou", "diou", "ciou")


def _clone(x: Boxes) -> Boxes:
    return x.clone() if isinstance(x, torch.Tensor) else np.array(x, copy=True)


def _cat(parts: Sequence[Boxes]) -> Boxes:
    """Concatenate along the last axis, torch or numpy alike."""
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(tuple(parts), dim=-1)
    return np.concatenate(parts, axis=-1)


def _per_coord(like: Boxes, a: float, b: float) -> Boxes:
    """(4,) `[a, b, a, b]` in the dtype (and device) of `like`, to scale or shift x and y coordinates."""
    if isinstance(like, torch.Tensor):
        return torch.tensor([a, b, a, b], dtype=like.dtype, device=like.device)
    return np.asarray([a, b, a, b], dtype=like.dtype)


# ---------------------------------------------------------------- conversions


def xywh2xyxy(x: Boxes) -> Boxes:
    """(..., 4) `cx, cy, w, h` -> (..., 4) `x1, y1, x2, y2` (a new array; same units)."""
    xy, wh = x[..., :2], x[..., 2:4]
    return _cat((xy - wh / 2, xy + wh / 2))


def xyxy2xywh(x: Boxes) -> Boxes:
    """(..., 4) `x1, y1, x2, y2` -> (..., 4) `cx, cy, w, h` (a new array; same units)."""
    lo, hi = x[..., :2], x[..., 2:4]
    return _cat(((lo + hi) / 2, hi - lo))


def xywhn2xyxy(x: Boxes, w: float, h: float, padw: float = 0.0, padh: float = 0.0) -> Boxes:
    """(..., 4) `cx, cy, w, h` normalised -> (..., 4) `x1, y1, x2, y2` pixels of a `w` x `h` image
    placed at offset (`padw`, `padh`) (a letterbox's left/top padding, or a mosaic tile's corner)."""
    corners = xywh2xyxy(x)
    return corners * _per_coord(corners, w, h) + _per_coord(corners, padw, padh)


def xyxy2xywhn(x: Boxes, w: float, h: float) -> Boxes:
    """(..., 4) `x1, y1, x2, y2` pixels of a `w` x `h` image -> (..., 4) `cx, cy, w, h` normalised."""
    centred = xyxy2xywh(x)
    return centred / _per_coord(centred, w, h)


# ---------------------------------------------------------------- clipping, letterbox inversion


def clip_coords(boxes: Boxes, shape: tuple[int, ...]) -> Boxes:
    """(..., 4) xyxy boxes clipped to an image of `shape` (h, w, ...); returns a new array."""
    h, w = shape[:2]
    y = _clone(boxes)
    if isinstance(y, torch.Tensor):
        y[..., 0:4:2] = y[..., 0:4:2].clamp(0, w)
        y[..., 1:4:2] = y[..., 1:4:2].clamp(0, h)
    else:
        y[..., 0:4:2] = y[..., 0:4:2].clip(0, w)
        y[..., 1:4:2] = y[..., 1:4:2].clip(0, h)
    return y


def scale_coords(
    img1_shape: tuple[int, int],
    coords: Boxes,
    img0_shape: tuple[int, int],
    ratio_pad: tuple[tuple[float, float], tuple[float, float]] | None = None,
) -> Boxes:
    """Map xyxy boxes from a letterboxed/rect image of `img1_shape` (h, w) back to the original
    `img0_shape` (h0, w0), clipped to it; returns a new array.

    `ratio_pad` is the dataset's `shapes[i][1]` = `((h/h0, w/w0), (pad_w, pad_h))`; it carries the exact
    per-axis ratios and paddings of the letterbox that made the image. Without it they are recomputed
    the way `build_utils.dataset.augment.letterbox` does (one gain, centred padding, left/top rounded down).
    """
    if ratio_pad is None:
        gain = min(img1_shape[0] / img0_shape[0], img1_shape[1] / img0_shape[1])
        new_h, new_w = round(img0_shape[0] * gain), round(img0_shape[1] * gain)
        gain_h, gain_w = new_h / img0_shape[0], new_w / img0_shape[1]
        pad_w = round((img1_shape[1] - new_w) / 2 - 0.1)  # letterbox's left/top rounding
        pad_h = round((img1_shape[0] - new_h) / 2 - 0.1)
    else:
        (gain_h, gain_w), (pad_w, pad_h) = ratio_pad
    y = _clone(coords)
    y[..., 0:4:2] = (coords[..., 0:4:2] - pad_w) / gain_w
    y[..., 1:4:2] = (coords[..., 1:4:2] - pad_h) / gain_h
    return clip_coords(y, img0_shape)


# ---------------------------------------------------------------- IoU


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(n, 4) xyxy -> (n,) areas (zero for degenerate boxes)."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def box_iou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes: (N, 4), (M, 4) -> (N, M), for NMS and metrics.

    Two zero-area boxes give 0/0; with the default eps=0 that is NaN, matching the NMS kernels, and
    callers that need a number pass a small eps.
    """
    lt = torch.max(box1[:, None, :2], box2[None, :, :2])  # (N, M, 2)
    rb = torch.min(box1[:, None, 2:], box2[None, :, 2:])  # (N, M, 2)
    wh = (rb - lt).clamp(min=0)  # (N, M, 2)
    inter = wh[..., 0] * wh[..., 1]  # (N, M)
    union = box_area(box1)[:, None] + box_area(box2)[None, :] - inter
    return inter / (union + eps)


def _bbox_iou_xyxy(box1: torch.Tensor, box2: torch.Tensor, kind: str, eps: float) -> torch.Tensor:
    """Row-aligned (n, 4) xyxy pairs -> (n,) IoU of `kind` (see `bbox_iou`)."""
    b1x1, b1y1, b1x2, b1y2 = box1.unbind(-1)
    b2x1, b2y1, b2x2, b2y2 = box2.unbind(-1)
    inter = (torch.min(b1x2, b2x2) - torch.max(b1x1, b2x1)).clamp(min=0) * (
        torch.min(b1y2, b2y2) - torch.max(b1y1, b2y1)
    ).clamp(min=0)  # (n,)
    w1, h1 = b1x2 - b1x1, b1y2 - b1y1
    w2, h2 = b2x2 - b2x1, b2y2 - b2y1
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if kind == "iou":
        return iou
    cw = torch.max(b1x2, b2x2) - torch.min(b1x1, b2x1)  # enclosing box width
    ch = torch.max(b1y2, b2y2) - torch.min(b1y1, b2y1)
    if kind == "giou":
        c_area = cw * ch + eps
        return iou - (c_area - union) / c_area
    c2 = cw**2 + ch**2 + eps  # squared enclosing diagonal
    rho2 = ((b2x1 + b2x2 - b1x1 - b1x2) ** 2 + (b2y1 + b2y2 - b1y1 - b1y2) ** 2) / 4  # centre distance^2
    if kind == "diou":
        return iou - rho2 / c2
    v = (4 / math.pi**2) * (torch.atan(w2 / (h2 + eps)) - torch.atan(w1 / (h1 + eps))) ** 2
    with torch.no_grad():
        alpha = v / (1 - iou + v + eps)
    return iou - (rho2 / c2 + v * alpha)


def bbox_iou(box1: torch.Tensor, box2: torch.Tensor, kind: str = "iou", xywh: bool = True,
             eps: float = 1e-9) -> torch.Tensor:
    """IoU of row-aligned boxes, row i of `box1` with row i of `box2`: (n, 4), (n, 4) -> (n,).

    For the box loss, which compares each matched prediction with its own target (unlike `box_iou`'s
    N x M matrix). `xywh=True` means `cx, cy, w, h`, else `x1, y1, x2, y2`. `kind` is one of
    `IOU_KINDS`: GIoU subtracts the share of the enclosing box not covered by the union, so disjoint
    boxes still get a gradient; DIoU subtracts the squared centre distance over the squared
    enclosing diagonal; CIoU also penalises aspect-ratio mismatch (its trade-off weight alpha
    carries no gradient, as in the CIoU paper). Differentiable.
    """
    if kind not in IOU_KINDS:
        raise ValueError(f"IoU kind {kind!r} is not one of {', '.join(IOU_KINDS)}")
    if xywh:
        box1, box2 = xywh2xyxy(box1), xywh2xyxy(box2)
    return _bbox_iou_xyxy(box1, box2, kind, eps)


def wh_iou(wh1: torch.Tensor, wh2: torch.Tensor) -> torch.Tensor:
    """IoU of boxes sharing a centre: (n, 2) and (m, 2) widths/heights -> (n, m). Anchor matching."""
    wh1 = wh1[:, None]  # (n, 1, 2)
    wh2 = wh2[None]  # (1, m, 2)
    inter = torch.min(wh1, wh2).prod(2)  # (n, m)
    return inter / (wh1.prod(2) + wh2.prod(2) - inter)


def grid_boxes(raw: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Predicted boxes `cx, cy, w, h` in grid units from raw outputs (..., >=4): centres as the sigmoid
    offset in their cell, sizes as exp(t) (capped) times `anchors` (grid units, broadcast against the
    rows). The one decoding the box loss and the distillation loss share. -> (..., 4)"""
    return torch.cat((raw[..., :2].sigmoid(), raw[..., 2:4].exp().clamp(max=1e3) * anchors), dim=-1)
