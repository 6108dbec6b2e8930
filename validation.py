"""Score a model on a dataset's validation images: COCO metrics, per-class AP, plots, reports.

    python validation.py --weights weights/best.pt --data data/my.data
    python validation.py --weights yolov3-tiny.weights --cfg cfg/yolov3-tiny.cfg --data data/coco128.data
    python validation.py --weights weights/best.onnx --data data/my.data       # ONNX Runtime

Writes into runs/val/expN: metrics.json, record_mAP.txt (COCO summary + per-class AP@0.5), the plots,
and with --save-json predictions.json (COCO results format). `--nms merge` and `--augment` (TTA) change
how detections are made (`--augment` merges unless `--nms plain`); metrics.json records both (`nms`,
`augment`).

    --task study   mAP and ms/img at each --study-sizes (default 320..640 step 64): study.csv, study.png
    --task speed   forward + NMS at conf 0.25, IoU 0.45, no JSON: prints only the timing split
"""

from __future__ import annotations

import build_utils.omp_env  # noqa: F401 - first: OpenMP threads then sleep, not spin, when idle

# isort: split
import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch

from build_utils.cli import (
    ArgumentParser,
    check_fraction,
    check_img_size,
    check_positive,
    run_cli,
    setup_logging,
)
from build_utils.data_cfg import parse_data_cfg
from build_utils.errors import ConfigError
from build_utils.run_dir import make_run_dir
from build_utils.torch_utils import fit_threads_to_free_cores, inference_half, select_device
from train_val_utils.benchmarks.study import DEFAULT_STUDY_SIZES
from train_val_utils.evaluation.nms import NMS_AUTO, NMS_CHOICES, NMS_HELP
from train_val_utils.evaluation.thresholds import EVAL_CONF_THRES, EVAL_IOU_THRES

logger = logging.getLogger("validation")


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__)
    bool_flag = argparse.BooleanOptionalAction
    p.add_argument("--weights", required=True,
                   help="a .pt (carries cfg, names), Darknet .weights (with --cfg), or an exported .onnx / "
                        ".torchscript (carry their own model)")
    p.add_argument("--cfg", default=None, help="model cfg; required for Darknet .weights")
    p.add_argument("--data", required=True,
                   help=".data file or dataset YAML; its valid/val images are scored")
    p.add_argument("--img-size", type=int, default=None,
                   help="inference size (pixels, multiple of 32); None = the .pt's training size, else 416")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward")
    p.add_argument("--conf-thres", type=float, default=EVAL_CONF_THRES,
                   help="drop detections scoring below this")
    p.add_argument("--iou-thres", type=float, default=EVAL_IOU_THRES, help="NMS IoU threshold")
    p.add_argument("--classes", nargs="+", default=None, metavar="CLASS",
                   help="score only these classes (names or indices of --data): their detections and labels; "
                        "mAP is their mean. None = all")
    p.add_argument("--task", choices=("val", "study", "speed"), default="val",
                   help="val: score once; study: mAP and ms/img over --study-sizes; speed: timing only")
    p.add_argument("--study-sizes", type=int, nargs="+", default=list(DEFAULT_STUDY_SIZES),
                   help="image sizes of --task study (multiples of 32)")
    p.add_argument("--nms", choices=NMS_CHOICES, default=NMS_AUTO, help=NMS_HELP)
    p.add_argument("--augment", action=bool_flag, default=False,
                   help="test-time augmentation (full, flipped x1.2, x0.83, flipped x0.67 views merged "
                        "before NMS); merge-NMS unless --nms plain is given")
    p.add_argument("--rect", action=bool_flag, default=True, help="rectangular batches (less padding)")
    p.add_argument("--save-json", action=bool_flag, default=False, help="write predictions.json (COCO)")
    p.add_argument("--plots", action=bool_flag, default=True, help="PR/F1 curves, confusion matrix, batch 0")
    p.add_argument("--device", default="", help="'' (auto), 'cpu', '0', 'cuda:1'")
    p.add_argument("--half", action=bool_flag, default=False,
                   help="reduced precision: float16 on CUDA, bfloat16 on a CPU (boxes and NMS stay float32); "
                        "off by default so scores are exact")
    p.add_argument("--per-class", action=bool_flag, default=False,
                   help="a row per class in the console table")
    p.add_argument("--verbose", action=bool_flag, default=False, help="debug logging")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="dataloader workers")
    p.add_argument("--project", default="runs/val", help="results go to project/name")
    p.add_argument("--name", default="exp", help="run folder name (auto-incremented: exp, exp2, ...)")
    p.add_argument("--exist-ok", action=bool_flag, default=False, help="reuse project/name, do not increment")
    return p


