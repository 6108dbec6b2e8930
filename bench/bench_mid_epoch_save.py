"""What one mid-epoch checkpoint costs: the save alone per cfg, and against a real coco128 epoch.

    python bench/bench_mid_epoch_save.py --cfgs cfg/yolov3-tiny.cfg cfg/yolov3-spp.cfg   # save only
    python bench/bench_mid_epoch_save.py --epoch                  # + one yolov3-tiny coco128 epoch

The save-only part builds the model, an SGD optimizer after one step (so its momentum buffers exist,
as in a real run) and the EMA, then times `build_checkpoint` + the atomic `save_checkpoint` of
last.pt, as `--save-period-steps` does. `--epoch` trains one epoch of yolov3-tiny on coco128 from the
official weights with one mid-epoch save (`--save-period-steps` = half the epoch's optimizer steps)
and prints the save's seconds as a share of the epoch's seconds.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_short_run import REFERENCE, write_data_file  # noqa: E402
from build_utils.cli import ArgumentParser  # noqa: E402
from build_utils.hyp import load_hyp  # noqa: E402
from modules.checkpoint import build_checkpoint, save_checkpoint  # noqa: E402
from modules.model import DarkNet  # noqa: E402
from train_val_utils.training.ema import ModelEMA  # noqa: E402
from train_val_utils.training.optim import build_optimizer  # noqa: E402


def save_seconds(cfg: str, img_size: int, rounds: int, folder: Path) -> tuple[float, int]:
    """(median seconds of build + save of last.pt, file bytes) for `cfg`."""
    model = DarkNet(REPO / cfg)
    optimizer = build_optimizer(model, "sgd", load_hyp(REPO / "cfg/hyp.yaml"))
    model.train()
    out = model(torch.rand(1, 3, img_size, img_size))
    sum(o.float().mean() for o in out).backward()
    optimizer.step()
    ema = ModelEMA(model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    path, times = folder / "last.pt", []
    for _ in range(rounds):
        t0 = time.perf_counter()
        ckpt = build_checkpoint(model, ema, optimizer, scaler, scheduler, 0, 0.0, {}, {"img_size": img_size},
                                [], [])
        save_checkpoint(ckpt, path)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), path.stat().st_size


def epoch_share(img_size: int, batch_size: int, folder: Path) -> tuple[float, float]:
    """(save seconds, epoch seconds) of one coco128 yolov3-tiny epoch with one mid-epoch save."""
    data = write_data_file(folder)
    steps = max(128 // batch_size // 2, 1)
    cmd = [sys.executable, "train.py", "--cfg", "cfg/yolov3-tiny.cfg", "--data", str(data), "--weights",
           str(REFERENCE / "weights" / "yolov3-tiny.weights"), "--img-size", str(img_size), "--batch-size",
           str(batch_size), "--nbs", str(batch_size), "--epochs", "1", "--notest", "--device", "cpu",
           "--workers", "2", "--save-period-steps", str(steps), "--project", str(folder), "--name", "run"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"train.py failed:\n{proc.stderr[-2000:]}")
    save = float(re.search(r"mid-epoch save: .* written in ([\d.]+) s", proc.stderr).group(1))
    rows = list(csv.DictReader((folder / "run" / "results.csv").open()))
    return save, float(rows[0]["seconds"])


def main() -> int:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--cfgs", nargs="+", default=["cfg/yolov3-tiny.cfg", "cfg/yolov3-spp.cfg"])
    p.add_argument("--img-size", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epoch", action=argparse.BooleanOptionalAction, default=False,
                   help="also time one coco128 yolov3-tiny epoch with one mid-epoch save")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print("| cfg | last.pt MB | save s (median) |\n| --- | --- | --- |")
        for cfg in args.cfgs:
            seconds, size = save_seconds(cfg, args.img_size, args.rounds, Path(tmp))
            print(f"| {cfg} | {size / 1e6:.1f} | {seconds:.3f} |", flush=True)
        if args.epoch:
            save, epoch = epoch_share(args.img_size, args.batch_size, Path(tmp))
            print(f"coco128 yolov3-tiny epoch at {args.img_size}, batch {args.batch_size}: {epoch:.1f} s; "
                  f"one mid-epoch save {save:.3f} s = {100 * save / epoch:.2f}% of the epoch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
