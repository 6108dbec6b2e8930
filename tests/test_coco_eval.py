"""COCO evaluation: ground truth from YOLO labels (cached), our AP agreeing with pycocotools, and
faster-coco-eval giving identical stats when installed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from build_utils.errors import DatasetError
from train_val_utils.evaluation.coco_eval import (
    coco_gt_from_labels,
    detections_to_coco,
    evaluate_coco,
    image_ids_from_json,
)
from train_val_utils.evaluation.metrics import ap_per_class, match_predictions


def synthetic_case(n_img: int = 40, nc: int = 5, seed: int = 0):
    """Labels (normalised xywh) and noisy detections (xyxy pixels, <= 100 per image) with known sizes."""
    rng = np.random.default_rng(seed)
    shapes = rng.integers(200, 640, size=(n_img, 2))
    labels, dets = [], []
    for h, w in shapes:
        n = int(rng.integers(0, 8))
        cxcy = rng.uniform(0.2, 0.8, (n, 2))
        wh = rng.uniform(0.05, 0.35, (n, 2))
        lab = np.concatenate([rng.integers(0, nc, (n, 1)), cxcy, wh], 1).astype(np.float32)
        labels.append(lab)
        px = lab[:, 1:] * np.array([w, h, w, h], np.float32)
        xyxy = np.concatenate([px[:, :2] - px[:, 2:] / 2, px[:, :2] + px[:, 2:] / 2], 1)
        jitter = xyxy + rng.normal(0, 4, xyxy.shape)  # near-hits at various IoUs
        cls = lab[:, :1].copy()
        cls[rng.random(n) < 0.15] = rng.integers(0, nc)  # some wrong classes
        fp = rng.uniform(0, min(h, w) * 0.7, (int(rng.integers(0, 6)), 2))
        fp = np.concatenate([fp, fp + rng.uniform(10, 80, fp.shape)], 1)
        boxes = np.concatenate([jitter, fp])
        scores = rng.uniform(0.05, 1, (len(boxes), 1))
        classes = np.concatenate([cls, rng.integers(0, nc, (len(fp), 1))])
        dets.append(np.concatenate([boxes, scores, classes], 1))
    return [f"img{i}.jpg" for i in range(n_img)], labels, shapes, dets


def our_map(labels, shapes, dets, nc):
    stats = []
    for lab, (h, w), det in zip(labels, shapes, dets):
        px = lab[:, 1:] * np.array([w, h, w, h])
        gt = np.concatenate([lab[:, :1], px[:, :2] - px[:, 2:] / 2, px[:, :2] + px[:, 2:] / 2], 1)
        d = torch.tensor(det, dtype=torch.float32)
        correct = match_predictions(d, torch.tensor(gt, dtype=torch.float32)).numpy()
        stats.append((correct, det[:, 4], det[:, 5]))
    tp, conf, cls = (np.concatenate(x) for x in zip(*stats))
    return ap_per_class(tp, conf, cls, np.concatenate([lab[:, 0] for lab in labels]), nc).mean()


def test_our_ap_agrees_with_pycocotools() -> None:
    files, labels, shapes, dets = synthetic_case()
    gt = coco_gt_from_labels(files, labels, shapes)
    coco_dets = [r for i, d in enumerate(dets) for r in detections_to_coco(d, i)]
    stats, text = evaluate_coco(gt, coco_dets, backend="pycocotools")
    ours = our_map(labels, shapes, dets, nc=5)
    assert stats.shape == (12,) and "Average Precision" in text
    assert 0.2 < stats[1] < 0.95  # a non-trivial case
    assert abs(ours["map50"] - stats[1]) < 0.01
    assert abs(ours["map"] - stats[0]) < 0.01


def test_faster_coco_eval_identical() -> None:
    pytest.importorskip("faster_coco_eval", reason="faster-coco-eval not installed (extra 'fast-eval')")
    files, labels, shapes, dets = synthetic_case(seed=1)
    gt = coco_gt_from_labels(files, labels, shapes)
    coco_dets = [r for i, d in enumerate(dets) for r in detections_to_coco(d, i)]
    slow, _ = evaluate_coco(gt, coco_dets, backend="pycocotools")
    fast, _ = evaluate_coco(gt, coco_dets, backend="faster")
    np.testing.assert_allclose(fast, slow, atol=1e-9)


def test_gt_cache_and_category_ids(tmp_path) -> None:
    files, labels, shapes, _ = synthetic_case(n_img=5)
    cats = [1, 2, 3, 5, 7]
    gt = coco_gt_from_labels(files, labels, shapes, cats, cache_dir=tmp_path)
    cached = list(tmp_path.glob("coco_gt_*.json"))
    assert len(cached) == 1
    assert coco_gt_from_labels(files, labels, shapes, cats, cache_dir=tmp_path) == gt
    assert {a["category_id"] for a in gt["annotations"]} <= set(cats)
    assert gt["images"][2] == {"id": 2, "file_name": "img2.jpg", "height": int(shapes[2][0]),
                               "width": int(shapes[2][1])}
    labels[0] = labels[0][:0]  # a changed label set gets its own cache entry
    coco_gt_from_labels(files, labels, shapes, cats, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("coco_gt_*.json"))) == 2


def test_image_ids_from_json_and_empty_detections(tmp_path) -> None:
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": [{"id": 42, "file_name": "a/b.jpg"}], "annotations": [],
                                "categories": [{"id": 1}]}))
    assert image_ids_from_json(path, ["/x/b.jpg"]) == [42]
    with pytest.raises(DatasetError, match="c.jpg"):
        image_ids_from_json(path, ["/x/c.jpg"])
    stats, _ = evaluate_coco(path, [])
    assert stats.tolist() == [0.0] * 12
