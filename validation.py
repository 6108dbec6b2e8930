"""Score a model on a dataset's validation images: COCO metrics, per-class AP, plots, reports.

    python validation.py --weights weights/best.pt --data data/my.data
    python validation.py --weights yolov3-tiny.weights --cfg cfg/yolov3-tiny.cfg --data data/coco128.data

Writes into runs/val/expN: metrics.json, record_mAP.txt (COCO summary + per-class AP@0.5), the plots,
and with --save-json predictions.json (COCO results format).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

import torch

from build_utils.cli import HelpFormatter, run_cli, setup_logging
from build_utils.data_yaml import parse_category_ids
from build_utils.errors import ConfigError
from build_utils.parse_config import parse_data_cfg
from build_utils.run_dir import increment_path
from build_utils.torch_utils import select_device

logger = logging.getLogger("validation")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    bool_flag = argparse.BooleanOptionalAction
    p.add_argument("--weights", required=True, help="a .pt (carries cfg, names) or Darknet .weights")
    p.add_argument("--cfg", default=None, help="model cfg; required for Darknet .weights")
    p.add_argument("--data", required=True,
                   help=".data file or dataset YAML; its valid/val images are scored")
    p.add_argument("--img-size", type=int, default=None,
                   help="inference size (pixels, multiple of 32); None = the .pt's training size, else 416")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward")
    p.add_argument("--conf-thres", type=float, default=0.001, help="drop detections scoring below this")
    p.add_argument("--iou-thres", type=float, default=0.6, help="NMS IoU threshold")
    p.add_argument("--rect", action=bool_flag, default=True, help="rectangular batches (less padding)")
    p.add_argument("--save-json", action=bool_flag, default=False, help="write predictions.json (COCO)")
    p.add_argument("--plots", action=bool_flag, default=True, help="PR/F1 curves, confusion matrix, batch 0")
    p.add_argument("--device", default="", help="'' (auto), 'cpu', '0', 'cuda:1'")
    p.add_argument("--half", action=bool_flag, default=False, help="FP16 inference (CUDA only)")
    p.add_argument("--verbose", action=bool_flag, default=False, help="per-class rows in the table")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="dataloader workers")
    p.add_argument("--project", default="runs/val", help="results go to project/name")
    p.add_argument("--name", default="exp", help="run folder name (auto-incremented: exp, exp2, ...)")
    p.add_argument("--exist-ok", action=bool_flag, default=False, help="reuse project/name, do not increment")
    return p


def main(args: argparse.Namespace) -> dict[str, Any]:
    from build_utils.datasets import LoadImagesAndLabels, collate_fn
    from modules.loading import default_img_size, load_model
    from train_val_utils.engine import EvalOptions, evaluate
    from train_val_utils.reporting import record_map_text

    device = select_device(args.device)
    data = parse_data_cfg(args.data)
    names = data["class_names"]
    model, _ = load_model(args.weights, args.cfg, device=device, fuse=True)
    if model.nc != len(names):
        raise ConfigError(f"{args.data}: {len(names)} classes, but the model ({args.weights}) predicts "
                          f"{model.nc}; pass the .data the model was trained with")
    if args.half and device.type != "cuda":
        logger.warning("--half needs CUDA; running in float32 on %s", device)
    elif args.half:
        model.half()
    category_ids = parse_category_ids(data.get("category_ids"), args.data)
    coco_json = data.get("valid_json")
    if coco_json is not None and category_ids is None:
        raise ConfigError(f"{args.data}: valid_json= needs category_ids= (class index -> COCO category id)")
    if category_ids is not None and len(category_ids) != len(names):
        raise ConfigError(f"{args.data}: category_ids has {len(category_ids)} ids for {len(names)} classes")

    img_size = default_img_size(args.img_size, model)
    dataset = LoadImagesAndLabels(data["valid"], img_size, args.batch_size, rect=args.rect,
                                  nc=len(names), pad=0.5 if args.rect else 0.0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=False,
                                         num_workers=args.workers, collate_fn=collate_fn,
                                         pin_memory=device.type == "cuda")
    save_dir = increment_path(args.project, args.name, exist_ok=args.exist_ok)
    options = EvalOptions(conf_thres=args.conf_thres, iou_thres=args.iou_thres, plots=args.plots,
                          save_json=args.save_json, verbose=args.verbose, coco_json=coco_json,
                          category_ids=category_ids)
    results = evaluate(model, loader, names, device, options, save_dir=save_dir)
    (save_dir / "metrics.json").write_text(json.dumps(results, indent=1))
    (save_dir / "record_mAP.txt").write_text(record_map_text(results))
    logger.info("Results saved to %s", save_dir)
    return results


if __name__ == "__main__":
    setup_logging()
    sys.exit(run_cli(main, get_args_parser().parse_args()))
