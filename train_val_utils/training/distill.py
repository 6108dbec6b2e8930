"""Knowledge distillation from a teacher model (`train.py --teacher PATH --distill W`).

Fine-tuning a pruned model (`data/scripts/prune.py`) from its own weights relearns what pruning
removed from the ground-truth labels alone. An unpruned model still knows it: its outputs on every grid
cell, not only the few matched to a label, say where objects are, how sure it is and which class it
would pick. Training the student to reproduce them as well (output distillation, as the classic YOLO
pruning forks do for their fine-tuning step) recovers more in the same number of epochs: on coco128 the
weights the sparsity run started from, as teacher, added 0.012 mAP@0.5:0.95 on average over three seeds
(the sparse model itself is a poor teacher: `--sr-keep` leaves it degraded until the fine-tune).

The teacher must predict on the same grids as the student: same YOLO layers (count, anchors, strides)
and the same class count, which every cfg written by `prune.py` keeps. The distillation terms use the
run's loss gains, so W = 1 weighs them like the label terms:
- objectness: BCE of the student's logit against the teacher's probability, on every cell;
- classes: BCE against the teacher's class probabilities, weighted per cell by the teacher's
  objectness (a background cell's class scores say nothing);
- box: 1 - GIoU between the student's and the teacher's box in each cell, weighted the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from build_utils.errors import UserError
from build_utils.geometry import bbox_iou, grid_boxes
from build_utils.torch_utils import unwrap_model
from modules.loading import load_model

logger = logging.getLogger(__name__)

__all__ = ["Distiller", "load_teacher"]


def _head_signature(model: nn.Module) -> list[tuple[int, int, tuple[float, ...]]]:
    """(stride, nc, anchors) of every YOLO layer: what the student's and teacher's grids must share."""
    return [(int(y.stride), int(y.nc), tuple(float(v) for v in y.anchors.flatten().tolist()))
            for y in unwrap_model(model).yolo_modules()]


def load_teacher(path: str | Path, cfg: str | Path | None, student: nn.Module,
                 device: torch.device, channels_last: bool) -> nn.Module:
    """The teacher as it runs in every training step: frozen, batch norm folded, eval mode, on `device`.

    `path` is a `.pt` checkpoint (its cfg inside) or Darknet `.weights` with `cfg`. A teacher whose YOLO
    layers differ from the student's is a user error naming both.
    """
    if not Path(path).is_file():
        raise UserError(f"--teacher {path}: file not found; pass the model to distil from (a .pt, or Darknet "
                        ".weights with --teacher-cfg)")
    if cfg is not None and Path(path).suffix == ".pt":
        raise UserError(f"--teacher-cfg {cfg} with --teacher {path}: a .pt carries its own cfg; drop "
                        "--teacher-cfg (it is for Darknet .weights)")
    teacher, _ = load_model(path, cfg, device=device, fuse=True)
    want, got = _head_signature(student), _head_signature(teacher)
    if want != got:
        raise UserError(f"--teacher {path}: its YOLO layers (stride, classes, anchors) {got} differ from the "
                        f"student's {want}; distill from the weights the pruned model descends from, or one "
                        "trained on the same classes with the same anchors")
    teacher.requires_grad_(False)
    if channels_last:
        teacher.to(memory_format=torch.channels_last)
    logger.info("distilling from %s (%d YOLO layers, %d classes)", path, len(got), got[0][1])
    return teacher


@dataclass
class Distiller:
    """The distillation step of a run: `teacher_maps(imgs)` under the step's autocast, then
    `add_to(loss, items, preds, teacher_maps)` outside it, in float32.

    `anchors` are the YOLO layers' anchors in grid units, one (na, 2) tensor per layer; `gains` the run
    loss's (box, obj, cls) gains (`YoloLoss.gains`); `weight` is `--distill`.
    """

    teacher: nn.Module
    anchors: list[torch.Tensor]
    gains: tuple[float, float, float]
    weight: float = 1.0

    @classmethod
    def for_student(cls, teacher: nn.Module, student: nn.Module, gains: tuple[float, float, float],
                    weight: float) -> Distiller:
        anchors = [y.anchors.float() / y.stride for y in unwrap_model(student).yolo_modules()]
        return cls(teacher, anchors, gains, weight)

    @torch.no_grad()
    def teacher_maps(self, imgs: torch.Tensor) -> list[torch.Tensor]:
        """The teacher's raw YOLO maps for `imgs`, list of (bs, na, ny, nx, 5+nc)."""
        return self.teacher(imgs)[1]

    def terms(self, preds: list[torch.Tensor], teacher_maps: list[torch.Tensor]
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Weighted (box, obj, cls) distillation terms, 0-d float32 tensors.

        Box: 1 - GIoU between the student's and the teacher's box in every cell, bounded like the label
        term (a squared error of log-sizes is not, and diverged in a 20-epoch fine-tune)."""
        box = obj = cls = torch.zeros((), device=preds[0].device)
        for student, teacher, anchors in zip(preds, teacher_maps, self.anchors):
            s, t = student.float(), teacher.float()  # (bs, na, ny, nx, 5+nc)
            t_obj = t[..., 4].sigmoid()  # (bs, na, ny, nx)
            cell_weight = (t_obj / t_obj.sum().clamp(min=1.0)).reshape(-1)  # cells the teacher calls objects
            obj = obj + F.binary_cross_entropy_with_logits(s[..., 4], t_obj)
            cell_anchors = anchors[None, :, None, None, :]  # (1, na, 1, 1, 2) grid units
            student_boxes = grid_boxes(s, cell_anchors).reshape(-1, 4)  # (bs*na*ny*nx, 4)
            giou = bbox_iou(student_boxes, grid_boxes(t, cell_anchors).reshape(-1, 4), kind="giou")
            box = box + (cell_weight * (1.0 - giou)).sum()
            if s.shape[-1] > 6:  # nc > 1, as the label loss
                bce = F.binary_cross_entropy_with_logits(s[..., 5:], t[..., 5:].sigmoid(), reduction="none")
                cls = cls + (cell_weight * bce.mean(-1).reshape(-1)).sum()
        g_box, g_obj, g_cls = self.gains
        return self.weight * g_box * box, self.weight * g_obj * obj, self.weight * g_cls * cls

    def add_to(self, loss: torch.Tensor, items: dict[str, torch.Tensor], preds: list[torch.Tensor],
               teacher_maps: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The label loss plus the distillation terms; each term joins its label term in `items`, so the
        progress bar and results.csv show box/obj/cls as the student trains on them."""
        box, obj, cls = self.terms(preds, teacher_maps)
        items = {"box_loss": items["box_loss"] + box.detach(), "obj_loss": items["obj_loss"] + obj.detach(),
                 "class_loss": items["class_loss"] + cls.detach()}
        return loss + box + obj + cls, items
