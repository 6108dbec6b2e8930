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
    p.add_argument("--source", default=str(REFERENCE / "coco128" / "images" / "train"),
                   help="folder of images (default: the 128 coco128 images)")
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
    cmd = [sys.executable, "predict.py", "--weights", str(REFERENCE / "weights" / "yolov3-tiny.weights"),
           "--cfg", "cfg/yolov3-tiny.cfg", "--names", "data/coco.names", "--source", args.source,
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
        raise SystemExit(f"{checkout}: predict.py failed:\n{proc.stderr[-2000:]}")
    return seconds


def main(args: argparse.Namespace) -> int:
    checkouts = [REPO] + ([Path(args.other).resolve()] if args.other else [])
    n = count_images(Path(args.source))
    times: dict[Path, list[float]] = {c: [] for c in checkouts}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for c in checkouts:
                seconds = time_run(c, Path(tmp) / f"runs{r}_{len(times[c])}_{c.name}", args)
                times[c].append(seconds)
                print(f"round {r}: {c}: {seconds:.1f} s ({n / seconds:.1f} images/s)", flush=True)
    print(f"{n} images at {args.img_size}, {args.busy} busy process(es), extra {args.extra or 'none'}; "
          f"load average before the last run ended: {os.getloadavg()[0]:.1f}")
    print("| checkout | runs (s) | median s | images/s |\n| --- | --- | --- | --- |")
    for c, ts in times.items():
        med = statistics.median(ts)
        print(f"| {c} | {', '.join(f'{t:.1f}' for t in ts)} | {med:.1f} | {n / med:.1f} |")
    if args.other:
        mine, other = (statistics.median(times[c]) for c in checkouts)
        print(f"speed-up of {REPO.name} over {checkouts[1].name}: {other / mine:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
