"""YOLOv3 training loss: target assignment (`build_targets`) and the three loss terms.

`compute_loss` follows the classic YOLOv3-SPP recipe the default `cfg/hyp.yaml` was tuned for:
box = mean(1 - IoU) over matched anchors (IoU kind from `iou_type`), objectness BCE over every
cell with target (1 - gr) + gr * IoU, class BCE over matched anchors (only when nc > 1). Each term
is a mean per YOLO layer, summed over layers and multiplied by its gain.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from train_val_utils.iou import bbox_iou, wh_iou

logger = logging.getLogger(__name__)

__all__ = ["FocalLoss", "bbox_iou", "build_targets", "compute_loss", "smooth_BCE"]


def smooth_BCE(eps: float = 0.0) -> tuple[float, float]:  # noqa: N802 (the classic name)
    """Label-smoothed BCE targets (positive, negative) = (1 - eps/2, eps/2)."""
    return 1.0 - 0.5 * eps, 0.5 * eps


class FocalLoss(nn.Module):
    """Focal loss around a `BCEWithLogitsLoss`: BCE * alpha_t * (1 - p_t) ** gamma.

    Down-weights the many easy negatives (empty cells) so rare positives drive the gradient.
    The wrapped loss is switched to element-wise reduction; this module applies its original
    reduction (mean, sum or none) afterwards.
    """

    def __init__(self, loss_fcn: nn.BCEWithLogitsLoss, gamma: float = 1.5, alpha: float = 0.25) -> None:
        super().__init__()
        self.loss_fcn = loss_fcn
        self.gamma = gamma
        self.alpha = alpha
        self.reduction = loss_fcn.reduction
        self.loss_fcn.reduction = "none"

    def forward(self, pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        loss = self.loss_fcn(pred, true)
        prob = torch.sigmoid(pred)
        p_t = true * prob + (1 - true) * (1 - prob)
        alpha_t = true * self.alpha + (1 - true) * (1 - self.alpha)
        loss = loss * alpha_t * (1.0 - p_t) ** self.gamma
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss


def _unwrap(model: nn.Module) -> nn.Module:
    """The DarkNet inside a DDP/DataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") and hasattr(model.module, "yolo_modules") else model


def build_targets(
    preds: list[torch.Tensor], targets: torch.Tensor, model: nn.Module, iou_t: float
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[torch.Tensor, ...]], list[torch.Tensor]]:
    """Assign targets to anchors of every YOLO layer.

    `targets` (nt, 6) = `[img, cls, cx, cy, w, h]`, box normalised to the input image. In each layer
    a target is matched to every anchor whose wh-IoU with it exceeds `iou_t` (several or none), at
    the grid cell holding its centre. Per layer returns:
    - `tcls` (n,) long class, `tbox` (n, 4) `[x offset in cell, y offset, w, h]` in grid units,
    - `indices` `(b, a, gj, gi)`, each (n,) long: image, anchor, row, column,
    - `anchors` (n, 2) the matched anchors' sizes in grid units.
    """
    yolos = _unwrap(model).yolo_modules()
    targets = targets.to(device=preds[0].device, dtype=torch.float32)
    nt = targets.shape[0]
    tcls, tbox, indices, anch = [], [], [], []
    for pi, yolo in zip(preds, yolos):
        _, na, ny, nx, _ = pi.shape  # (bs, na, ny, nx, 5+nc)
        anchors = yolo.anchors.to(targets.device).float() / yolo.stride  # (na, 2) grid units
        gain = torch.tensor([1, 1, nx, ny, nx, ny], device=targets.device, dtype=torch.float32)
        t = targets * gain  # (nt, 6) box in grid units
        if nt:
            match = wh_iou(anchors, t[:, 4:6]) > iou_t  # (na, nt)
            a = torch.arange(na, device=targets.device)[:, None].expand(na, nt)[match]  # (n,)
            t = t[None].expand(na, nt, 6)[match]  # (n, 6)
        else:
            a = torch.zeros(0, dtype=torch.long, device=targets.device)
        b, c = t[:, 0].long(), t[:, 1].long()
        gxy, gwh = t[:, 2:4], t[:, 4:6]  # (n, 2)
        gi = gxy[:, 0].long().clamp(0, nx - 1)  # a centre on the right/bottom edge stays in the grid
        gj = gxy[:, 1].long().clamp(0, ny - 1)
        gij = torch.stack((gi, gj), dim=1).to(gxy.dtype)  # (n, 2)
        indices.append((b, a, gj, gi))
        tbox.append(torch.cat((gxy - gij, gwh), dim=1))  # (n, 4)
        anch.append(anchors[a])  # (n, 2)
        tcls.append(c)
    return tcls, tbox, indices, anch


