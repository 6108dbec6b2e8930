"""Own metrics: hand-computed AP (101-point), matching rules, P/R/F1 at the best-F1 confidence,
confusion matrix counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train_val_utils.evaluation.metrics import ConfusionMatrix, ap_101, ap_per_class, match_predictions


def test_ap_101_hand_computed() -> None:
    # 3 ground truths; detections by confidence: TP, FP, TP, FP
    tp = np.array([1, 0, 1, 0], bool)
    recall = np.cumsum(tp) / 3  # 1/3, 1/3, 2/3, 2/3
    precision = np.cumsum(tp) / np.arange(1, 5)  # 1, 1/2, 2/3, 1/2
    ap, sampled = ap_101(recall, precision)
    # recall levels 0.00..0.33 -> precision 1 (34 points); 0.34..0.66 -> 2/3 (33 points); 0.67.. -> 0
    assert ap == pytest.approx((34 * 1 + 33 * 2 / 3) / 101)
    assert sampled[33] == 1 and sampled[34] == pytest.approx(2 / 3) and sampled[67] == 0


def test_ap_per_class_hand_case_and_means() -> None:
    tp = np.array([[1], [0], [1], [0], [1]], bool)
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    pred_cls = np.array([0, 0, 0, 0, 1])
    target_cls = np.array([0, 0, 0, 1, 2])  # class 2 has ground truth and no detection
    res = ap_per_class(tp, conf, pred_cls, target_cls, nc=4)  # class 3: nothing at all
    assert res.ap50[0] == pytest.approx((34 + 22) / 101)
    assert res.ap50[1] == pytest.approx(1.0) and res.ap50[2] == 0 and res.ap50[3] == 0
    assert res.n_gt.tolist() == [3, 1, 1, 0]
    m = res.mean()
    assert m["map50"] == pytest.approx(((34 + 22) / 101 + 1 + 0) / 3)  # class 3 (no GT) excluded
    assert 0 <= res.best_conf <= 1 and res.p.shape == (4,)


def test_perfect_detections_score_one() -> None:
    gt = torch.tensor([[0, 10, 10, 50, 50], [1, 60, 60, 90, 120.0]])
    det = torch.tensor([[10, 10, 50, 50, 0.9, 0], [60, 60, 90, 120, 0.8, 1.0]])
    correct = match_predictions(det, gt)
    assert correct.shape == (2, 10) and correct.all()
    res = ap_per_class(correct.numpy(), det[:, 4].numpy(), det[:, 5].numpy(), gt[:, 0].numpy(), nc=2)
    m = res.mean()
    assert m["map50"] == pytest.approx(1) and m["map"] == pytest.approx(1)
    assert m["mp"] == pytest.approx(1) and m["mr"] == pytest.approx(1)


def test_match_predictions_score_order_like_coco() -> None:
    gt = torch.tensor([[0, 0, 0, 10, 10.0]])
    det = torch.tensor([[0, 0, 10, 10, 0.5, 0],    # exact, low score
                        [0, 0, 10, 9, 0.9, 0],     # IoU 0.9, high score: COCO lets it match first
                        [0, 0, 10, 10, 0.95, 1.0]])  # wrong class
    correct = match_predictions(det, gt)
    assert correct[1].tolist() == [True] * 9 + [False]  # thresholds 0.50..0.90
    assert correct[0].tolist() == [False] * 9 + [True]  # gt still free only at 0.95
    assert not correct[2].any()
    assert match_predictions(det[:0], gt).shape == (0, 10)
    assert not match_predictions(det, gt[:0]).any()


def test_match_predictions_takes_highest_iou_free_gt() -> None:
    gt = torch.tensor([[0, 0, 0, 10, 10], [0, 1, 0, 11, 10], [0, 100, 100, 110, 110.0]])
    det = torch.tensor([[1, 0, 11, 10, 0.9, 0],     # best IoU with gt 1
                        [0, 0, 10, 10, 0.8, 0],     # then gt 0 is free for it
                        [0, 0, 10, 10, 0.7, 0.0]])  # duplicate: nothing left nearby
    correct = match_predictions(det, gt)
    assert correct[:, 0].tolist() == [True, True, False]
    assert correct[:, -1].tolist() == [True, True, False]


def test_confusion_matrix_counts() -> None:
    cm = ConfusionMatrix(nc=2, conf_thres=0.25, iou_thres=0.45)
    gt = torch.tensor([[0, 0, 0, 10, 10], [1, 20, 20, 30, 30], [1, 50, 50, 60, 60.0]])
    det = torch.tensor([[0, 0, 10, 10, 0.9, 0],       # correct class 0
                        [20, 20, 30, 30, 0.8, 0],     # class 1 predicted as 0
                        [80, 80, 90, 90, 0.7, 1],     # false positive
                        [50, 50, 60, 60, 0.1, 1.0]])  # below conf: gt counts as missed
    cm.process_batch(det, gt)
    expected = np.array([[1, 1, 0],
                         [0, 0, 1],
                         [0, 1, 0]])
    assert cm.matrix.tolist() == expected.tolist()
