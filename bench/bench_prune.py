"""Pruned vs unpruned: FLOPs, parameters and fused CPU forward time, plus the file checks of a pruned cfg.

    python bench/bench_prune.py --compare runs/train/exp/weights/best.pt runs/prune/last-pruned.pt
    python bench/bench_prune.py --random-cfg cfg/yolov3-spp.cfg --percent 50   # seeded random BN scales

--random-cfg builds the cfg with seeded random batch-norm scales (a fresh cfg's scales all tie at 1.0),
prunes it with data/scripts/prune.py and checks the result: the cfg parses and passes the graph check,
the .pt loads, ONNX export matches PyTorch, and .weights -> model -> .weights is byte-identical.
Timing alternates the two models run by run (batch 1, fused, eval, channels_last) so a busy machine
slows both alike; the ratio of medians is the number to quote.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from build_utils.cli import ArgumentParser, run_cli, setup_logging  # noqa: E402
from build_utils.torch_utils import time_sync  # noqa: E402
from modules.export_utils import (  # noqa: E402
    export_onnx,
    max_abs_diff,
    onnx_outputs,
    reference_output,
    save_as_checkpoint,
)
from modules.loading import load_model  # noqa: E402
from modules.model import DarkNet, count_gflops  # noqa: E402
from modules.prune import seed_bn_scales  # noqa: E402
from modules.weights import load_darknet_weights, save_darknet_weights  # noqa: E402

logger = logging.getLogger(__name__)


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="two .pt files to time")
    what.add_argument("--random-cfg", help="cfg to prune with seeded random batch-norm scales")
    p.add_argument("--percent", type=float, default=50.0, help="--random-cfg: prune.py --percent")
    p.add_argument("--seed", type=int, default=0, help="--random-cfg: seed of the batch-norm scales")
    p.add_argument("--img-size", type=int, default=416, help="timing and FLOPs input size")
    p.add_argument("--repeats", type=int, default=20, help="timed forwards per model (alternating)")
    p.add_argument("--warmup", type=int, default=3, help="untimed forwards per model first")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--out", type=Path, default=None, help="--random-cfg: folder (default: temp)")
    return p


def time_pair(models: list[DarkNet], img_size: int, repeats: int, warmup: int) -> list[float]:
    """Median ms of a batch-1 forward of each model, runs interleaved model by model."""
    x = torch.rand(1, 3, img_size, img_size).contiguous(memory_format=torch.channels_last)
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for i in range(warmup + repeats):
            for model, bucket in zip(models, times):
                start = time_sync()
                model(x)
                if i >= warmup:
                    bucket.append((time_sync() - start) * 1e3)
    return [statistics.median(t) for t in times]


def _for_timing(model: DarkNet) -> DarkNet:
    return model.eval().fuse().to(memory_format=torch.channels_last)


def report(before: DarkNet, after: DarkNet, args: argparse.Namespace) -> dict[str, float]:
    """One markdown table row pair: GFLOPs, parameters and fused ms at --img-size."""
    sizes = [(count_gflops(m, args.img_size, args.img_size), sum(p.numel() for p in m.parameters()))
             for m in (before, after)]
    ms = time_pair([_for_timing(before), _for_timing(after)], args.img_size, args.repeats, args.warmup)
    print(f"| model | GFLOPs @{args.img_size} | parameters | fused CPU ms (batch 1, "
          f"{torch.get_num_threads()} threads) |")
    print("| --- | --- | --- | --- |")
    for name, (gf, n), t in zip(("before", "after"), sizes, ms):
        print(f"| {name} | {gf:.3f} | {n:,} | {t:.1f} |")
    print(f"FLOPs {sizes[1][0] / sizes[0][0]:.3f}x, parameters {sizes[1][1] / sizes[0][1]:.3f}x, "
          f"speed-up {ms[0] / ms[1]:.2f}x")
    return {"flops_ratio": sizes[1][0] / sizes[0][0], "speedup": ms[0] / ms[1]}


def check_files(out: dict[str, str], img_size: int, folder: Path) -> None:
    """Parse + graph check, .pt load, ONNX against PyTorch, byte-identical .weights round trip."""
    from_cfg = DarkNet(out["cfg"])
    load_darknet_weights(from_cfg, out["weights"])
    save_darknet_weights(from_cfg, folder / "again.weights")
    same = (folder / "again.weights").read_bytes() == Path(out["weights"]).read_bytes()
    print(f"cfg parses and passes the graph check; .weights round trip byte-identical: {same}")
    model, _ = load_model(out["pt"])
    x = torch.rand(1, 3, img_size, img_size)
    onnx_path = export_onnx(model, x, folder / "pruned.onnx")
    diff, _ = max_abs_diff(onnx_outputs(onnx_path, x), reference_output(model, x), img_size)
    print(f"ONNX export {onnx_path.stat().st_size / 1e6:.1f} MB, max |onnx - torch| {diff:.2e}")


def main(args: argparse.Namespace) -> dict[str, float]:
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compare:
        return report(load_model(args.compare[0])[0], load_model(args.compare[1])[0], args)
    from data.scripts import prune

    folder = args.out or Path(tempfile.mkdtemp(prefix="bench_prune_"))
    folder.mkdir(parents=True, exist_ok=True)
    model = seed_bn_scales(DarkNet(args.random_cfg), args.seed)
    names = [f"class{i}" for i in range(model.nc)]
    save_as_checkpoint(model, names, folder / "random.pt", {"seed_bn_scales": args.seed})
    out = prune.main(prune.get_args_parser().parse_args(
        ["--weights", str(folder / "random.pt"), "--percent", str(args.percent),
         "--img-size", str(args.img_size), "--out", str(folder / "pruned")]))
    check_files(out, args.img_size, folder)
    return report(model, load_model(out["pt"])[0], args)


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser().parse_args()))