def _bce(pos_weight: float, gamma: float, device: torch.device) -> nn.Module:
    bce = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([pos_weight], device=device))
    return FocalLoss(bce, gamma) if gamma > 0 else bce


def compute_loss(
    preds: list[torch.Tensor], targets: torch.Tensor, model: nn.Module, hyp: dict[str, Any]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total YOLO loss and its parts.

    `preds`: the model's training output, list of (bs, na, ny, nx, 5+nc) raw maps (any float dtype:
    the loss is computed in float32, so it is safe under autocast). `targets`: (nt, 6)
    `[img, cls, cx, cy, w, h]` normalised. `hyp`: validated and already passed through
    `hyp.scale_loss_gains` (uses giou, obj, cls, cls_pw, obj_pw, iou_t, iou_type, gr, fl_gamma,
    label_smoothing).

    Returns `(loss, items)`: `loss` a 0-d float32 tensor = giou*box + obj*obj + cls*class, each a
    MEAN (over matched anchors, resp. cells) summed over layers. It is NOT multiplied by the
    batch size: the classic recipe (and the lr0 of cfg/hyp.yaml) backpropagates
    `loss * batch_size / nbs` (nbs = 64) each step and steps the optimizer every
    `accumulate = max(round(nbs / batch_size), 1)` batches, so one step sees the mean gradient of
    about 64 images. `items` holds the three weighted terms as detached 0-d tensors under
    "box_loss", "obj_loss", "class_loss".
    """
    net = _unwrap(model)
    device = preds[0].device
    nc = net.nc
    tcls, tbox, indices, anchors = build_targets(preds, targets, net, hyp["iou_t"])
    cp, cn = smooth_BCE(hyp["label_smoothing"])
    bce_cls = _bce(hyp["cls_pw"], hyp["fl_gamma"], device)
    bce_obj = _bce(hyp["obj_pw"], hyp["fl_gamma"], device)
    gr = hyp["gr"]
    lbox = torch.zeros((), device=device)
    lobj = torch.zeros((), device=device)
    lcls = torch.zeros((), device=device)
    for i, pi in enumerate(preds):
        pi = pi.float()  # (bs, na, ny, nx, 5+nc); AMP outputs may be half/bfloat16
        b, a, gj, gi = indices[i]
        tobj = torch.zeros_like(pi[..., 0])  # (bs, na, ny, nx)
        n = b.shape[0]
        if n:
            ps = pi[b, a, gj, gi]  # (n, 5+nc) predictions at matched anchors
            pxy = ps[:, :2].sigmoid()
            pwh = ps[:, 2:4].exp().clamp(max=1e3) * anchors[i]  # (n, 2) grid units
            iou = bbox_iou(torch.cat((pxy, pwh), dim=1), tbox[i], kind=hyp["iou_type"])  # (n,)
            lbox = lbox + (1.0 - iou).mean()
            tobj[b, a, gj, gi] = (1.0 - gr) + gr * iou.detach().clamp(0)
            if nc > 1:
                t = torch.full_like(ps[:, 5:], cn)  # (n, nc)
                t[torch.arange(n, device=device), tcls[i]] = cp
                lcls = lcls + bce_cls(ps[:, 5:], t)
        lobj = lobj + bce_obj(pi[..., 4], tobj)
    lbox = lbox * hyp["giou"]
    lobj = lobj * hyp["obj"]
    lcls = lcls * hyp["cls"]
    items = {"box_loss": lbox.detach(), "obj_loss": lobj.detach(), "class_loss": lcls.detach()}
    return lbox + lobj + lcls, items
