"""Our own detection metrics: matching, per-class P/R/F1, AP@0.5 and AP@0.5:0.95, confusion matrix.

These complement the official COCO numbers (`coco_eval.py`): they come from the same detections, run in
milliseconds, give per-class values, the F1-optimal confidence and the curves the plots need. AP uses
COCO's 101-point interpolation and COCO's score-ordered matching, so mAPs agree with pycocotools.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from build_utils.geometry import box_iou
from train_val_utils.evaluation.thresholds import DEPLOY_CONF_THRES, DEPLOY_IOU_THRES

logger = logging.getLogger(__name__)

IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)  # COCO's 0.50:0.05:0.95
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCO's 101-point interpolation
CONF_POINTS = np.linspace(0.0, 1.0, 1000)  # confidence axis of the P/R/F1 curves


def _unique_pairs(rows: np.ndarray, cols: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pick one-to-one (row, col) pairs, highest score first: each row and each col used at most once."""
    order = np.argsort(-score, kind="stable")
    rows, cols = rows[order], cols[order]
    _, first = np.unique(cols, return_index=True)  # best pair per col
    rows, cols = rows[np.sort(first)], cols[np.sort(first)]
    _, first = np.unique(rows, return_index=True)  # then best pair per row
    return rows[np.sort(first)], cols[np.sort(first)]


def match_predictions(
    det: torch.Tensor, gt: torch.Tensor, iou_thresholds: torch.Tensor = IOU_THRESHOLDS
) -> torch.Tensor:
    """Which detections are true positives at each IoU threshold, matched the way COCO matches.

    det: (n, 6) `[x1, y1, x2, y2, score, class]`; gt: (m, 5) `[class, x1, y1, x2, y2]`, same pixels.
    Returns (n, T) bool. COCO visits detections by descending score; each takes the free same-class
    ground truth of highest IoU >= threshold. Matching highest-IoU pairs first instead would let a
    low-score box steal the ground truth of a high-score one and cost several AP points at
    conf_thres 0.001. Here each round commits, for every threshold at once, the best-scored detection
    that still has a free candidate, which yields COCO's matches in at most m rounds (m = ground truths).
    """
    n, m, n_t = det.shape[0], gt.shape[0], len(iou_thresholds)
    correct = np.zeros((n, n_t), dtype=bool)
    if n == 0 or m == 0:
        return torch.from_numpy(correct)
    order = torch.sort(det[:, 4], descending=True, stable=True).indices.cpu().numpy()
    iou = box_iou(gt[:, 1:5].float(), det[:, :4].float(), eps=1e-9)  # (m, n)
    iou = (iou * (gt[:, 0:1] == det[None, :, 5]).float()).cpu().numpy()[:, order]  # dets by score
    thr = np.minimum(iou_thresholds.cpu().numpy(), 1 - 1e-10)[:, None, None]  # (T, 1, 1)
    cand = iou[None] >= thr  # (T, m, n)
    gt_free = np.ones((n_t, m), dtype=bool)
    matched = np.zeros((n_t, n), dtype=bool)  # in score order
    rows = np.arange(n_t)
    for _ in range(m):  # each round matches one more ground truth per threshold, or stops
        avail = cand & gt_free[:, :, None] & ~matched[:, None, :]  # (T, m, n)
        has = avail.any(1)  # (T, n)
        active = has.any(1)  # (T,)
        if not active.any():
            break
        d = has.argmax(1)  # (T,) best-scored detection with a free candidate
        g = np.where(avail[rows, :, d], iou[:, d].T, -1.0).argmax(1)  # (T,) its highest-IoU free gt
        matched[rows[active], d[active]] = True
        gt_free[rows[active], g[active]] = False
    correct[order] = matched.T
    return torch.from_numpy(correct)


def ap_101(recall: np.ndarray, precision: np.ndarray) -> tuple[float, np.ndarray]:
    """COCO AP: mean of the precision envelope sampled at 101 recall points.

    recall/precision: cumulative values in confidence order. Returns (AP, envelope at RECALL_POINTS).
    """
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at this recall or beyond
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")  # first point reaching each recall level
    sampled = np.zeros_like(RECALL_POINTS)
    ok = idx < len(recall)
    sampled[ok] = envelope[idx[ok]]
    return float(sampled.mean()), sampled


