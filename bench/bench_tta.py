"""Accuracy and speed of plain NMS, merge-NMS, TTA and TTA + merge on coco128 (official yolov3-tiny).

    python bench/bench_tta.py                        # ../shared/reference, 416, CPU, markdown table
    python bench/bench_tta.py --device 0 --img-size 416 --batch-size 16

Runs `evaluate` four times on the same loader (rect batches, conf 0.001, IoU 0.6) and prints one
markdown row per mode: COCO mAP@0.5:0.95, mAP@0.5 and ms per image (pre + inference + NMS). On a
shared machine the absolute timings are noisy; the ratios to the plain row are what to compare.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from build_utils.cli import run_cli, setup_logging
from build_utils.datasets import LoadImagesAndLabels, collate_fn
from build_utils.parse_config import load_class_names
from build_utils.torch_utils import select_device
from modules.loading import load_model
from train_val_utils.engine import EvalOptions, evaluate

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"
MODES = (("plain", False, "plain"), ("merge", False, "merge"), ("TTA", True, "plain"),
         ("TTA + merge", True, "merge"))  # (row label, augment, nms)
logger = logging.getLogger("bench_tta")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", default=str(REFERENCE / "coco128" / "images" / "train"))
    p.add_argument("--weights", default=str(REFERENCE / "weights" / "yolov3-tiny.weights"))
    p.add_argument("--cfg", default=str(REPO / "cfg" / "yolov3-tiny.cfg"))
    p.add_argument("--names", default=str(REPO / "data" / "coco.names"))
    p.add_argument("--img-size", type=int, default=416)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    return p


def main(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    names = load_class_names(args.names)
    model, _ = load_model(args.weights, args.cfg, device=device, fuse=True)
    dataset = LoadImagesAndLabels(args.images, args.img_size, args.batch_size, rect=True, nc=len(names),
                                  pad=0.5)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, collate_fn=collate_fn)
    rows = []
    for label, augment, nms in MODES:
        res = evaluate(model, loader, names, device, EvalOptions(augment=augment, nms=nms))
        ms = sum(res["speed_ms"].values())
        rows.append({"mode": label, "map": res["map"], "map50": res["map50"], "ms": ms})
    base = rows[0]["ms"]
    print(f"\nyolov3-tiny (official weights) on {len(dataset)} coco128 images at {args.img_size}, "
          f"{device}, batch {args.batch_size}, rect\n")
    print("| mode | mAP@0.5:0.95 | mAP@0.5 | ms/img | time vs plain |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['mode']} | {r['map']:.4f} | {r['map50']:.4f} | {r['ms']:.1f} | {r['ms'] / base:.2f}x |")
    return rows


if __name__ == "__main__":
    setup_logging()
    sys.exit(run_cli(main, get_args_parser().parse_args()))
