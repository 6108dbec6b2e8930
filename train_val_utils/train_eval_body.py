"""The two loops of a detector's life: `evaluate` (here) and `train_one_epoch` (added by training).

`evaluate` runs the model over a validation loader, applies NMS, maps boxes back to original pixels and
scores them twice from the same detections: the official COCO stats (`coco_eval.py`) and our own
per-class metrics (`metrics.py`). Reporting helpers (table, record_mAP.txt) live here too, so training
and validation.py print and save the same thing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from build_utils.torch_utils import time_sync
from train_val_utils.coco_eval import (
    STAT_NAMES,
    coco_gt_from_labels,
    default_cache_dir,
    detections_to_coco,
    evaluate_coco,
    image_ids_from_json,
)
from train_val_utils.geometry import scale_coords
from train_val_utils.metrics import ConfusionMatrix, ap_per_class, match_predictions
from train_val_utils.nms import non_max_suppression

logger = logging.getLogger(__name__)

HEADER = ("Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95")


def _row(name: str, images: int, instances: int, p: float, r: float, ap50: float, ap: float) -> str:
    return f"{name:>20}{images:>11}{instances:>11}{p:>11.3g}{r:>11.3g}{ap50:>11.3g}{ap:>11.3g}"


def results_table(results: dict[str, Any], per_class: bool = False) -> str:
    """`Class Images Instances P R mAP50 mAP50-95`: the 'all' row (COCO mAPs), then optionally per class."""
    lines = [f"{HEADER[0]:>20}" + "".join(f"{h:>11}" for h in HEADER[1:])]
    lines.append(_row("all", results["n_images"], results["n_instances"], results["precision"],
                      results["recall"], results["map50"], results["map"]))
    if per_class:
        lines += [_row(c["name"], c["images"], c["instances"], c["p"], c["r"], c["ap50"], c["ap"])
                  for c in results["per_class"] if c["instances"] > 0]
    return "\n".join(lines)


def record_map_text(results: dict[str, Any]) -> str:
    """record_mAP.txt: the COCO summary, then AP@0.5 per class (our metric)."""
    lines = [results["coco_summary"].rstrip(), "", "AP@0.5 per class:"]
    lines += [f"{c['name']:>20}: {c['ap50']:.4f}" for c in results["per_class"] if c["instances"] > 0]
    lines.append(f"{'mAP@0.5 (own)':>20}: {results['own_map50']:.4f}")
    return "\n".join(lines) + "\n"


def _ground_truth_source(dataset: Any, coco_json: str | Path | None, category_ids: list[int] | None,
                         cache_dir: Path | None) -> tuple[Any, list[int]]:
    """(COCO ground truth: a JSON path or a dict, image id of each dataset index)."""
    if coco_json is not None:
        return Path(coco_json), image_ids_from_json(coco_json, dataset.img_files)
    gt = coco_gt_from_labels(dataset.img_files, dataset.labels, dataset.image_shapes, category_ids,
                             cache_dir if cache_dir is not None else default_cache_dir())
    return gt, list(range(len(dataset.img_files)))


@torch.inference_mode()
def _run_model(model: torch.nn.Module, dataloader: Any, device: torch.device, nms_kw: dict,
               plot_dir: Path | None, names: list[str]) -> tuple[list, list[float], int]:
    """Forward + NMS over the loader: per image (dataset index, det in original pixels, det on the input)."""
    dataset = dataloader.dataset
    index_of = {f: i for i, f in enumerate(dataset.img_files)}
    dtype = next(model.parameters()).dtype
    per_image, times, seen = [], [0.0, 0.0, 0.0], 0
    bar = tqdm(dataloader, desc="validating", leave=False)
    for batch_i, (imgs, targets, paths, shapes) in enumerate(bar):
        t0 = time_sync()
        x = imgs.to(device, non_blocking=True).to(dtype) / 255  # (bs, 3, H, W) in [0, 1]
        t1 = time_sync()
        pred = model(x)[0]  # (bs, N, 5+nc)
        t2 = time_sync()
        out = non_max_suppression(pred.float(), **nms_kw)  # bs x (n, 6)
        t3 = time_sync()
        times = [times[0] + t1 - t0, times[1] + t2 - t1, times[2] + t3 - t2]
        seen += imgs.shape[0]
        for si, det in enumerate(out):
            det_orig = det.clone()
            det_orig[:, :4] = scale_coords(imgs.shape[2:], det[:, :4], shapes[si][0], shapes[si][1])
            per_image.append((index_of[paths[si]], det_orig.cpu()))
        if plot_dir is not None and batch_i == 0:
            from train_val_utils.plots import plot_images, predictions_to_targets

            plot_images(imgs, targets, paths, str(plot_dir / "val_batch0_labels.jpg"), names)
            plot_images(imgs, predictions_to_targets(out, imgs.shape[2:]), paths,
                        str(plot_dir / "val_batch0_pred.jpg"), names)
    return per_image, times, seen


def evaluate(
    model: torch.nn.Module,
    dataloader: Any,
    class_names: list[str],
    device: torch.device | str,
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    save_dir: str | Path | None = None,
    plots: bool = False,
    save_json: bool = False,
    verbose: bool = False,
    coco_json: str | Path | None = None,
    category_ids: list[int] | None = None,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Score `model` (eval mode, any dtype) on `dataloader` (a `LoadImagesAndLabels` loader, rect or not).

    Returns `precision`, `recall` (ours, at the best-F1 confidence), `map50`, `map` (COCO), `own_map50`,
    `own_map`, `coco_stats` (12), `coco_summary`, `speed_ms` (pre/inference/nms per image), `per_class`,
    `best_conf`, `confusion_matrix`, `n_images`, `n_instances`. `coco_json` + `category_ids` score against
    the original COCO annotations; otherwise against the YOLO labels. Files are written only when
    `save_dir` is set: the plots with `plots=True`, `predictions.json` (COCO results) with `save_json=True`.
    """
    device = torch.device(device)
    save_dir = Path(save_dir) if save_dir is not None else None
    dataset, nc = dataloader.dataset, len(class_names)
    was_training = model.training
    model.eval()
    nms_kw = {"conf_thres": conf_thres, "iou_thres": iou_thres, "multi_label": True}
    plot_dir = save_dir if (plots and save_dir is not None) else None
    per_image, times, seen = _run_model(model, dataloader, device, nms_kw, plot_dir, list(class_names))
    model.train(was_training)

    confusion, stats = ConfusionMatrix(nc), []
    gt_source, image_ids = _ground_truth_source(dataset, coco_json, category_ids,
                                                Path(cache_dir) if cache_dir else None)
    coco_dets = []
    for idx, det in per_image:  # loop over images; matching inside is vectorised
        gt = torch.from_numpy(np.asarray(dataset.ground_truth(idx), np.float32)).reshape(-1, 5)
        correct = match_predictions(det, gt).numpy()  # (n, 10)
        stats.append((correct, det[:, 4].numpy(), det[:, 5].numpy(), gt[:, 0].numpy()))
        confusion.process_batch(det, gt)
        coco_dets += detections_to_coco(det.numpy(), image_ids[idx], category_ids)
    tp, conf, pred_cls, target_cls = (np.concatenate(s) for s in zip(*stats)) if stats else [np.zeros(0)] * 4
    ap = ap_per_class(tp, conf, pred_cls, target_cls, nc)
    coco_stats, summary = evaluate_coco(gt_source, coco_dets, [image_ids[i] for i, _ in per_image])
    results = _collect(ap, coco_stats, summary, times, seen, per_image, dataset, class_names, confusion)

    logger.info("%s", results_table(results, per_class=verbose))
    s = results["speed_ms"]
    logger.info("Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image", s["pre"], s["inference"],
                s["nms"])
    if save_dir is not None and save_json:
        (save_dir / "predictions.json").write_text(json.dumps(coco_dets))
    if plot_dir is not None:
        from train_val_utils.plots import plot_confusion_matrix, plot_curves

        plot_curves(ap, plot_dir, list(class_names))
        plot_confusion_matrix(confusion.matrix, plot_dir, list(class_names))
    return results


