"""The two loops of a detector's life, side by side: `train_one_epoch` and `evaluate`.

Training, one image's way: uint8 batch -> float [0, 1] -> (multi-scale) interpolate -> autocast
forward -> loss object -> scaled backward -> every `accumulate` batches one optimizer step, then the
EMA update. The LR follows a linear warm-up over the first iterations, after which the epoch's
cosine LambdaLR value (stepped by the trainer) applies. Running losses stay on the device: the host
reads them (and the non-finite flag) only every `sync_every` batches and at the end of the epoch, so
a GPU is not stalled once per step; a non-finite loss still stops the run before anything is saved
and names the first bad batch's images.

Evaluation: forward -> NMS -> boxes back to original pixels -> the official COCO stats
(`coco_eval.py`) and our own per-class metrics (`metrics.py`) from the same detections.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from build_utils.errors import UserError
from build_utils.geometry import scale_coords
from build_utils.hyp import OptimizerHyp
from build_utils.torch_utils import time_sync
from modules.backends import input_dtype
from train_val_utils.evaluation.coco_eval import (
    STAT_NAMES,
    coco_gt_from_labels,
    default_cache_dir,
    detections_to_coco,
    evaluate_coco,
    image_ids_from_json,
)
from train_val_utils.evaluation.ground_truth import ground_truth_for
from train_val_utils.evaluation.metrics import ConfusionMatrix, ap_per_class, match_predictions
from train_val_utils.evaluation.nms import NMS_AUTO, NMS_CHOICES, non_max_suppression, resolve_nms
from train_val_utils.evaluation.reporting import (
    LOSS_KEYS,
    epoch_bar_text,
    epoch_header,
    results_table,
    speed_line,
)
from train_val_utils.evaluation.thresholds import EVAL_CONF_THRES, EVAL_IOU_THRES
from train_val_utils.evaluation.tta import TTA_VIEWS, View, tta_forward
from train_val_utils.training.distill import Distiller
from train_val_utils.training.distributed_utils import DistInfo
from train_val_utils.training.epoch_meter import EpochMeter
from train_val_utils.training.optim import apply_warmup, warmup_accumulate
from train_val_utils.training.sparsity import add_bn_l1_grad

logger = logging.getLogger(__name__)

BatchHook = Callable[[int, torch.Tensor, torch.Tensor, Any], None]
# called after each optimizer step but an epoch's last with (batch index, snapshot of the loop state)
StepHook = Callable[[int, Callable[[], dict[str, Any]]], None]


# ---- training ------------------------------------------------------------------------------------
@dataclass
class TrainKit:
    """The objects a training step touches, built once per run by the trainer.

    `model` is what runs forward (DDP-wrapped and/or compiled); `ema_source` is the plain (or DDP)
    model the EMA averages; `loss_fn(preds, targets) -> (loss, items)` is the run's loss object.
    """

    model: nn.Module
    loss_fn: Callable[[list[torch.Tensor], torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: Any
    device: torch.device
    dist: DistInfo
    ema_source: nn.Module | None = None
    distiller: Distiller | None = None  # --teacher: distillation terms join the loss


@dataclass(frozen=True)
class StepSchedule:
    """What stays fixed for the whole run; `warmup_iters` counts batches from the run's start."""

    accumulate: int
    nbs: int
    warmup_iters: int
    img_size: int
    optim_hyp: OptimizerHyp = field(default_factory=OptimizerHyp)  # warm-up momentum and bias LR
    multi_scale: bool = False
    grid: int = 32
    amp: bool = False
    amp_dtype: torch.dtype = torch.float16
    seed: int = 0
    channels_last: bool = False
    sync_every: int = 10  # batches between host reads of the running losses / non-finite flag
    sr: float = 0.0  # --sr: L1 sparsity on the batch-norm scales (0 = off)
    sr_keep: float = 0.0  # --sr-keep: from the run's half on, this share of channels keeps 1% of the pull


