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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--other", default=None,
                   help="a second checkout to time alternately (e.g. the previous main)")
    p.add_argument("--rounds", type=int, default=1, help="runs per checkout")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--img-size", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train.py arguments")
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
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{checkout}: train.py failed:\n{proc.stderr[-2000:]}")
    return seconds


def main(args: argparse.Namespace) -> int:
    checkouts = [REPO] + ([Path(args.other).resolve()] if args.other else [])
    times: dict[Path, list[float]] = {c: [] for c in checkouts}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_data_file(Path(tmp))
        for r in range(args.rounds):
            for c in checkouts:
                seconds = time_run(c, data, Path(tmp) / f"runs{r}_{len(times[c])}_{c.name}", args)
                times[c].append(seconds)
                print(f"round {r}: {c}: {seconds:.1f} s", flush=True)
    print("| checkout | runs (s) | median s |\n| --- | --- | --- |")
    for c, ts in times.items():
        print(f"| {c} | {', '.join(f'{t:.1f}' for t in ts)} | {statistics.median(ts):.1f} |")
    if args.other:
        mine, other = (statistics.median(times[c]) for c in checkouts)
        print(f"speed-up of {REPO.name} over {checkouts[1].name}: {other / mine:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
