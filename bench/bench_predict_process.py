"""Predict timed as a user times it: the whole `python predict.py ...` process, start to exit.

    python bench/bench_predict_process.py                                  # this checkout only
    python bench/bench_predict_process.py --other /tmp/basewt --rounds 3   # alternate two checkouts
    python bench/bench_predict_process.py --busy 2                         # with two spinning processes

Default run: the plain command, yolov3-tiny from the official Darknet weights over the 128 coco128
images at 416 on the CPU, annotated images saved (into a temporary folder). With `--other`, the two
checkouts run alternately (this, other, this, other, ...) so drift in a shared machine's load hits
both; the table gives each run's seconds and images/s (128 images over the whole process, start-up
included) and the ratio of the medians. `--busy N` starts N `while 1: pass` processes before each
timed run and stops them after it: predict's throughput when other work loads the cores.
`--extra` arguments go to both checkouts' predict.py (e.g. `--extra --no-half`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from checkout_timing import REFERENCE, alternate, checkout_parser, fail, print_table  # bench/ is on sys.path


def get_args_parser() -> argparse.ArgumentParser:
    p = checkout_parser(__doc__)
    p.add_argument("--source", default=str(REFERENCE / "coco128" / "images" / "train"),
                   help="folder of images (default: the 128 coco128 images)")
    p.add_argument("--weights", default=str(REFERENCE / "weights" / "yolov3-tiny.weights"),
                   help="what predict.py runs (an exported .onnx ignores --cfg and --names)")
    p.add_argument("--cfg", default="cfg/yolov3-tiny.cfg", help="cfg for Darknet weights")
    p.add_argument("--img-size", type=int, default=416)
    p.add_argument("--busy", type=int, default=0, help="spinning processes competing during each run")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more predict.py arguments")
    return p


def count_images(folder: Path) -> int:
    return sum(1 for f in folder.rglob("*") if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))


def start_busy(n: int) -> list[subprocess.Popen]:
    """`n` processes that spin forever (one core each when they get it); stopped by `stop_busy`."""
    return [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(n)]


def stop_busy(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()


def time_run(checkout: Path, out: Path, args: argparse.Namespace) -> float:
    model = ["--cfg", args.cfg, "--names", "data/coco.names"] if not args.weights.endswith(".onnx") else []
    cmd = [sys.executable, "predict.py", "--weights", args.weights, *model, "--source", args.source,
           "--img-size", str(args.img_size), "--device", "cpu", "--project", str(out), "--name", "run",
           *args.extra]
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    busy = start_busy(args.busy)
    try:
        time.sleep(0.5 if busy else 0)  # let the competitors reach their loop first
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    finally:
        stop_busy(busy)
    if proc.returncode:
        fail(checkout, "predict.py", proc.stderr)
    return seconds


def main(args: argparse.Namespace) -> int:
    n = count_images(Path(args.source))
    with tempfile.TemporaryDirectory() as tmp:
        times = alternate(args.other, args.rounds, lambda c, tag: time_run(c, Path(tmp) / tag, args),
                          per_run=lambda s: f" ({n / s:.1f} images/s)")
    print(f"{n} images at {args.img_size}, {args.busy} busy process(es), extra {args.extra or 'none'}; "
          f"1-min load average at the end: {os.getloadavg()[0]:.1f}")
    print_table(times, rate=lambda s: f"{n / s:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