def multi_scale_sizes(img_size: int, grid: int = 32) -> list[int]:
    """Sizes a multi-scale step may pick: multiples of `grid` within [0.67, 1.5] x img_size."""
    lo = max(math.ceil(0.67 * img_size / grid), 1)
    hi = max(math.floor(1.5 * img_size / grid), lo)
    return [g * grid for g in range(lo, hi + 1)]


def _resize(imgs: torch.Tensor, size: int, grid: int) -> torch.Tensor:
    """Scale a batch so its longer side is `size` (both sides multiples of `grid`)."""
    if size == imgs.shape[-1] and size == imgs.shape[-2]:
        return imgs
    scale = size / max(imgs.shape[2:])
    new_hw = [max(math.ceil(d * scale / grid) * grid, grid) for d in imgs.shape[2:]]
    return F.interpolate(imgs, size=new_hw, mode="bilinear", align_corners=False)


def train_one_epoch(kit: TrainKit, dataloader: Any, epoch: int, epochs: int, lr_factor: float,
                    schedule: StepSchedule, on_batch: BatchHook | None = None, start: int = 0,
                    loop_state: dict[str, Any] | None = None, on_step: StepHook | None = None
                    ) -> dict[str, float]:
    """Train one epoch; returns mean box/obj/class/total losses (over ranks), targets seen, last size.

    `lr_factor` is the cosine schedule's value for this epoch, the target of the warm-up ramp.
    `on_batch(ni, imgs, targets, paths)` sees the first batches of the run (train_batch*.jpg).
    A resumed epoch passes `start` (batches already trained; the loader yields the rest) and the
    `loop_state` that `on_step(i, snapshot)`'s `snapshot()` returned when it was saved.
    """
    model, optimizer, scaler, device, dist_info = kit.model, kit.optimizer, kit.scaler, kit.device, kit.dist
    model.train()
    nb = start + len(dataloader)
    pick = random.Random(schedule.seed * 100_003 + epoch)  # same sizes on every rank and after resume
    sizes = multi_scale_sizes(schedule.img_size, schedule.grid)
    size = schedule.img_size
    memory_format = torch.channels_last if schedule.channels_last else torch.contiguous_format
    meter, n_targets = EpochMeter(device), 0
    last_step = -1  # batch index of this epoch's last optimizer step
    if loop_state is not None:
        meter.load_state(loop_state)
        n_targets, last_step = int(loop_state["n_targets"]), int(loop_state["last_step"])
        size, (version, state, gauss) = int(loop_state["size"]), loop_state["pick"]
        pick.setstate((version, tuple(state), gauss))

    def snapshot() -> dict[str, Any]:  # the loop's state right after an optimizer step (a collective)
        meter.sync(dist_info, epoch)  # a non-finite loss stops the run before it can be saved
        version, state, gauss = pick.getstate()
        return {**meter.state(), "n_targets": n_targets, "last_step": last_step, "size": size,
                "pick": [version, list(state), gauss]}

    if dist_info.is_main:
        logger.info("%s", epoch_header())
    bar = tqdm(enumerate(dataloader, start), total=nb, initial=start, disable=not dist_info.is_main,
               bar_format="{l_bar}{bar:10}{r_bar}")
    optimizer.zero_grad(set_to_none=True)
    imgs = torch.zeros(0, 3, size, size)
    for i, (imgs, targets, paths, _) in bar:
        ni = i + nb * epoch  # batches since the run started
        imgs = imgs.to(device, non_blocking=True).float() / 255.0  # (bs, 3, H, W) in [0, 1]
        targets = targets.to(device, non_blocking=True)  # (N, 6) image, class, cx, cy, w, h (normalised)
        if ni < schedule.warmup_iters:
            apply_warmup(optimizer, ni, schedule.warmup_iters, lr_factor, schedule.optim_hyp)
        if schedule.multi_scale:
            if i % schedule.accumulate == 0:
                size = pick.choice(sizes)
            imgs = _resize(imgs, size, schedule.grid)
        imgs = imgs.contiguous(memory_format=memory_format)
        with torch.autocast(device_type=device.type, dtype=schedule.amp_dtype, enabled=schedule.amp):
            preds = model(imgs)  # list of (bs, na, ny, nx, 5+nc), float16/bfloat16 under AMP
            teacher_maps = kit.distiller.teacher_maps(imgs) if kit.distiller is not None else None
        loss, items = kit.loss_fn(preds, targets)  # float32 outside autocast: targets, IoU, BCE, sums
        if teacher_maps is not None:
            loss, items = kit.distiller.add_to(loss, items, preds, teacher_maps)  # type: ignore[union-attr]
        meter.add(i, loss, items, paths)
        # the loss is a per-batch mean; bs/nbs makes one accumulated step see the mean gradient of ~nbs
        # images; DDP averages gradients over ranks, so each rank counts its images times world_size
        scaler.scale(loss * (imgs.shape[0] * dist_info.world_size / schedule.nbs)).backward()
        if i - last_step >= warmup_accumulate(ni, schedule.warmup_iters, schedule.accumulate) or i + 1 == nb:
            last_step = i
            if schedule.sr:
                keep_share = schedule.sr_keep if 2 * epoch >= epochs else 0.0
                add_bn_l1_grad(model, schedule.sr, scaler.get_scale() if scaler.is_enabled() else 1.0,
                               keep_share)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if kit.ema is not None:
                kit.ema.update(kit.ema_source if kit.ema_source is not None else model)
        n_targets += int(targets.shape[0])
        if on_step is not None and last_step == i and i + 1 < nb:
            on_step(i, snapshot)
        if (i + 1) % schedule.sync_every == 0 or i + 1 == nb:
            means = meter.sync(dist_info, epoch)
            bar.set_description(epoch_bar_text(epoch, epochs, means.tolist(), n_targets, int(imgs.shape[-1]),
                                               device))
        if on_batch is not None and ni < 3:
            on_batch(ni, imgs, targets, paths)
    means = meter.sync(dist_info, epoch) if meter.count else torch.zeros(4)
    return {**dict(zip((*LOSS_KEYS, "total_loss"), means.tolist())), "targets": n_targets,
            "img_size": int(imgs.shape[-1])}


