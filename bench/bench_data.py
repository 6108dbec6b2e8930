"""Data pipeline throughput: training (mosaic + affine + HSV + flips) and validation (letterbox, rect).

    python bench/bench_data.py                       # coco128 from ../shared/reference, 416, workers 0 and 2
    python bench/bench_data.py --path DIR --img-size 416 --workers 0 2 --epochs 2

The dataset is copied to a temporary folder first (the label cache is written beside the labels).
Also measures the peak memory of `cache_images=True` against the estimate it prints, in a child
process so the numbers are not polluted by this one.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from torch.utils.data import DataLoader

from build_utils.cli import ArgumentParser, run_cli, setup_logging
from build_utils.datasets import LoadImagesAndLabels, collate_fn

LOGGER = logging.getLogger("bench_data")
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "coco128"


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Benchmark the data pipeline (samples/s).")
    parser.add_argument("--path", default=str(REFERENCE), help="dataset root with images/ and labels/")
    parser.add_argument("--img-size", type=int, default=416)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                        help="DataLoader num_workers to try")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the data per measurement")
    parser.add_argument("--affine", action=argparse.BooleanOptionalAction, default=True,
                        help="add degrees 5, translate 0.1, scale 0.5, shear 2 (a real warp, not a crop)")
    parser.add_argument("--cache-child", help=argparse.SUPPRESS)
    return parser


def _rate(ds: LoadImagesAndLabels, workers: int, batch_size: int, epochs: int) -> str:
    """'wall samples/s' and, in-process (workers 0), samples per CPU-second: a load-independent cost."""
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate_fn,
                        persistent_workers=workers > 0)
    next(iter(loader))  # warm-up: worker start-up and first decode are not throughput
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for imgs, *_ in loader:
            n += imgs.shape[0]
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return f"{n / wall:.1f} samples/s" + (f" ({n / cpu:.1f} per CPU-second)" if workers == 0 else "")


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _cache_child(path: str, img_size: int) -> None:
    """Child mode (Linux): peak RSS growth while caching images vs the estimate it logs."""
    ds = LoadImagesAndLabels(path, img_size=img_size)  # verification runs (and is cached) here
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = _status_kb("VmRSS") * 1024
    estimate = ds.cache_estimate_bytes()
    ds2 = LoadImagesAndLabels(path, img_size=img_size, cache_images=True)
    peak = _status_kb("VmHWM") * 1024
    print(json.dumps({"estimate": estimate, "growth": peak - before, "n": len(ds2)}))


def main(args: argparse.Namespace) -> None:
    setup_logging()
    if args.cache_child:
        logging.getLogger().setLevel(logging.ERROR)
        _cache_child(args.cache_child, args.img_size)
        return
    logging.getLogger("build_utils").setLevel(logging.ERROR)  # no per-image warnings in the numbers
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        shutil.copytree(args.path, root)
        images = str(next(p for p in (root / "images").iterdir() if p.is_dir()))
        warp = {"degrees": 5.0, "translate": 0.1, "scale": 0.5, "shear": 2.0} if args.affine else {}
        hyp = warp  # the other augmentation keys take cfg/hyp.yaml's values
        train = LoadImagesAndLabels(images, img_size=args.img_size, augment=True, hyp=hyp)
        val = LoadImagesAndLabels(images, img_size=args.img_size, batch_size=args.batch_size, rect=True)
        for workers in args.workers:
            t = _rate(train, workers, args.batch_size, args.epochs)
            v = _rate(val, workers, args.batch_size, args.epochs)
            LOGGER.info("img %d, workers %d: train (mosaic+affine+HSV+flip) %s, val (letterbox, rect) %s",
                        args.img_size, workers, t, v)
        cached = LoadImagesAndLabels(images, img_size=args.img_size, augment=True, hyp=hyp, cache_images=True)
        LOGGER.info("img %d, workers 0, cache_images: train %s", args.img_size,
                    _rate(cached, 0, args.batch_size, args.epochs))
        cmd = [sys.executable, __file__, "--cache-child", images, "--img-size", str(args.img_size)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        LOGGER.info("cache_images: estimate %.1f MB, peak RSS growth %.1f MB (%.0f%% of the estimate), "
                    "%d images", res["estimate"] / 1e6, res["growth"] / 1e6,
                    100 * res["growth"] / res["estimate"], res["n"])


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser().parse_args()))
