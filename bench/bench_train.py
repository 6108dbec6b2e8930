"""Training-step speed, split into data / forward / loss / backward / optimizer.

    python bench/bench_train.py                     # CPU: yolov3-spp and yolov3-tiny, batch 8, 320, coco128
    python bench/bench_train.py --cfgs cfg/yolov3-tiny.cfg --iters 10
    python bench/bench_train.py --device 0 --img-size 512 --batch-size 32 --amp

Real targets: batches come from `LoadImagesAndLabels` on coco128 (`--data`, default
../shared/reference/coco128/images/train) with the training augmentation of cfg/hyp.yaml (mosaic,
HSV, flips) and num_workers=0, so "data" is the in-process cost of making one batch. "loss" is
the `YoloLoss` call (which includes `build_targets`, also timed alone as "targets"); "optimizer" is
the SGD step, zero_grad and the EMA update. Random weights, medians over --iters steps after
--warmup untimed steps. Prints a markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from build_utils.cli import ArgumentParser, run_cli, setup_logging
from build_utils.datasets import LoadImagesAndLabels, collate_fn
from build_utils.errors import UserError
from build_utils.hyp import load_hyp
from build_utils.torch_utils import select_device, time_sync
from modules.model import DarkNet
from train_val_utils.loss import YoloLoss, build_targets
from train_val_utils.training.ema import ModelEMA
from train_val_utils.training.optim import build_optimizer

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
COCO128 = REPO.parent / "shared" / "reference" / "coco128" / "images" / "train"
PHASES = ("data", "forward", "loss", "backward", "optimizer")


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cfgs", nargs="+", default=["cfg/yolov3-spp.cfg", "cfg/yolov3-tiny.cfg"])
    parser.add_argument("--data", default=str(COCO128),
                        help="image folder or list file with YOLO labels (default: shared coco128)")
    parser.add_argument("--hyp", default=str(REPO / "cfg" / "hyp.yaml"), help="hyperparameters (gains, aug)")
    parser.add_argument("--img-size", type=int, default=320, help="square training size, a multiple of 32")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--iters", type=int, default=5, help="timed steps per cfg (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                        help="training augmentation (mosaic, HSV, flips) in the data phase")
    parser.add_argument("--device", default="cpu", help="'cpu', a GPU index such as '0', or '' for auto")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                        help="autocast (bfloat16 on CPU, float16 on CUDA) + GradScaler for the forward/loss")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="model and images in channels_last memory format (train.py default)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                        help="torch.compile the forward (as train.py --compile); compile time is left out "
                             "of the medians by --warmup and printed separately")
    parser.add_argument("--verbose", action=argparse.BooleanOptionalAction, default=False)
    return parser


def batches(dataset: LoadImagesAndLabels, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless in-process batches (shuffled per epoch) so the data time is measured in the step."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0,
                                         collate_fn=collate_fn, drop_last=True)
    epoch = 0
    while True:
        dataset.set_epoch(epoch)
        for imgs, targets, _, _ in loader:
            yield imgs, targets
        epoch += 1


def time_cfg(cfg: str, dataset: LoadImagesAndLabels, hyp: dict, args: argparse.Namespace,
             device: torch.device) -> dict[str, float]:
    """Median seconds per phase of one training step for `cfg`."""
    model = DarkNet(REPO / cfg if not Path(cfg).is_file() else cfg).to(device).train()
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    forward = torch.compile(model) if args.compile else model
    loss_fn = YoloLoss(model, hyp, args.img_size)
    optimizer = build_optimizer(model, "sgd", hyp)
    ema = ModelEMA(model)
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp and device.type == "cuda")
    times: dict[str, list[float]] = {k: [] for k in (*PHASES, "targets")}
    stream = batches(dataset, args.batch_size)
    for step in range(args.warmup + args.iters):
        t0 = time_sync()
        imgs, targets = next(stream)
        imgs = imgs.to(device, non_blocking=True).float().div_(255)  # (bs, 3, H, W) in [0, 1]
        imgs = imgs.contiguous(memory_format=fmt)
        targets = targets.to(device)  # (nt, 6)
        t1 = time_sync()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=args.amp):
            preds = forward(imgs)  # list of (bs, na, ny, nx, 5+nc)
        t2 = time_sync()
        loss, _ = loss_fn(preds, targets)
        t3 = time_sync()
        scaler.scale(loss * args.batch_size / 64).backward()
        t4 = time_sync()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        ema.update(model)
        t5 = time_sync()
        build_targets(preds, targets, model, loss_fn.iou_t)
        t6 = time_sync()
        if step >= args.warmup:
            for k, dt in zip((*PHASES, "targets"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
                times[k].append(dt)
        logger.info("%s step %d: %.3f s (loss %.3f)", Path(cfg).name, step, t5 - t0, loss.item())
    return {k: statistics.median(v) for k, v in times.items()}


def main(args: argparse.Namespace) -> None:
    setup_logging(args.verbose)
    if args.img_size % 32:
        raise UserError(f"--img-size {args.img_size}: use a multiple of 32")
    if not Path(args.data).exists():
        raise UserError(f"--data {args.data}: not found; pass an image folder with YOLO labels (coco128)")
    device = select_device(args.device)
    hyp = load_hyp(args.hyp)
    dataset = LoadImagesAndLabels(args.data, img_size=args.img_size, batch_size=args.batch_size,
                                  augment=args.augment, hyp=hyp)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"batch {args.batch_size}, {args.img_size}px, amp {args.amp}, augment {args.augment}, "
          f"channels_last {args.channels_last}, compile {args.compile}, "
          f"{len(dataset)} images from {args.data}")
    print("| cfg | data s | forward s | loss s (targets s) | backward s | optimizer s | step s "
          "| step w/o data s | loss share | img/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for cfg in args.cfgs:
        t = time_cfg(cfg, dataset, hyp, args, device)
        step = sum(t[k] for k in PHASES)
        compute = step - t["data"]
        print(f"| {Path(cfg).name} | {t['data']:.3f} | {t['forward']:.3f} "
              f"| {t['loss']:.4f} ({t['targets']:.4f}) "
              f"| {t['backward']:.3f} | {t['optimizer']:.3f} | {step:.3f} | {compute:.3f} "
              f"| {100 * t['loss'] / step:.2f}% | {args.batch_size / step:.1f} |", flush=True)


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser().parse_args()))