# ---- evaluation ----------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class EvalOptions:
    """How `evaluate` scores and what it writes (files only when `evaluate` gets a `save_dir`).

    `coco_json` + `category_ids` score against the original COCO annotations; otherwise against the
    YOLO labels (the ground truth built from them is cached under `cache_dir`). `augment` runs the
    test-time-augmented forward (`tta.py`); `nms` is `plain`, `merge` (merge-NMS, `nms.merge_boxes`) or
    `auto` (merge with `augment`, else plain), resolved at construction: `options.nms` is what runs.
    """

    conf_thres: float = EVAL_CONF_THRES
    iou_thres: float = EVAL_IOU_THRES
    plots: bool = False
    save_json: bool = False
    per_class: bool = False  # a row per class in the console table
    coco_json: str | Path | None = None
    category_ids: list[int] | None = None
    cache_dir: str | Path | None = None
    augment: bool = False
    tta_views: tuple[View, ...] = TTA_VIEWS  # what `augment` runs (bench_tta.py compares the classic views)
    nms: str = NMS_AUTO
    classes: tuple[int, ...] | None = None  # score only these class indices (validation.py --classes)

    def __post_init__(self) -> None:
        if self.nms not in NMS_CHOICES:
            raise UserError(f"nms={self.nms!r}: expected one of {', '.join(NMS_CHOICES)}")
        object.__setattr__(self, "nms", resolve_nms(self.nms, self.augment))  # frozen: set once, here


