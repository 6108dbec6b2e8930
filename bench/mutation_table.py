"""Curated mutations of the numerical core, and the test files that cover each module.

`bench/mutation_run.py` applies each mutation alone to a copy of the repository and runs the covering
tests; a mutation must make at least one of them fail ("killed"). Every mutation is a plausible
one-line mistake: an off-by-one rounding, a swapped axis or operand, a wrong constant (Darknet's
epsilon, the leaky slope, the 1% label tolerance), a strict comparison where the code means `>=`.

Sites are exact source snippets, never line numbers, so edits elsewhere in a file do not move them;
a snippet that is missing or not unique stops the run before anything executes, naming the mutant.
When you change a line a snippet names, update the snippet here (or drop the mutant if the mistake
can no longer be made). `accepted` marks a mutant known to survive, with the reason it is equivalent
or not worth a test; it still counts as a survivor in the rate.
"""

from __future__ import annotations

from dataclasses import dataclass

# module -> test files that cover it, most targeted (and fastest to fail) first; run with `-x -q`
TESTS: dict[str, tuple[str, ...]] = {
    "train_val_utils/loss.py": ("tests/test_exact_values.py", "tests/test_loss.py",
                                "tests/test_loss_parity.py"),
    "build_utils/geometry.py": ("tests/test_geometry.py", "tests/test_exact_values.py", "tests/test_loss.py",
                                "tests/test_nms.py", "tests/test_augment.py", "tests/test_metrics.py"),
    "train_val_utils/evaluation/nms.py": ("tests/test_nms.py", "tests/test_exact_values.py",
                                          "tests/test_tta_merge.py"),
    "train_val_utils/evaluation/metrics.py": ("tests/test_metrics.py", "tests/test_exact_values.py",
                                              "tests/test_coco_eval.py"),
    "train_val_utils/evaluation/coco_eval.py": ("tests/test_coco_eval.py", "tests/test_exact_values.py"),
    "build_utils/dataset/augment.py": ("tests/test_augment.py", "tests/test_exact_values.py",
                                       "tests/test_geometry.py", "tests/test_datasets.py"),
    "build_utils/dataset/labels.py": ("tests/test_exact_values.py", "tests/test_datasets.py"),
    "modules/model.py": ("tests/test_exact_values.py", "tests/test_model.py", "tests/test_weights.py",
                         "tests/test_loss_parity.py"),
    "modules/layers.py": ("tests/test_exact_values.py", "tests/test_model.py", "tests/test_weights.py"),
    "modules/yolo_layer.py": ("tests/test_model.py", "tests/test_weights.py"),
    "modules/weights.py": ("tests/test_weights.py",),
    "train_val_utils/training/optim.py": ("tests/test_ema_optim.py", "tests/test_accumulation.py"),
    "train_val_utils/training/ema.py": ("tests/test_ema_optim.py", "tests/test_exact_values.py"),
    "train_val_utils/engine.py": ("tests/test_accumulation.py",),
    "train_val_utils/trainer.py": ("tests/test_accumulation.py",),
}


@dataclass(frozen=True)
class Mutant:
    name: str  # unique, `area-what`
    path: str  # repository-relative source file (a key of TESTS)
    find: str  # exact snippet, present once in the file
    replace: str
    accepted: str = ""  # why a survivor is equivalent or accepted; empty: it must be killed


LOSS = "train_val_utils/loss.py"
GEOM = "build_utils/geometry.py"
NMS = "train_val_utils/evaluation/nms.py"
METRICS = "train_val_utils/evaluation/metrics.py"
COCO = "train_val_utils/evaluation/coco_eval.py"
AUG = "build_utils/dataset/augment.py"
LABELS = "build_utils/dataset/labels.py"
MODEL = "modules/model.py"
LAYERS = "modules/layers.py"
YOLO = "modules/yolo_layer.py"
WEIGHTS = "modules/weights.py"
OPTIM = "train_val_utils/training/optim.py"
EMA = "train_val_utils/training/ema.py"
ENGINE = "train_val_utils/engine.py"
TRAINER = "train_val_utils/trainer.py"

