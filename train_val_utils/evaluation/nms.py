"""Non-maximum suppression: `non_max_suppression` over a batch, and its per-class kernels.

torchvision's `nms` kernel runs when it is installed; the pure-torch/NumPy fallback keeps exactly its
keeps (same float32 arithmetic, tie and 0/0 rules). Box conversions come from `geometry.py`; nothing
here modifies its input.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from build_utils.geometry import box_iou, xywh2xyxy
from train_val_utils.evaluation.thresholds import DEPLOY_CONF_THRES, DEPLOY_IOU_THRES

logger = logging.getLogger(__name__)

try:  # torchvision's C++/CUDA kernel when present; the pure-torch version below keeps identical results
    from torchvision.ops import nms as _tv_nms
except ImportError:  # pragma: no cover - depends on the environment
    _tv_nms = None

# Class-aware NMS shifts each class's boxes by class * MAX_WH pixels so boxes of different classes never
# overlap; MAX_WH must exceed any image side the model sees.
MAX_WH = 7680
# At most this many candidates per image enter NMS (highest scores first); guards against a
# degenerate model emitting every anchor at conf_thres 0.001.
MAX_NMS = 30000
# `--nms` modes: `plain` keeps the surviving boxes as they are; `merge` replaces each kept box by the
# score x IoU-weighted mean of the boxes it suppressed (itself included).
NMS_MODES = ("plain", "merge")
# `--nms auto` (the default): merge with TTA, plain without. TTA's views add near-duplicate boxes that
# plain NMS throws away; merging averages them, which is where TTA's gain comes from (BENCHMARKS.md).
NMS_AUTO = "auto"
NMS_CHOICES = (NMS_AUTO, *NMS_MODES)
NMS_HELP = ("auto: plain NMS, or merge with --augment (TTA needs merge to pay off); plain: greedy NMS; "
            "merge: each kept box becomes the score x IoU-weighted mean of the boxes it suppressed")


def resolve_nms(nms: str, augment: bool) -> str:
    """The NMS mode that runs: `auto` is merge with TTA (`augment`), else plain; an explicit mode stays."""
    if nms not in NMS_CHOICES:
        raise ValueError(f"nms={nms!r}: expected one of {', '.join(NMS_CHOICES)}")
    if nms == NMS_AUTO:
        return "merge" if augment else "plain"
    return nms


def _greedy_numpy(b: np.ndarray, group: np.ndarray, iou_thres: float, max_keep: int | None) -> np.ndarray:
    """CPU greedy NMS in NumPy, same float32 arithmetic as torchvision, stopping after `max_keep` keeps.

    Boxes arrive in score order, so keeps come out best first and the first `max_keep` of them are
    exactly the first `max_keep` keeps of a full pass. Each keep costs one vectorised IoU row over the
    later boxes; suppressed boxes cost one flag test. That bounds an untrained model's 30,000
    candidates at conf 0.001 to max_det rows (tens of ms) instead of one round per kept box.
    """
    n = b.shape[0]
    x1, y1, x2, y2 = (np.ascontiguousarray(v) for v in b.T)
    areas = (x2 - x1) * (y2 - y1)  # (n,) the same arithmetic as torchvision's kernel
    suppressed = np.zeros(n, dtype=bool)
    kept: list[int] = []
    limit = n if max_keep is None else max_keep
    for i in range(n):
        if suppressed[i]:
            continue
        kept.append(i)
        if len(kept) >= limit:
            break
        rest = slice(i + 1, n)
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = w * h
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest] |= (iou > iou_thres) & (group[rest] == group[i])  # NaN never suppresses
    return np.asarray(kept, dtype=np.int64)


def _greedy_rounds_torch(b: torch.Tensor, group: torch.Tensor, iou_thres: float) -> torch.Tensor:
    """The same rounds in torch, for GPU tensors (no host round trip of the boxes)."""
    n = b.shape[0]
    x1, y1, x2, y2 = b.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    n_groups = int(group.max()) + 1
    kept, remaining = [], torch.arange(n, device=b.device)
    while remaining.numel() > 0:
        g = group[remaining]
        head = torch.full((n_groups,), n, device=b.device).scatter_reduce(0, g, remaining, "amin")[g]
        is_head = remaining == head
        kept.append(remaining[is_head])
        w = (torch.min(x2[head], x2[remaining]) - torch.max(x1[head], x1[remaining])).clamp(min=0)
        h = (torch.min(y2[head], y2[remaining]) - torch.max(y1[head], y1[remaining])).clamp(min=0)
        inter = w * h
        iou = inter / (areas[head] + areas[remaining] - inter)
        remaining = remaining[~is_head & ~(iou > iou_thres)]
    return torch.sort(torch.cat(kept)).values


def batched_nms_torch(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor,
    iou_thres: float,
    max_keep: int | None = None,
) -> torch.Tensor:
    """Greedy per-group NMS without torchvision, with the exact arithmetic of `torchvision.ops.nms`.

    Boxes are visited by score, descending, ties in input order (stable sort); a box suppresses every
    later box of its group (`idxs`) whose IoU with it is strictly above `iou_thres`; an IoU of 0/0 (two
    zero-area boxes) is NaN and suppresses nothing. Returns kept indices, best first; on boxes shifted
    apart per class (`batched_nms_xyxy`), the keeps equal torchvision's on the same boxes.
    CPU tensors run a sequential greedy pass in NumPy that stops after `max_keep` keeps. GPU tensors
    run rounds in torch: groups are independent, so each round keeps the best remaining box of every
    group at once, and the rounds number the most keeps of one class, not all keeps (few kernel
    launches). `max_keep` only truncates: the keeps returned are the first `max_keep` of the full result.
    """
    if boxes.shape[0] == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order]  # (n, 4) by score
    group = torch.unique(idxs[order], return_inverse=True)[1]  # (n,) group ids 0..G-1
    if b.device.type == "cpu":
        pos = torch.from_numpy(_greedy_numpy(b.detach().numpy(), group.numpy(), iou_thres, max_keep))
    else:
        pos = _greedy_rounds_torch(b, group, iou_thres)[:max_keep]
    return order[pos]


def nms_torch(boxes: torch.Tensor, scores: torch.Tensor, iou_thres: float) -> torch.Tensor:
    """Single-group `batched_nms_torch`: the same keeps as `torchvision.ops.nms`."""
    return batched_nms_torch(boxes, scores, torch.zeros_like(scores, dtype=torch.int64), iou_thres)


def batched_nms_xyxy(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    iou_thres: float,
    agnostic: bool = False,
    max_keep: int | None = None,
) -> torch.Tensor:
    """Class-aware NMS through coordinate offsets (kept indices, best first).

    Each class is shifted by class * MAX_WH so classes never overlap; torchvision's kernel then runs once
    on all boxes, and the pure-torch fallback runs the classes in parallel on the same shifted boxes.
    """
    cls = torch.zeros_like(scores, dtype=torch.int64) if agnostic else classes.long()
    shifted = boxes + cls.to(boxes.dtype)[:, None] * MAX_WH  # (n, 4)
    if _tv_nms is not None:
        return _tv_nms(shifted, scores, iou_thres)[:max_keep]
    return batched_nms_torch(shifted, scores, cls, iou_thres, max_keep)


def merge_boxes(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, keep: torch.Tensor,
                iou_thres: float) -> torch.Tensor:
    """Merge-NMS coordinates: each kept box as the score x IoU-weighted mean of the boxes it suppressed.

    boxes (n, 4) xyxy, scores (n,), groups (n,) (class, or all 0 for agnostic NMS), keep (k,) the kept
    indices best first. A candidate belongs to the first kept box (in keep order, i.e. by score) of its
    group that it overlaps above `iou_thres` and that ranks at or before it in score order: the box
    greedy NMS suppressed it with. Each kept box belongs to itself (IoU 1). Returns (k, 4) xyxy.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)  # (n,) position in score order
    iou = box_iou(boxes[keep], boxes)  # (k, n)
    hit = (iou > iou_thres) & (groups[keep, None] == groups[None, :]) & (rank[keep, None] <= rank[None, :])
    hit[torch.arange(keep.numel(), device=keep.device), keep] = True  # itself, even for a 0-area box
    first = hit.int().argmax(0)  # (n,) the first kept box that suppresses each candidate
    owner = torch.zeros_like(hit)
    owner[first, torch.arange(boxes.shape[0], device=boxes.device)] = hit.any(0)
    weights = torch.where(owner, iou.nan_to_num(1.0), 0.0) * scores[None, :]  # (k, n)
    weights[torch.arange(keep.numel(), device=keep.device), keep] = scores[keep]  # IoU with itself is 1
    return (weights @ boxes) / weights.sum(1, keepdim=True)  # (k, 4)


