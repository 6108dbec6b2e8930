"""`validation.py --task study|speed`: accuracy against input size, and the timing split alone.

The study answers "which `--img-size` should I deploy at?": one evaluation per size, each giving
COCO mAP and milliseconds per image (pre-process + inference + NMS), written to `study.csv` and
drawn in `study.png` (mAP against size, and mAP against ms). The speed task runs forward + NMS at
deployment thresholds without scoring, so its numbers are the pipeline's cost alone.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from train_val_utils.engine import EvalOptions, evaluate, run_detection
from train_val_utils.evaluation.thresholds import DEPLOY_CONF_THRES, DEPLOY_IOU_THRES

logger = logging.getLogger(__name__)

DEFAULT_STUDY_SIZES = tuple(range(320, 641, 64))  # 320, 384, ..., 640
STUDY_FIELDS = ("img_size", "map", "map50", "ms_per_img", "pre_ms", "inference_ms", "nms_ms")
# `--task speed`: deployment thresholds (the classic test.py values), nothing written
SPEED_OPTIONS = {"conf_thres": DEPLOY_CONF_THRES, "iou_thres": DEPLOY_IOU_THRES,
                 "save_json": False, "plots": False}


def run_study(model: nn.Module, make_loader: Callable[[int], Any], names: list[str], device: torch.device,
              options: EvalOptions, sizes: Sequence[int]) -> list[dict[str, float]]:
    """Evaluate at each size (`make_loader(size)` builds that size's loader); one row per size."""
    options = replace(options, plots=False, save_json=False)
    rows = []
    for size in sizes:
        logger.info("study: image size %d", size)
        res = evaluate(model, make_loader(size), names, device, options)
        speed = res["speed_ms"]
        rows.append({"img_size": int(size), "map": res["map"], "map50": res["map50"],
                     "ms_per_img": speed["pre"] + speed["inference"] + speed["nms"],
                     "pre_ms": speed["pre"], "inference_ms": speed["inference"], "nms_ms": speed["nms"]})
    return rows


def write_study(rows: list[dict[str, float]], save_dir: Path) -> tuple[Path, Path]:
    """study.csv (one row per size) and study.png (mAP vs size, mAP vs ms per image)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    csv_path, png_path = save_dir / "study.csv", save_dir / "study.png"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=STUDY_FIELDS)
        writer.writeheader()
        writer.writerows({k: round(r[k], 5) if k != "img_size" else r[k] for k in STUDY_FIELDS} for r in rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), tight_layout=True)
    sizes, ms = [r["img_size"] for r in rows], [r["ms_per_img"] for r in rows]
    for key, label in (("map", "mAP@0.5:0.95"), ("map50", "mAP@0.5")):
        axes[0].plot(sizes, [r[key] for r in rows], ".-", label=label)
        axes[1].plot(ms, [r[key] for r in rows], ".-", label=label)
    for r in rows:
        axes[1].annotate(str(r["img_size"]), (r["ms_per_img"], r["map"]), fontsize=7)
    axes[0].set(xlabel="image size (pixels)", ylabel="COCO mAP", title="mAP vs image size")
    axes[1].set(xlabel="ms per image (pre + inference + NMS)", ylabel="COCO mAP", title="mAP vs speed")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(png_path, dpi=150)
    plt.close(fig)
    return csv_path, png_path


def measure_speed(model: nn.Module, loader: Any, device: torch.device,
                  options: EvalOptions) -> dict[str, float]:
    """Milliseconds per image of pre-process, inference and NMS, with no scoring and no files."""
    options = replace(options, **SPEED_OPTIONS)
    was_training = model.training
    model.eval()
    _, times, seen = run_detection(model, loader, device, options)
    model.train(was_training)
    n = max(seen, 1)
    return {"pre": 1e3 * times[0] / n, "inference": 1e3 * times[1] / n, "nms": 1e3 * times[2] / n}