MUTANTS: tuple[Mutant, ...] = (
    # ---- loss
    Mutant("loss-focal-ignores-fl-gamma", LOSS, "FocalLoss(bce, gamma) if gamma > 0",
           "FocalLoss(bce) if gamma > 0"),
    Mutant("loss-focal-alpha-swapped", LOSS, "alpha_t = true * self.alpha + (1 - true) * (1 - self.alpha)",
           "alpha_t = true * (1 - self.alpha) + (1 - true) * self.alpha"),
    Mutant("loss-focal-pt-flipped", LOSS, "p_t = true * prob + (1 - true) * (1 - prob)",
           "p_t = true * (1 - prob) + (1 - true) * prob"),
    Mutant("loss-objectness-gr-swapped", LOSS, "(1.0 - self.gr) + self.gr * iou.detach().clamp(0)",
           "self.gr + (1.0 - self.gr) * iou.detach().clamp(0)"),
    Mutant("loss-obj-gain-not-scaled-by-size", LOSS, "h.obj * img_size / 320.0", "h.obj"),
    Mutant("loss-cls-gain-not-scaled-by-nc", LOSS, "h.cls * self.nc / 80.0", "h.cls"),
    Mutant("loss-anchors-in-pixels", LOSS, "anchors = yolo.anchors.to(targets.device).float() / yolo.stride",
           "anchors = yolo.anchors.to(targets.device).float()"),
    Mutant("loss-grid-row-column-swapped", LOSS, "indices.append((b, a, gj, gi))",
           "indices.append((b, a, gi, gj))"),
    Mutant("loss-target-offset-not-in-cell", LOSS, "torch.cat((gxy - gij, gwh), dim=1)",
           "torch.cat((gxy, gwh), dim=1)"),
    Mutant("loss-smooth-bce-full-eps", LOSS, "return 1.0 - 0.5 * eps, 0.5 * eps", "return 1.0 - eps, eps"),
    Mutant("loss-balance-ignored", LOSS, "lobj = lobj + self.balance[i] * self.bce_obj(",
           "lobj = lobj + self.bce_obj("),
    Mutant("loss-box-sum-not-mean", LOSS, "lbox = lbox + (1.0 - iou).mean()",
           "lbox = lbox + (1.0 - iou).sum()"),
    Mutant("loss-class-target-ignores-smoothing", LOSS,
           "t[torch.arange(n, device=device), tcls[i]] = self.cp",
           "t[torch.arange(n, device=device), tcls[i]] = 1.0"),
    # ---- geometry
    Mutant("geometry-scale-coords-pad-h-rounded-up", GEOM, "pad_h = round((img1_shape[0] - new_h) / 2 - 0.1)",
           "pad_h = round((img1_shape[0] - new_h) / 2 + 0.1)"),
    Mutant("geometry-scale-coords-pad-w-rounded-up", GEOM, "pad_w = round((img1_shape[1] - new_w) / 2 - 0.1)",
           "pad_w = round((img1_shape[1] - new_w) / 2 + 0.1)"),
    Mutant("geometry-scale-coords-ratio-axes-swapped", GEOM, "(gain_h, gain_w), (pad_w, pad_h) = ratio_pad",
           "(gain_w, gain_h), (pad_w, pad_h) = ratio_pad"),
    Mutant("geometry-box-iou-union-keeps-intersection", GEOM,
           "union = box_area(box1)[:, None] + box_area(box2)[None, :] - inter",
           "union = box_area(box1)[:, None] + box_area(box2)[None, :]"),
    Mutant("geometry-giou-over-union", GEOM, "return iou - (c_area - union) / c_area",
           "return iou - (c_area - union) / union"),
    Mutant("geometry-diou-centre-distance-halved", GEOM, "(b2y1 + b2y2 - b1y1 - b1y2) ** 2) / 4",
           "(b2y1 + b2y2 - b1y1 - b1y2) ** 2) / 2"),
    Mutant("geometry-ciou-alpha-sign", GEOM, "alpha = v / (1 - iou + v + eps)",
           "alpha = v / (1 + iou + v + eps)"),
    Mutant("geometry-wh-iou-union-keeps-intersection", GEOM,
           "return inter / (wh1.prod(2) + wh2.prod(2) - inter)",
           "return inter / (wh1.prod(2) + wh2.prod(2))"),
    Mutant("geometry-clip-x-to-height", GEOM, "y[..., 0:4:2] = y[..., 0:4:2].clamp(0, w)",
           "y[..., 0:4:2] = y[..., 0:4:2].clamp(0, h)"),
    Mutant("geometry-xywhn-pad-axes-swapped", GEOM, "+ _per_coord(corners, padw, padh)",
           "+ _per_coord(corners, padh, padw)"),
    # ---- NMS
    Mutant("nms-suppresses-at-threshold", NMS, "suppressed[rest] |= (iou > iou_thres)",
           "suppressed[rest] |= (iou >= iou_thres)"),
    Mutant("nms-rounds-suppress-at-threshold", NMS, "remaining = remaining[~is_head & ~(iou > iou_thres)]",
           "remaining = remaining[~is_head & ~(iou >= iou_thres)]"),
    Mutant("nms-unstable-score-order", NMS,
           "order = torch.sort(scores, descending=True, stable=True).indices\n    b =",
           "order = torch.sort(scores, descending=True).indices\n    b ="),
    Mutant("nms-score-without-objectness", NMS, "scores = x[:, 5:] * x[:, 4:5]", "scores = x[:, 5:]"),
    Mutant("nms-class-offset-dropped", NMS, "shifted = boxes + cls.to(boxes.dtype)[:, None] * MAX_WH",
           "shifted = boxes",
           accepted="equivalent without torchvision: the pure-torch kernel groups by class itself; the "
                    "offset only separates classes for torchvision's single-group kernel, where "
                    "test_nms.py's class-aware test kills it"),
    Mutant("nms-max-det-ignored", NMS, "agnostic, max_keep=max_det)", "agnostic, max_keep=None)"),
    Mutant("nms-merge-weights-without-score", NMS,
           "weights = torch.where(owner, iou.nan_to_num(1.0), 0.0) * scores[None, :]",
           "weights = torch.where(owner, iou.nan_to_num(1.0), 0.0)"),
    # ---- metrics and COCO eval
    Mutant("metrics-match-iou-strictly-above", METRICS, "cand = iou[None] >= thr", "cand = iou[None] > thr"),
    Mutant("metrics-ap-without-envelope", METRICS, "envelope = np.maximum.accumulate(precision[::-1])[::-1]",
           "envelope = precision"),
    Mutant("metrics-ap-recall-search-right", METRICS, 'np.searchsorted(recall, RECALL_POINTS, side="left")',
           'np.searchsorted(recall, RECALL_POINTS, side="right")'),
    Mutant("metrics-recall-off-by-one", METRICS, "recall = tpc / n_gt[c]", "recall = tpc / (n_gt[c] + 1)"),
    Mutant("metrics-f1-without-2", METRICS, "f1_curve = 2 * p_curve * r_curve",
           "f1_curve = p_curve * r_curve"),
    Mutant("metrics-iou-thresholds-nine", METRICS, "torch.linspace(0.5, 0.95, 10)",
           "torch.linspace(0.5, 0.95, 9)"),
    Mutant("metrics-confusion-background-axes-swapped", METRICS,
           "(np.full(len(gt_cls) - len(g), self.nc), np.delete(gt_cls, g))",
           "(np.delete(gt_cls, g), np.full(len(gt_cls) - len(g), self.nc))"),
    Mutant("coco-gt-corner-not-halved", COCO, "xywh[:, :2] -= xywh[:, 2:] / 2", "xywh[:, :2] -= xywh[:, 2:]"),
    Mutant("coco-detections-keep-corners", COCO, "xywh[:, 2:] -= xywh[:, :2]", "xywh[:, 2:] -= 0"),
    Mutant("coco-gt-area-width-squared", COCO, '"area": box[2] * box[3]', '"area": box[2] * box[2]'),
    # ---- augment, letterbox, labels
    Mutant("letterbox-top-bottom-rounding-swapped", AUG,
           "top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))",
           "top, bottom = int(round(dh + 0.1)), int(round(dh - 0.1))"),
    Mutant("letterbox-left-right-rounding-swapped", AUG,
           "left, right = int(round(dw - 0.1)), int(round(dw + 0.1))",
           "left, right = int(round(dw + 0.1)), int(round(dw - 0.1))"),
    Mutant("letterbox-pad-returned-as-top-left", AUG, "return img, ratio, (float(left), float(top))",
           "return img, ratio, (float(top), float(left))"),
    Mutant("letterbox-gain-max-not-min", AUG, "r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])",
           "r = max(new_shape[0] / shape[0], new_shape[1] / shape[1])"),
    Mutant("letterbox-auto-height-from-width", AUG, "dw, dh = dw % stride, dh % stride",
           "dw, dh = dw % stride, dw % stride"),
    Mutant("labels-tolerance-two-percent", LABELS, "TOLERANCE = 0.01", "TOLERANCE = 0.02"),
    Mutant("labels-not-clipped", LABELS,
           "lab[:, 1:5] = xyxy2xywh(clip_coords(xywh2xyxy(lab[:, 1:5]), (1, 1)))",
           "lab[:, 1:5] = lab[:, 1:5]"),
    Mutant("labels-edges-use-full-size", LABELS,
           "lo, hi = min(cx - w / 2, cy - h / 2), max(cx + w / 2, cy + h / 2)",
           "lo, hi = min(cx - w, cy - h), max(cx + w, cy + h)"),
    Mutant("augment-flip-lr-keeps-labels", AUG, "labels[:, 1] = 1 - labels[:, 1]",
           "labels[:, 1] = labels[:, 1]"),
    Mutant("augment-candidates-width-twice", AUG, "(w2 > wh_thr) & (h2 > wh_thr)",
           "(w2 > wh_thr) & (w2 > wh_thr)"),
    Mutant("augment-affine-area-scale-not-sqrt", AUG, "s = math.sqrt(abs(np.linalg.det(matrix[:, :2])))",
           "s = abs(np.linalg.det(matrix[:, :2]))"),
    # ---- model layers and weights
    Mutant("model-bn-epsilon-pytorch-default", MODEL, "BN_EPS = 1e-6", "BN_EPS = 1e-5"),
    Mutant("model-leaky-slope-pytorch-default", LAYERS, "nn.LeakyReLU(0.1, inplace=True)",
           "nn.LeakyReLU(0.01, inplace=True)"),
    Mutant("model-leaky-slope-ten-times", LAYERS, "nn.LeakyReLU(0.1, inplace=True)",
           "nn.LeakyReLU(1.0, inplace=True)"),
    Mutant("model-maxpool-pad-on-the-left", LAYERS, "self.left = (size - 1) // 2", "self.left = size // 2"),
    Mutant("model-maxpool-repeats-first-edge", LAYERS,
           "parts += [x.narrow(dim, x.shape[dim] - 1, 1)] * after",
           "parts += [x.narrow(dim, 0, 1)] * after"),
    Mutant("model-route-group-always-first", LAYERS, "p.chunk(self.groups, dim=1)[self.group_id]",
           "p.chunk(self.groups, dim=1)[0]"),
    Mutant("model-upsample-bilinear", MODEL, 'mode="nearest")', 'mode="bilinear")'),
    Mutant("model-fuse-mean-sign", MODEL, "(base - bn.running_mean) * scale + bn.bias",
           "(base + bn.running_mean) * scale + bn.bias"),
    Mutant("model-objectness-bias-init", MODEL, "bias[:, 4] = -4.5", "bias[:, 4] = -4.0"),
    Mutant("yolo-grid-x-y-swapped", YOLO, "grid = torch.stack((xs, ys), dim=-1)",
           "grid = torch.stack((ys, xs), dim=-1)"),
    Mutant("yolo-wh-without-anchors", YOLO, "wh = q[..., 2:4].exp() * anchor_wh", "wh = q[..., 2:4].exp()"),
    Mutant("weights-bn-gamma-beta-order", WEIGHTS,
           "[bn.bias, bn.weight, bn.running_mean, bn.running_var, conv.weight]",
           "[bn.weight, bn.bias, bn.running_mean, bn.running_var, conv.weight]"),
    Mutant("weights-seen-width-rule", WEIGHTS, "major * 10 + minor >= 2", "major * 10 + minor > 2"),
    # ---- warm-up, accumulation, EMA, schedule
    Mutant("train-accumulate-floor", TRAINER, "self.accumulate = max(round(run.nbs / run.batch_size), 1)",
           "self.accumulate = max(run.nbs // run.batch_size, 1)"),
    Mutant("train-loss-scale-without-batch", ENGINE,
           "loss * (imgs.shape[0] * dist_info.world_size / schedule.nbs)",
           "loss * (dist_info.world_size / schedule.nbs)"),
    Mutant("train-step-rule-strict", ENGINE, "if i - last_step >= warmup_accumulate(",
           "if i - last_step > warmup_accumulate("),
    Mutant("optim-warmup-accumulate-floor", OPTIM,
           "return max(1, round(_interp(ni, n_warmup, 1.0, float(accumulate))))",
           "return max(1, int(_interp(ni, n_warmup, 1.0, float(accumulate))))"),
    Mutant("optim-step-count-strict", OPTIM, "if i - last >= warmup_accumulate(ni, n_warmup, accumulate)",
           "if i - last > warmup_accumulate(ni, n_warmup, accumulate)"),
    Mutant("optim-warmup-floor-as-ceiling", OPTIM,
           "n = max(round(warmup_epochs * n_batches_per_epoch), WARMUP_MIN_ITERATIONS)",
           "n = min(round(warmup_epochs * n_batches_per_epoch), WARMUP_MIN_ITERATIONS)"),
    Mutant("optim-warmup-bias-start-swapped", OPTIM,
           'start = h.warmup_bias_lr if g.get("is_bias", False) else 0.0',
           'start = 0.0 if g.get("is_bias", False) else h.warmup_bias_lr'),
    Mutant("optim-warmup-momentum-reversed", OPTIM,
           "m = _interp(ni, n_warmup, h.warmup_momentum, h.momentum)",
           "m = _interp(ni, n_warmup, h.momentum, h.warmup_momentum)"),
    Mutant("optim-cosine-without-final-lr", OPTIM, "* (1 - lrf) + lrf", "* (1 - lrf)"),
    Mutant("optim-norm-weights-decayed", OPTIM, '{"params": norm, "weight_decay": 0.0',
           '{"params": norm, "weight_decay": h.weight_decay'),
    Mutant("ema-decay-without-ramp", EMA, "return self.decay * (1 - math.exp(-self.updates / self.tau))",
           "return self.decay"),
    Mutant("ema-lerp-weight-inverted", EMA, "v.lerp_(src.to(v.dtype), 1 - d)", "v.lerp_(src.to(v.dtype), d)"),
)
