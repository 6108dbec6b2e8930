"""Seconds for our metrics and for the COCO evaluation on N images x D detections (synthetic, seeded).

    python bench/bench_eval.py                      # 500 images x 100 detections, 80 classes
    python bench/bench_eval.py --images 5000 --repeats 1

Our metrics = per-image COCO-order matching at 10 IoU thresholds + per-class AP/P/R/F1 + confusion matrix.
COCO = building the ground truth from labels + pycocotools (and faster-coco-eval when installed).
Also times non_max_suppression on a yolov3-spp-sized prediction at conf 0.001.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time

import numpy as np
import torch

from build_utils.cli import ArgumentParser, run_cli, setup_logging

logger = logging.getLogger("bench_eval")


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--dets", type=int, default=100, help="detections per image")
    p.add_argument("--classes", type=int, default=80)
    p.add_argument("--repeats", type=int, default=3, help="report the median of this many runs")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    return p


def synthetic(n_img: int, n_det: int, nc: int, seed: int = 0) -> tuple[list, list, np.ndarray, list]:
    """YOLO labels, image shapes and (n_det, 6) xyxy detections near them (plus false positives)."""
    rng = np.random.default_rng(seed)
    shapes = rng.integers(300, 640, size=(n_img, 2))
    labels, dets = [], []
    for h, w in shapes:
        n = int(rng.integers(1, 15))
        lab = np.concatenate([rng.integers(0, nc, (n, 1)), rng.uniform(0.2, 0.8, (n, 2)),
                              rng.uniform(0.05, 0.3, (n, 2))], 1).astype(np.float32)
        labels.append(lab)
        px = lab[np.arange(n_det) % n, 1:] * np.array([w, h, w, h])  # cycle over the objects
        xyxy = np.concatenate([px[:, :2] - px[:, 2:] / 2, px[:, :2] + px[:, 2:] / 2], 1)
        xyxy += rng.normal(0, 0.15, xyxy.shape) * px[:, 2:].repeat(2, 1)
        xyxy = np.concatenate([np.minimum(xyxy[:, :2], xyxy[:, 2:]), np.maximum(xyxy[:, :2], xyxy[:, 2:])], 1)
        cls = np.where(rng.random(n_det) < 0.7, lab[np.arange(n_det) % n, 0], rng.integers(0, nc, n_det))
        dets.append(np.concatenate([xyxy, rng.uniform(0.001, 1, (n_det, 1)), cls[:, None]], 1))
    return [f"{i:06d}.jpg" for i in range(n_img)], labels, shapes, dets


def fake_predictions(bs: int, nc: int, objects: int = 20, seed: int = 0) -> torch.Tensor:
    """(bs, N, 5+nc) like a trained yolov3-spp at 416: every anchor votes, noisily, for one of `objects`
    objects, with low objectness and class scores except near the truth."""
    gen = torch.Generator().manual_seed(seed)
    n = 3 * (13 * 13 + 26 * 26 + 52 * 52)
    obj_xywh = torch.cat((torch.rand(bs, objects, 2, generator=gen) * 416,
                          torch.rand(bs, objects, 2, generator=gen) * 150 + 10), 2)  # (bs, objects, 4)
    obj_cls = torch.randint(0, nc, (bs, objects), generator=gen)
    which = torch.randint(0, objects, (bs, n), generator=gen)
    xywh = torch.gather(obj_xywh, 1, which[..., None].expand(-1, -1, 4))  # (bs, n, 4)
    xywh = xywh * (1 + 0.15 * torch.randn(bs, n, 4, generator=gen))
    pred = torch.rand(bs, n, 5 + nc, generator=gen) ** 8 * 0.01  # wrong classes unlikely
    near = torch.rand(bs, n, generator=gen) < 0.1  # 10% of anchors sit on an object
    pred[..., 4] = torch.where(near, torch.rand(bs, n, generator=gen) ** 0.5, pred[..., 4] * 0.1)
    pred[..., :4] = xywh.abs() + 1
    cls = torch.gather(obj_cls, 1, which)  # (bs, n)
    pred.scatter_(2, (cls + 5)[..., None], torch.rand(bs, n, 1, generator=gen) ** 0.5)
    return pred


def own_metrics(labels: list, shapes: np.ndarray, dets: list, nc: int) -> float:
    from train_val_utils.evaluation.metrics import ConfusionMatrix, ap_per_class, match_predictions

    cm, stats = ConfusionMatrix(nc), []
    for lab, (h, w), det in zip(labels, shapes, dets):
        px = lab[:, 1:] * np.array([w, h, w, h], np.float32)
        xyxy = np.concatenate([px[:, :2] - px[:, 2:] / 2, px[:, :2] + px[:, 2:] / 2], 1)
        gt = torch.from_numpy(np.concatenate([lab[:, :1], xyxy], 1))
        d = torch.from_numpy(det.astype(np.float32))
        stats.append((match_predictions(d, gt).numpy(), det[:, 4], det[:, 5], lab[:, 0]))
        cm.process_batch(d, gt)
    tp, conf, pcls, tcls = (np.concatenate(s) for s in zip(*stats))
    return ap_per_class(tp, conf, pcls, tcls, nc).mean()["map50"]


def coco_metrics(files: list, labels: list, shapes: np.ndarray, dets: list, backend: str) -> float:
    from train_val_utils.evaluation.coco_eval import coco_gt_from_labels, detections_to_coco, evaluate_coco

    gt = coco_gt_from_labels(files, labels, shapes)
    results = [r for i, d in enumerate(dets) for r in detections_to_coco(d, i)]
    return float(evaluate_coco(gt, results, backend=backend)[0][1])


def timed(fn, repeats: int, *args) -> tuple[float, float]:
    times, value = [], 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        value = fn(*args)
        times.append(time.perf_counter() - t)
    return statistics.median(times), value


def main(args: argparse.Namespace) -> None:
    from train_val_utils.evaluation.nms import non_max_suppression

    torch.set_num_threads(args.threads)
    files, labels, shapes, dets = synthetic(args.images, args.dets, args.classes)
    logger.info("%d images x %d detections, %d classes, median of %d", args.images, args.dets, args.classes,
                args.repeats)
    s, v = timed(own_metrics, args.repeats, labels, shapes, dets, args.classes)
    logger.info("own metrics (match + AP + confusion): %.2f s  mAP@0.5 %.4f", s, v)
    backends = ["pycocotools"]
    try:
        import faster_coco_eval  # noqa: F401

        backends.append("faster")
    except ImportError:
        logger.info("faster-coco-eval not installed: pip install -e '.[fast-eval]' to time it")
    for backend in backends:
        s, v = timed(coco_metrics, args.repeats, files, labels, shapes, dets, backend)
        logger.info("COCO eval (%s, incl. building the GT): %.2f s  mAP@0.5 %.4f", backend, s, v)
    pred = fake_predictions(8, args.classes)
    s, _ = timed(lambda: non_max_suppression(pred, 0.001, 0.6), args.repeats)
    logger.info("non_max_suppression, %d anchors x %d classes, conf 0.001: %.1f ms/image", pred.shape[1],
                args.classes,
                1e3 * s / pred.shape[0])


if __name__ == "__main__":
    setup_logging()
    sys.exit(run_cli(main, get_args_parser().parse_args()))