def check_args(args: argparse.Namespace) -> None:
    """Option values refused before any work: they would crash later or score a silent mAP of 0."""
    if args.img_size is not None:
        check_img_size(args.img_size)
    check_positive(args.batch_size, "batch_size")
    check_positive(args.workers, "workers", minimum=0)
    for flag in ("conf_thres", "iou_thres"):
        check_fraction(getattr(args, flag), flag)


def main(args: argparse.Namespace) -> dict[str, Any]:
    from build_utils.datasets import validation_loader
    from modules.backends import load_backend
    from modules.class_transfer import class_indices
    from modules.memory_estimate import check_model_memory
    from modules.model_fit import input_size, model_classes
    from train_val_utils.engine import evaluate, scoring_options
    from train_val_utils.evaluation.reporting import record_map_text

    setup_logging(args.verbose)
    check_args(args)
    device = select_device(args.device)
    fit_threads_to_free_cores(device)
    data = parse_data_cfg(args.data)
    names = data["class_names"]
    model = load_backend(args.weights, args.cfg, device, half=inference_half(args.half, device), fuse=True,
                         channels_last=True)
    logger.info("validation: %s on %s", model.precision, device)
    model_classes(model.nc, names, data.get("category_ids"), names_source=args.data,
                  model_source=args.weights)
    size_changing = "--augment" if args.augment else "--task study" if args.task == "study" else None
    size = input_size(args.img_size, trained=model.img_size, stride=model.stride, fixed_hw=model.fixed_hw,
                      model_source=Path(args.weights).name, size_changing=size_changing)
    img_size, rect = size.img_size, args.rect and size.allows_rect
    check_model_memory(model, args.weights, batch=args.batch_size, img_size=img_size, device=device)

    def make_loader(size: int) -> torch.utils.data.DataLoader:
        return validation_loader(data["valid"], size, args.batch_size, len(names), rect, args.workers,
                                 pin_memory=device.type == "cuda")

    options = scoring_options(data, args.data, conf_thres=args.conf_thres, iou_thres=args.iou_thres,
                              plots=args.plots, save_json=args.save_json, per_class=args.per_class,
                              augment=args.augment, nms=args.nms,
                              classes=class_indices(args.classes, names, args.data) if args.classes else None)
    if args.task == "speed":
        return run_speed_task(model, make_loader(img_size), device, options)
    save_dir = make_run_dir(args.project, args.name, exist_ok=args.exist_ok)
    if args.task == "study":
        return run_study_task(model, make_loader, names, device, options, args.study_sizes, save_dir)
    results = evaluate(model, make_loader(img_size), names, device, options, save_dir=save_dir)
    (save_dir / "metrics.json").write_text(json.dumps(results, indent=1))
    (save_dir / "record_mAP.txt").write_text(record_map_text(results))
    logger.info("Results saved to %s", save_dir)
    return results


def run_speed_task(model: Any, loader: Any, device: torch.device, options: Any) -> dict[str, Any]:
    """--task speed: the timing split at deployment thresholds, nothing else."""
    from train_val_utils.benchmarks.study import measure_speed
    from train_val_utils.evaluation.reporting import speed_line

    speed = measure_speed(model, loader, device, options)
    print(speed_line(speed))
    return {"speed_ms": speed, "nms": options.nms, "augment": options.augment}


def run_study_task(model: Any, make_loader: Any, names: list[str], device: torch.device, options: Any,
                   sizes: list[int], save_dir: Path) -> dict[str, Any]:
    """--task study: mAP and ms/img per size -> study.csv, study.png."""
    from train_val_utils.benchmarks.study import run_study, write_study

    bad = [s for s in sizes if s < 32 or s % 32]
    if bad:
        raise ConfigError(f"--study-sizes {bad}: sizes must be positive multiples of 32 (e.g. 320 384 416)")
    rows = run_study(model, make_loader, names, device, options, sizes)
    csv_path, png_path = write_study(rows, save_dir)
    logger.info("study (nms %s, TTA %s): %s", options.nms, "on" if options.augment else "off",
                ", ".join(f"{r['img_size']}: mAP {r['map']:.3f} {r['ms_per_img']:.1f}ms" for r in rows))
    logger.info("Results saved to %s and %s", csv_path, png_path)
    return {"study": rows, "nms": options.nms, "augment": options.augment}


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser().parse_args()))