@dataclass
class APResult:
    """Per-class arrays (length nc) and their means over classes that have ground truth."""

    p: np.ndarray
    r: np.ndarray
    f1: np.ndarray
    ap: np.ndarray  # (nc, T) AP per IoU threshold
    n_gt: np.ndarray
    best_conf: float
    p_curve: np.ndarray = field(repr=False)  # (nc, 1000) over CONF_POINTS
    r_curve: np.ndarray = field(repr=False)
    f1_curve: np.ndarray = field(repr=False)
    pr_curve: np.ndarray = field(repr=False)  # (nc, 101) precision over RECALL_POINTS at IoU 0.5

    @property
    def ap50(self) -> np.ndarray:
        return self.ap[:, 0]

    @property
    def ap50_95(self) -> np.ndarray:
        return self.ap.mean(1)

    def mean(self) -> dict[str, float]:
        """mp, mr, map50, map over classes with at least one ground-truth box."""
        seen = self.n_gt > 0
        if not seen.any():
            return {"mp": 0.0, "mr": 0.0, "map50": 0.0, "map": 0.0}
        return {"mp": float(self.p[seen].mean()), "mr": float(self.r[seen].mean()),
                "map50": float(self.ap50[seen].mean()), "map": float(self.ap50_95[seen].mean())}


def ap_per_class(
    tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray, nc: int
) -> APResult:
    """Per-class P, R, F1, AP from matched detections of a whole dataset.

    tp: (N, T) bool from `match_predictions`; conf, pred_cls: (N,); target_cls: (M,) of all ground truth.
    P, R and F1 are read at one confidence for all classes: the one maximising mean F1 (`best_conf`),
    which is the threshold a deployment would pick.
    """
    tp = np.asarray(tp, dtype=bool)
    tp = tp[:, None] if tp.ndim == 1 else tp  # (N, T)
    n_t = tp.shape[1]
    order = np.argsort(-conf, kind="stable")
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order].astype(int)
    n_gt = np.bincount(target_cls.astype(int), minlength=nc)[:nc]
    ap = np.zeros((nc, n_t))
    p_curve, r_curve = np.zeros((nc, len(CONF_POINTS))), np.zeros((nc, len(CONF_POINTS)))
    pr_curve = np.zeros((nc, len(RECALL_POINTS)))
    for c in np.unique(pred_cls):  # loop over classes; each is vectorised over its detections
        if c >= nc or n_gt[c] == 0:
            continue
        sel = pred_cls == c
        tpc = tp[sel].cumsum(0)  # (n_c, T)
        fpc = (~tp[sel]).cumsum(0)
        recall = tpc / n_gt[c]
        precision = tpc / (tpc + fpc)
        for t in range(n_t):
            ap[c, t], sampled = ap_101(recall[:, t], precision[:, t])
            if t == 0:
                pr_curve[c] = sampled
        # conf is decreasing; np.interp needs increasing x, hence the negations
        r_curve[c] = np.interp(-CONF_POINTS, -conf[sel], recall[:, 0], left=0)
        p_curve[c] = np.interp(-CONF_POINTS, -conf[sel], precision[:, 0], left=1)
    f1_curve = 2 * p_curve * r_curve / (p_curve + r_curve + 1e-16)
    seen = n_gt > 0
    best = int(f1_curve[seen].mean(0).argmax()) if seen.any() else 0
    return APResult(p=p_curve[:, best], r=r_curve[:, best], f1=f1_curve[:, best], ap=ap, n_gt=n_gt,
                    best_conf=float(CONF_POINTS[best]), p_curve=p_curve, r_curve=r_curve,
                    f1_curve=f1_curve, pr_curve=pr_curve)


class ConfusionMatrix:
    """(nc+1) x (nc+1) counts, rows = predicted class, columns = true class; index nc = background.

    A detection above `conf_thres` matched (IoU >= `iou_thres`, any class) to a ground truth counts at
    [pred, true]; an unmatched ground truth at [background, true]; an unmatched detection at
    [pred, background].
    """

    def __init__(self, nc: int, conf_thres: float = DEPLOY_CONF_THRES,
                 iou_thres: float = DEPLOY_IOU_THRES) -> None:
        self.nc, self.conf_thres, self.iou_thres = nc, conf_thres, iou_thres
        self.matrix = np.zeros((nc + 1, nc + 1), dtype=np.int64)

    def process_batch(self, det: torch.Tensor, gt: torch.Tensor) -> None:
        """det: (n, 6) `[x1, y1, x2, y2, score, class]`; gt: (m, 5) `[class, x1, y1, x2, y2]`."""
        det = det[det[:, 4] > self.conf_thres]
        det_cls = det[:, 5].long().cpu().numpy()
        gt_cls = gt[:, 0].long().cpu().numpy()
        g = d = np.zeros(0, dtype=int)
        if det.shape[0] and gt.shape[0]:
            iou = box_iou(gt[:, 1:5].float(), det[:, :4].float(), eps=1e-9).cpu().numpy()  # (m, n)
            g, d = np.nonzero(iou >= self.iou_thres)
            if g.size:
                g, d = _unique_pairs(g, d, iou[g, d])
        np.add.at(self.matrix, (det_cls[d], gt_cls[g]), 1)
        np.add.at(self.matrix, (np.full(len(gt_cls) - len(g), self.nc), np.delete(gt_cls, g)), 1)
        np.add.at(self.matrix, (np.delete(det_cls, d), np.full(len(det_cls) - len(d), self.nc)), 1)
