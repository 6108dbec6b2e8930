"""Export a model to every format and validate each: one table of size, mAP and speed per format.

    python benchmark.py --weights weights/best.pt --data data/my.data --img-size 416
    python benchmark.py --weights yolov3-tiny.weights --cfg cfg/yolov3-tiny.cfg --data data/coco128.data

Rows: PyTorch (as validation.py runs it: fused, channels_last), PyTorch contiguous, TorchScript, ONNX Runtime
fp32, ONNX Runtime int8 (static quantization, per-channel weights, QDQ, calibrated on --calib-images images of
the train split).
Columns: format, file MB, mAP@0.5:0.95, mAP@0.5, ms/img pre/forward/NMS, img/s. The table is printed and
written to runs/benchmark/expN/results.csv and results.md, beside the exported files. A format that fails
keeps its row with the reason.
"""

from __future__ import annotations

import build_utils.omp_env  # noqa: F401 - first: OpenMP threads then sleep, not spin, when idle

# isort: split
import argparse
import os
import sys
from pathlib import Path

from build_utils.cli import (
    ArgumentParser,
    check_img_size,
    check_positive,
    run_cli,
    setup_logging,
)
from train_val_utils.benchmarks.format_benchmark import BenchmarkOptions, FormatRow, run_benchmark


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--weights", required=True, help="a .pt, or Darknet .weights with --cfg")
    p.add_argument("--cfg", default=None, help="model cfg; required for Darknet .weights")
    p.add_argument("--data", required=True, help=".data file: valid= is scored, train= calibrates int8")
    p.add_argument("--img-size", type=int, default=None,
                   help="inference size (multiple of 32); None = the .pt's training size, else 416")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward")
    p.add_argument("--device", default="", help="'' (auto), 'cpu', '0', 'cuda:1'")
    p.add_argument("--calib-images", type=int, default=32, help="train-split images for the int8 ranges")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="dataloader workers")
    p.add_argument("--project", default="runs/benchmark", help="results go to project/name")
    p.add_argument("--name", default="exp", help="run folder name (auto-incremented)")
    p.add_argument("--verbose", action=argparse.BooleanOptionalAction, default=False, help="debug logging")
    return p


def main(args: argparse.Namespace) -> list[FormatRow]:
    setup_logging(args.verbose)
    if args.img_size is not None:
        check_img_size(args.img_size)
    check_positive(args.batch_size, "batch_size")
    check_positive(args.calib_images, "calib_images")
    check_positive(args.workers, "workers", minimum=0)
    opts = BenchmarkOptions(weights=Path(args.weights), data=Path(args.data),
                            cfg=Path(args.cfg) if args.cfg else None, img_size=args.img_size,
                            batch_size=args.batch_size, device=args.device, calib_images=args.calib_images,
                            workers=args.workers, project=args.project, name=args.name)
    rows, _ = run_benchmark(opts)
    return rows


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser().parse_args()))
