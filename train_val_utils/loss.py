"""YOLOv3 training loss: target assignment (`build_targets`) and the loss object `YoloLoss`.

`YoloLoss` follows the classic YOLOv3-SPP recipe the default `cfg/hyp.yaml` was tuned for:
box = mean(1 - IoU) over matched anchors (IoU kind from `iou_type`), objectness BCE over every
cell with target (1 - gr) + gr * IoU, class BCE over matched anchors (only when nc > 1). Each term
is a mean per YOLO layer, summed over layers (objectness weighted per layer by `balance`) and
multiplied by its gain. It is built once per run; its BCE/focal modules and gains live on it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from build_utils.geometry import bbox_iou, grid_boxes, wh_iou
from build_utils.hyp import LossHyp, loss_hyp
from build_utils.torch_utils import unwrap_model

logger = logging.getLogger(__name__)

__all__ = ["FocalLoss", "YoloLoss", "build_targets", "smooth_BCE"]


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
    yolos = unwrap_model(model).yolo_modules()
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


class YoloLoss:
    """The YOLO loss of one model, built once per run and called per batch.

    `YoloLoss(model, hyp, img_size)`: `hyp` is the validated hyp dict or its `loss_hyp` section, with
    the gains as in the file; `img_size` the training image size. The classic gains were tuned for 80
    classes at 320 pixels: the class loss is a mean over nc logits and the objectness loss a mean over
    a grid that grows with the image, so `cls` is scaled by nc/80 (nc from the model) and `obj` by
    img_size/320 to keep each term's weight comparable when either changes.

    Attributes: `gains` (box, obj, cls) after scaling; `gr`, `iou_t`, `iou_kind`; `balance`, a tuple
    with one objectness weight per YOLO layer (in `model.yolo_modules()` order), all 1.0
    unless given, so the classic recipe is unchanged; `bce_cls`, `bce_obj` (BCE or focal, built here).
    """

    def __init__(self, model: nn.Module, hyp: Mapping[str, Any] | LossHyp, img_size: int,
                 balance: Sequence[float] | None = None) -> None:
        net = unwrap_model(model)
        h = loss_hyp(hyp)
        self.model = net  # read per call for the YOLO layers' anchors (plain reference, not a submodule)
        self.nc = int(net.nc)
        self.gains = (h.giou, h.obj * img_size / 320.0, h.cls * self.nc / 80.0)  # box, obj, cls
        self.gr, self.iou_t, self.iou_kind = h.gr, h.iou_t, h.iou_type
        self.cp, self.cn = smooth_BCE(h.label_smoothing)  # class targets, positive and negative
        n_layers = len(net.yolo_modules())
        self.balance = tuple(float(b) for b in balance) if balance is not None else (1.0,) * n_layers
        if len(self.balance) != n_layers:
            raise ValueError(f"balance has {len(self.balance)} weights for {n_layers} YOLO layers")
        self._pos_weights, self._gamma = (h.cls_pw, h.obj_pw), h.fl_gamma
        self._build_bce(net.yolo_modules()[0].anchors.device)

    def _build_bce(self, device: torch.device) -> None:
        """BCE (or focal) modules for classes and objectness; their pos_weight lives on `device`."""
        self.device = device
        self.bce_cls = _bce(self._pos_weights[0], self._gamma, device)
        self.bce_obj = _bce(self._pos_weights[1], self._gamma, device)

    def __call__(
        self, preds: list[torch.Tensor], targets: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total YOLO loss and its parts.

        `preds`: the model's training output, list of (bs, na, ny, nx, 5+nc) raw maps (any float dtype:
        the loss is computed in float32, so it is safe under autocast). `targets`: (nt, 6)
        `[img, cls, cx, cy, w, h]` normalised.

        Returns `(loss, items)`: `loss` a 0-d float32 tensor = giou*box + obj*obj + cls*class, each a
        MEAN (over matched anchors, resp. cells) summed over layers. It is NOT multiplied by the
        batch size: the classic recipe (and the lr0 of cfg/hyp.yaml) backpropagates
        `loss * batch_size / nbs` (nbs = 64) each step and steps the optimizer every
        `accumulate = max(round(nbs / batch_size), 1)` batches, so one step sees the mean gradient of
        about 64 images. `items` holds the three weighted terms as detached 0-d tensors under
        "box_loss", "obj_loss", "class_loss".
        """
        device = preds[0].device
        if device != self.device:  # the model moved after the loss was built
            self._build_bce(device)
        tcls, tbox, indices, anchors = build_targets(preds, targets, self.model, self.iou_t)
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
                iou = bbox_iou(grid_boxes(ps, anchors[i]), tbox[i], kind=self.iou_kind)  # (n,)
                lbox = lbox + (1.0 - iou).mean()
                tobj[b, a, gj, gi] = (1.0 - self.gr) + self.gr * iou.detach().clamp(0)
                if self.nc > 1:
                    t = torch.full_like(ps[:, 5:], self.cn)  # (n, nc)
                    t[torch.arange(n, device=device), tcls[i]] = self.cp
                    lcls = lcls + self.bce_cls(ps[:, 5:], t)
            lobj = lobj + self.balance[i] * self.bce_obj(pi[..., 4], tobj)
        lbox = lbox * self.gains[0]
        lobj = lobj * self.gains[1]
        lcls = lcls * self.gains[2]
        items = {"box_loss": lbox.detach(), "obj_loss": lobj.detach(), "class_loss": lcls.detach()}
        return lbox + lobj + lcls, items
