"""Forward-pass speed of DarkNet: ms/image per cfg, input size, batch, fused/unfused, device.

    python bench/bench_model.py                       # CPU: yolov3-spp and yolov3-tiny, 320/416, batch 1/8
    python bench/bench_model.py --device 0 --repeats 20

Random weights (speed does not depend on their values); eval mode under torch.inference_mode.
Prints a markdown table for BENCHMARKS.md. Median of --repeats timed runs after --warmup runs.
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import sys
from pathlib import Path

import torch

from build_utils.cli import ArgumentParser, run_cli, setup_logging
from build_utils.torch_utils import select_device, time_sync
from modules.model import DarkNet

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cfgs", nargs="+", default=["cfg/yolov3-spp.cfg", "cfg/yolov3-tiny.cfg"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[320, 416], help="square input sizes")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--device", default="cpu", help="'cpu', a GPU index such as '0', or '' for auto")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per setting (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs before timing")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="run in channels_last memory format (faster convs on CPU and GPU)")
    parser.add_argument("--half", action=argparse.BooleanOptionalAction, default=False,
                        help="float16 on CUDA (ignored on CPU)")
    return parser


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one (Linux), else platform's guess."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def time_forward(model: DarkNet, x: torch.Tensor, repeats: int, warmup: int) -> float:
    """Median seconds of one forward of batch `x`."""
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            start = time_sync()
            model(x)
            if i >= warmup:
                times.append(time_sync() - start)
    return statistics.median(times)


def main(args: argparse.Namespace) -> None:
    setup_logging()
    device = select_device(args.device)
    dtype = torch.float16 if args.half and device.type == "cuda" else torch.float32
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"dtype {dtype}, channels_last {args.channels_last}")
    print("| cfg | size | batch | unfused ms/img | fused ms/img |")
    print("| --- | --- | --- | --- | --- |")
    for cfg in args.cfgs:
        path = Path(cfg) if Path(cfg).is_file() else REPO / cfg
        torch.manual_seed(0)
        unfused = DarkNet(path).eval().to(device, dtype).to(memory_format=fmt)
        fused = DarkNet(path).eval().fuse().to(device, dtype).to(memory_format=fmt)
        for size in args.sizes:
            for batch in args.batches:
                x = torch.rand(batch, 3, size, size, device=device, dtype=dtype).contiguous(memory_format=fmt)
                row = [time_forward(m, x, args.repeats, args.warmup) / batch * 1e3 for m in (unfused, fused)]
                print(f"| {path.name} | {size} | {batch} | {row[0]:.1f} | {row[1]:.1f} |", flush=True)


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser().parse_args()))
