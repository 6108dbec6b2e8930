"""A short fine-tune timed as a user times it: the whole `python train.py ...` process, start to exit.

    python bench/bench_short_run.py                               # this checkout only
    python bench/bench_short_run.py --other ../old-checkout --rounds 2   # alternate two checkouts

Default run: 3 epochs of yolov3-tiny from the official weights on coco128 at 320, batch 16,
`--notest` (so the last epoch is evaluated and the final evaluation and plots follow), on the CPU.
With `--other`, the two checkouts run alternately (this, other, this, other, ...) so drift in a
shared machine's load hits both; the table gives each run's seconds and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from checkout_timing import (  # bench/ on sys.path
    REFERENCE,
    REPO,
    alternate,
    checkout_parser,
    fail,
    print_table,
)


def get_args_parser() -> argparse.ArgumentParser:
    p = checkout_parser(__doc__)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--img-size", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--this-extra", default="", metavar="ARGS",
                   help="train.py arguments for this checkout only, quoted (e.g. \"--close-mosaic 0\" for "
                        "an option the other checkout lacks)")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train.py arguments (both)")
    return p


def write_data_file(folder: Path) -> Path:
    """A .data for the reference coco128 (train and valid are the same 128 images, as in the classic runs)."""
    images = REFERENCE / "coco128" / "images" / "train"
    if not images.is_dir():
        raise SystemExit(f"coco128 not found at {images} (it ships beside the checkout as ../shared)")
    path = folder / "coco128.data"
    path.write_text(f"classes=80\ntrain={images}\nvalid={images}\nnames={REPO / 'data' / 'coco.names'}\n")
    return path


def time_run(checkout: Path, data: Path, out: Path, args: argparse.Namespace) -> float:
    cmd = [sys.executable, "train.py", "--cfg", "cfg/yolov3-tiny.cfg", "--data", str(data), "--weights",
           str(REFERENCE / "weights" / "yolov3-tiny.weights"), "--img-size", str(args.img_size),
           "--batch-size", str(args.batch_size), "--epochs", str(args.epochs), "--notest", "--device", "cpu",
           "--project", str(out), "--name", "run", *args.extra]
    if checkout == REPO:
        cmd += shlex.split(args.this_extra)
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        fail(checkout, "train.py", proc.stderr)
    return seconds


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        data = write_data_file(Path(tmp))
        times = alternate(args.other, args.rounds, lambda c, tag: time_run(c, data, Path(tmp) / tag, args))
    print_table(times)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
