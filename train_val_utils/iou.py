"""Element-wise IoU and its regression variants (GIoU, DIoU, CIoU) for the box loss.

The box loss compares each matched prediction with its own target, so these functions pair
row i of one tensor with row i of the other (unlike `boxes.box_iou`, which builds an N x M
matrix for NMS and metrics). They are differentiable and never modify their inputs.
"""

from __future__ import annotations

import math

import torch

IOU_KINDS = ("iou", "giou", "diou", "ciou")


def xywh2xyxy_pairs(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) `cx, cy, w, h` -> (..., 4) `x1, y1, x2, y2` (a new tensor)."""
    xy, wh = boxes[..., :2], boxes[..., 2:4]
    return torch.cat((xy - wh / 2, xy + wh / 2), dim=-1)


def bbox_iou_xyxy(
    box1: torch.Tensor, box2: torch.Tensor, kind: str = "iou", eps: float = 1e-9
) -> torch.Tensor:
    """IoU of row-aligned boxes (n, 4) `x1, y1, x2, y2` -> (n,); `kind` in iou, giou, diou, ciou.

    GIoU subtracts the share of the enclosing box not covered by the union, so disjoint boxes
    still get a gradient; DIoU subtracts the squared centre distance over the squared enclosing
    diagonal; CIoU also penalises aspect-ratio mismatch (its trade-off weight alpha carries no
    gradient, as in the CIoU paper).
    """
    if kind not in IOU_KINDS:
        raise ValueError(f"IoU kind {kind!r} is not one of {', '.join(IOU_KINDS)}")
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
    """Row-aligned IoU of (n, 4) boxes -> (n,); `xywh=True` means `cx, cy, w, h`, else `x1, y1, x2, y2`."""
    if xywh:
        box1, box2 = xywh2xyxy_pairs(box1), xywh2xyxy_pairs(box2)
    return bbox_iou_xyxy(box1, box2, kind, eps)


def wh_iou(wh1: torch.Tensor, wh2: torch.Tensor) -> torch.Tensor:
    """IoU of boxes sharing a centre: (n, 2) and (m, 2) widths/heights -> (n, m). Anchor matching."""
    wh1 = wh1[:, None]  # (n, 1, 2)
    wh2 = wh2[None]  # (1, m, 2)
    inter = torch.min(wh1, wh2).prod(2)  # (n, m)
    return inter / (wh1.prod(2) + wh2.prod(2) - inter)