def scoring_options(data: dict[str, Any], data_source: str | Path, *, single_cls: bool = False,
                    **options: Any) -> EvalOptions:
    """`EvalOptions` scoring against the split's one ground truth (`ground_truth_for`: the COCO JSON the
    data names, else the labels). Training, validation.py and benchmark.py build their options here, so
    one model on one split gets one mAP in every tool."""
    truth = ground_truth_for(data, data_source, single_cls=single_cls)
    logger.debug("scoring against %s", truth.describe())
    return EvalOptions(coco_json=truth.coco_json, category_ids=truth.category_ids, **options)


def _ground_truth_source(dataset: Any, options: EvalOptions) -> tuple[Any, list[int]]:
    """(COCO ground truth: a JSON path or a dict, image id of each dataset index)."""
    if options.coco_json is not None:
        return Path(options.coco_json), image_ids_from_json(options.coco_json, dataset.img_files)
    cache = Path(options.cache_dir) if options.cache_dir is not None else default_cache_dir()
    gt = coco_gt_from_labels(dataset.img_files, dataset.labels, dataset.image_shapes, options.category_ids,
                             cache)
    return gt, list(range(len(dataset.img_files)))


@torch.inference_mode()
def run_detection(model: nn.Module, dataloader: Any, device: torch.device, options: EvalOptions,
                  on_first_batch: Callable[..., None] | None = None) -> tuple[list, list[float], int]:
    """Forward + NMS over the loader: per image (dataset index, det (n, 6) in original pixels), the
    summed pre-process/inference/NMS seconds and the image count (`validation.py --task speed`)."""
    nms_kw = {"conf_thres": options.conf_thres, "iou_thres": options.iou_thres, "multi_label": True,
              "merge": options.nms == "merge", "classes": options.classes}
    dataset = dataloader.dataset
    index_of = {f: i for i, f in enumerate(dataset.img_files)}
    dtype = input_dtype(model)  # a DarkNet's parameter dtype, or what a backend's graph takes
    per_image, times, seen = [], [0.0, 0.0, 0.0], 0
    bar = tqdm(dataloader, desc="validating", leave=False)
    for batch_i, (imgs, targets, paths, shapes) in enumerate(bar):
        t0 = time_sync()
        x = imgs.to(device, non_blocking=True).to(dtype) / 255  # (bs, 3, H, W) in [0, 1]
        t1 = time_sync()
        pred = tta_forward(model, x, options.tta_views) if options.augment else model(x)[0]  # (bs, N, 5+nc)
        t2 = time_sync()
        out = non_max_suppression(pred.float(), **nms_kw)  # bs x (n, 6)
        t3 = time_sync()
        times = [times[0] + t1 - t0, times[1] + t2 - t1, times[2] + t3 - t2]
        seen += imgs.shape[0]
        for si, det in enumerate(out):
            det_orig = det.clone()
            det_orig[:, :4] = scale_coords(imgs.shape[2:], det[:, :4], shapes[si][0], shapes[si][1])
            per_image.append((index_of[paths[si]], det_orig.cpu()))
        if on_first_batch is not None and batch_i == 0:
            on_first_batch(imgs, targets, paths, [o.cpu() for o in out])
    return per_image, times, seen


def _plot_first_batch(plot_dir: Path, names: list[str]) -> Callable[..., None]:
    def draw(imgs: torch.Tensor, targets: torch.Tensor, paths: Any, out: list[torch.Tensor]) -> None:
        from train_val_utils.evaluation.plots import plot_images, predictions_to_targets

        plot_images(imgs, targets, paths, str(plot_dir / "val_batch0_labels.jpg"), names)
        plot_images(imgs, predictions_to_targets(out, imgs.shape[2:]), paths,
                    str(plot_dir / "val_batch0_pred.jpg"), names)
    return draw


def _plot_metrics(ap: Any, confusion: np.ndarray, plot_dir: Path, names: list[str]) -> None:
    from train_val_utils.evaluation.plots import plot_confusion_matrix, plot_curves

    plot_curves(ap, plot_dir, names)
    plot_confusion_matrix(confusion, plot_dir, names)