def _collect(ap: Any, coco_stats: np.ndarray, summary: str, times: list[float], seen: int, per_image: list,
             dataset: Any, names: list[str], confusion: ConfusionMatrix) -> dict[str, Any]:
    """Assemble evaluate's result dict (plain Python types, JSON-serialisable)."""
    mean = ap.mean()
    images_with = np.zeros(len(names), dtype=np.int64)
    for idx, _ in per_image:  # images in which each class appears
        cls = np.unique(np.asarray(dataset.labels[idx])[:, 0].astype(int)) if len(dataset.labels[idx]) else []
        images_with[np.asarray(cls, dtype=int)] += 1
    per_class = [{"name": n, "images": int(images_with[c]), "instances": int(ap.n_gt[c]), "p": float(ap.p[c]),
                  "r": float(ap.r[c]), "f1": float(ap.f1[c]), "ap50": float(ap.ap50[c]),
                  "ap": float(ap.ap50_95[c])} for c, n in enumerate(names)]
    n = max(seen, 1)
    return {
        "precision": mean["mp"], "recall": mean["mr"],
        "map50": float(coco_stats[1]), "map": float(coco_stats[0]),
        "own_map50": mean["map50"], "own_map": mean["map"], "best_conf": ap.best_conf,
        "coco_stats": [float(v) for v in coco_stats], "coco_stat_names": list(STAT_NAMES),
        "coco_summary": summary,
        "speed_ms": {"pre": 1e3 * times[0] / n, "inference": 1e3 * times[1] / n, "nms": 1e3 * times[2] / n},
        "per_class": per_class, "confusion_matrix": confusion.matrix.tolist(),
        "n_images": seen, "n_instances": int(ap.n_gt.sum()),
    }


# train_one_epoch lives in its own file (AMP, multi-scale, accumulation, EMA); re-exported here so the
# engine's two loops are importable from one place.
from train_val_utils.train_loop import train_one_epoch as train_one_epoch  # noqa: E402