def _candidates(x: torch.Tensor, conf_thres: float, multi_label: bool) -> torch.Tensor:
    """(n, 5+nc) predictions of one image -> (m, 6) xyxy, score = obj * cls, class; above conf_thres."""
    box = xywh2xyxy(x[:, :4])  # (n, 4)
    scores = x[:, 5:] * x[:, 4:5]  # (n, nc) conf = obj * cls
    if multi_label:
        i, j = (scores > conf_thres).nonzero(as_tuple=True)
        return torch.cat((box[i], scores[i, j, None], j[:, None].to(x.dtype)), 1)
    conf, j = scores.max(1, keepdim=True)  # (n, 1)
    det = torch.cat((box, conf, j.to(x.dtype)), 1)
    return det[conf.view(-1) > conf_thres]


def non_max_suppression(
    pred: torch.Tensor,
    conf_thres: float = DEPLOY_CONF_THRES,
    iou_thres: float = DEPLOY_IOU_THRES,
    classes: list[int] | None = None,
    agnostic: bool = False,
    multi_label: bool = True,
    max_det: int = 300,
    merge: bool = False,
) -> list[torch.Tensor]:
    """NMS over a batch of raw eval-mode predictions.

    pred: (bs, N, 5+nc) = cx, cy, w, h (input pixels), objectness, class probabilities (sigmoid).
    Returns per image a (n, 6) tensor `[x1, y1, x2, y2, score, class]`, highest score first, with
    score = objectness x class probability. `multi_label` lets one box keep several classes whose scores
    pass `conf_thres` (better mAP at low thresholds); `classes` keeps only those class indices;
    `agnostic` suppresses across classes; at most `max_det` boxes per image. `merge` (merge-NMS) moves
    each kept box to the score x IoU-weighted mean of the boxes it suppressed (`merge_boxes`).
    """
    nc = pred.shape[2] - 5
    multi_label = multi_label and nc > 1
    out = []
    for x in pred:  # (N, 5+nc) one image; the loop is over images, never boxes
        x = x[x[:, 4] > conf_thres]  # objectness pre-filter
        x = x[((x[:, 2:4] > 0) & (x[:, 2:4] < MAX_WH)).all(1)]  # drop degenerate sizes
        det = _candidates(x, conf_thres, multi_label) if x.shape[0] else x.new_zeros((0, 6))
        if classes is not None and det.shape[0]:
            det = det[(det[:, 5:6] == torch.tensor(classes, device=det.device, dtype=det.dtype)).any(1)]
        if det.shape[0] > MAX_NMS:
            det = det[det[:, 4].topk(MAX_NMS).indices]
        if det.shape[0] == 0:
            out.append(pred.new_zeros((0, 6)))
            continue
        keep = batched_nms_xyxy(det[:, :4], det[:, 4], det[:, 5], iou_thres, agnostic, max_keep=max_det)
        kept = det[keep]
        if merge:
            groups = torch.zeros_like(det[:, 5]) if agnostic else det[:, 5]
            kept[:, :4] = merge_boxes(det[:, :4], det[:, 4], groups, keep, iou_thres)
        out.append(kept)
    return out
