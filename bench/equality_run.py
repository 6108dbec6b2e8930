"""The redesign's equality run: a seeded, `--deterministic` 3-epoch CPU training on the shapes data.

Prints the sha256 of the final `last.pt` model state dict (every tensor's bytes, in key order) and the
logged losses, so a refactor that must not change behaviour can show the same hash before and after.
Speed switches that change float rounding are turned off here (`--no-amp`: float32, not the bfloat16
that is the default on CPUs with AVX512_BF16; `--no-channels-last`, `--no-compile` where the trainer
has them), and `--close-mosaic 0` keeps mosaics in all 3 epochs as when the hash was recorded.
The hash depends on the machine and the OpenCV version (the images are drawn and augmented with it), so
compare two checkouts on one machine in one environment (BENCHMARKS.md lists the hashes seen).

    python bench/equality_run.py            # makes data/shapes-eq (96 train, 32 val, 160 px) when absent
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def state_hash(ckpt_path: Path, key: str = "model") -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor of `ckpt[key]`, in key order."""
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)[key]
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        raw = tensor.view(torch.int16) if tensor.dtype == torch.bfloat16 else tensor
        digest.update(raw.numpy().tobytes())
    return digest.hexdigest()


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data/shapes-eq", help="shapes dataset folder (made when absent)")
    p.add_argument("--project", default="runs/equality", help="run folder parent")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train.py arguments")
    return p


def main(args: argparse.Namespace) -> int:
    data_dir = REPO / args.data_dir
    if not (data_dir / "shapes.data").is_file():
        subprocess.run([sys.executable, "data/scripts/make_shapes.py", "--out", str(data_dir),
                        "--n-train", "96", "--n-val", "32", "--img-size", "160", "--seed", "0"],
                       cwd=REPO, check=True)
    help_text = subprocess.run([sys.executable, "train.py", "--help"], cwd=REPO, capture_output=True,
                               text=True).stdout
    switches = [s for s in ("--no-channels-last", "--no-compile") if s in help_text]
    if "--close-mosaic" in help_text:  # mosaic in every epoch, as the run was recorded
        switches += ["--close-mosaic", "0"]
    data_file = str(data_dir / "shapes.data")
    cmd = [sys.executable, "train.py", "--cfg", "cfg/yolov3-demo.cfg", "--data", data_file,
           "--hyp", "cfg/hyp-demo.yaml", "--epochs", "3", "--batch-size", "16", "--img-size", "160",
           "--workers", "0", "--device", "cpu", "--seed", "0", "--deterministic", "--notest",
           "--project", args.project, "--name", "exp", "--exist-ok", "--no-amp", *switches, *args.extra]
    subprocess.run(cmd, cwd=REPO, check=True)
    run = REPO / args.project / "exp"
    print((run / "results.csv").read_text())
    print("model sha256:", state_hash(run / "weights" / "last.pt"))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