def evaluate(model: nn.Module, dataloader: Any, class_names: list[str], device: torch.device | str,
             options: EvalOptions | None = None, save_dir: str | Path | None = None,
             plotter: Any = None) -> dict[str, Any]:
    """Score `model` (any dtype) on `dataloader` (a `LoadImagesAndLabels` loader, rect or not).

    `model` is a DarkNet (training) or any `modules.backends.Backend` (`.pt`, `.torchscript`, `.onnx`):
    both return `(pred (bs, N, 5+nc), ...)` in eval mode.

    Returns `precision`, `recall` (ours, at the best-F1 confidence), `map50`, `map` (COCO), `own_map50`,
    `own_map`, `coco_stats` (12), `coco_summary`, `speed_ms` (pre/inference/nms per image), `per_class`,
    `best_conf`, `confusion_matrix`, `n_images`, `n_instances`, `nms` and `augment` (how the numbers
    were made). With `save_dir`: the plots when
    `options.plots` (drawn through `plotter.submit(fn, *args)` when given, so training does not wait
    for matplotlib), `predictions.json` (COCO results) when `options.save_json`.
    """
    options = options or EvalOptions()
    device = torch.device(device)
    names = list(class_names)
    plot_dir = Path(save_dir) if (options.plots and save_dir is not None) else None
    run_plot = plotter.submit if plotter is not None else (lambda fn, *a: fn(*a))
    first_batch = None
    if plot_dir is not None:
        draw = _plot_first_batch(plot_dir, names)
        first_batch = lambda *a: run_plot(draw, *a)  # noqa: E731
    was_training = model.training
    model.eval()
    per_image, times, seen = run_detection(model, dataloader, device, options, first_batch)
    model.train(was_training)

    dataset, nc = dataloader.dataset, len(names)
    confusion, stats = ConfusionMatrix(nc), []
    gt_source, image_ids = _ground_truth_source(dataset, options)
    coco_dets = []
    for idx, det in per_image:  # loop over images; matching inside is vectorised
        gt = torch.from_numpy(np.asarray(dataset.ground_truth(idx), np.float32)).reshape(-1, 5)
        if options.classes is not None:  # other classes' labels neither count nor enter the means
            gt = gt[torch.isin(gt[:, 0], torch.tensor(options.classes, dtype=gt.dtype))]
        correct = match_predictions(det, gt).numpy()  # (n, 10)
        stats.append((correct, det[:, 4].numpy(), det[:, 5].numpy(), gt[:, 0].numpy()))
        confusion.process_batch(det, gt)
        coco_dets += detections_to_coco(det.numpy(), image_ids[idx], options.category_ids)
    tp, conf, pred_cls, target_cls = (np.concatenate(s) for s in zip(*stats)) if stats else [np.zeros(0)] * 4
    ap = ap_per_class(tp, conf, pred_cls, target_cls, nc)
    coco_stats, summary = evaluate_coco(gt_source, coco_dets, [image_ids[i] for i, _ in per_image],
                                        category_ids=_scored_category_ids(options))
    results = _collect(ap, coco_stats, summary, times, seen, per_image, dataset, names, confusion)
    results.update(nms=options.nms, augment=options.augment,  # which NMS / TTA produced these numbers
                   classes=list(options.classes) if options.classes is not None else None)

    logger.info("%s", results_table(results, per_class=options.per_class))
    logger.info("%s", speed_line(results["speed_ms"]))
    if save_dir is not None and options.save_json:
        (Path(save_dir) / "predictions.json").write_text(json.dumps(coco_dets))
    if plot_dir is not None:
        run_plot(_plot_metrics, ap, confusion.matrix.copy(), plot_dir, names)
    return results


def _scored_category_ids(options: EvalOptions) -> list[int] | None:
    """COCO category ids of `options.classes` (None = every category)."""
    if options.classes is None:
        return None
    ids = options.category_ids
    return [int(ids[c]) if ids is not None else int(c) for c in options.classes]


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
