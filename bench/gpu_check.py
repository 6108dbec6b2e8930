"""One command for the first GPU that is lent: AMP, NCCL, half-precision predict and training throughput.

    python bench/gpu_check.py                  # everything; prints one table (paste it into BENCHMARKS.md)
    python bench/gpu_check.py --skip-throughput --steps 10

Checks, each a row of the table:
- fp32 vs AMP float16 vs AMP bfloat16 training steps on yolov3-spp through the real `train_one_epoch`
  (same seed, same synthetic batches): the mean losses agree within --loss-rtol, and the GradScaler
  did not skip every optimizer step;
- a 1-process `torchrun` NCCL training run (yolov3-demo.cfg on a small shapes set);
- `predict.py --half` on the shapes images;
- images/s and model FLOP utilisation (MFU: 3 x forward FLOPs per image / --peak-tflops) for yolov3-spp
  training at 512 with the largest batch that fits.
Without CUDA it says so and exits 0 (CI has no GPU).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from build_utils.hyp import load_hyp  # noqa: E402
from modules.model import DarkNet  # noqa: E402
from train_val_utils.engine import StepSchedule, TrainKit, train_one_epoch  # noqa: E402
from train_val_utils.loss import YoloLoss  # noqa: E402
from train_val_utils.training.distributed_utils import DistInfo  # noqa: E402
from train_val_utils.training.optim import build_optimizer  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default="cfg/yolov3-spp.cfg", help="model for the AMP and throughput rows")
    p.add_argument("--steps", type=int, default=20, help="training batches per precision in the AMP check")
    p.add_argument("--amp-img-size", type=int, default=416, help="image size of the AMP check")
    p.add_argument("--amp-batch-size", type=int, default=8, help="batch size of the AMP check")
    p.add_argument("--loss-rtol", type=float, default=0.05,
                   help="largest relative difference of AMP mean losses from fp32")
    p.add_argument("--img-size", type=int, default=512, help="throughput image size")
    p.add_argument("--max-batch", type=int, default=512, help="largest batch tried for throughput")
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="dense bf16/fp16 peak of the GPU for MFU (H100/H200 SXM: 989)")
    p.add_argument("--skip-throughput", action=argparse.BooleanOptionalAction, default=False)
    return p


def synthetic_batches(n: int, bs: int, size: int, nc: int, seed: int = 0) -> list[tuple]:
    """Fixed uint8 images with 4 random boxes each, in the loader's (imgs, targets, paths, shapes) form."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for b in range(n):
        imgs = torch.randint(0, 256, (bs, 3, size, size), dtype=torch.uint8, generator=gen)
        k = 4 * bs
        cls = torch.randint(0, nc, (k, 1), generator=gen).float()
        wh = torch.rand(k, 2, generator=gen) * 0.4 + 0.05
        xy = torch.rand(k, 2, generator=gen) * (1 - wh) + wh / 2
        img_idx = torch.arange(bs).repeat_interleave(4).float()[:, None]
        paths = [f"synthetic_{b}_{i}" for i in range(bs)]
        out.append((imgs, torch.cat([img_idx, cls, xy, wh], 1), paths, None))
    return out


def amp_row(args: argparse.Namespace, device: torch.device, dtype: torch.dtype | None) -> dict:
    """Mean losses of `--steps` batches and the optimizer steps taken at one precision."""
    torch.manual_seed(0)
    model = DarkNet(REPO / args.cfg).to(device).to(memory_format=torch.channels_last)
    hyp = load_hyp(REPO / "cfg" / "hyp.yaml")
    optimizer = build_optimizer(model, "sgd", hyp)
    steps = [0]
    optimizer.register_step_post_hook(lambda *_: steps.__setitem__(0, steps[0] + 1))
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    kit = TrainKit(model=model, loss_fn=YoloLoss(model, hyp, args.amp_img_size), optimizer=optimizer,
                   scaler=scaler, ema=None, device=device, dist=DistInfo(0, 1, 0, device))
    schedule = StepSchedule(accumulate=1, nbs=args.amp_batch_size, warmup_iters=0, img_size=args.amp_img_size,
                            amp=dtype is not None, amp_dtype=dtype or torch.float32, channels_last=True)
    batches = synthetic_batches(args.steps, args.amp_batch_size, args.amp_img_size, model.nc)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    losses = train_one_epoch(kit, batches, 0, 1, 1.0, schedule)
    torch.cuda.synchronize()
    return {"loss": losses["total_loss"], "steps": steps[0], "s": time.perf_counter() - t0}


def check_amp(args: argparse.Namespace, device: torch.device) -> list[tuple[str, str, str]]:
    rows, ref = [], amp_row(args, device, None)
    rows.append(("train fp32", "ok", f"mean loss {ref['loss']:.4f}, {ref['steps']}/{args.steps} steps, "
                                     f"{ref['s']:.1f}s"))
    for name, dtype in (("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        r = amp_row(args, device, dtype)
        rel = abs(r["loss"] - ref["loss"]) / max(abs(ref["loss"]), 1e-12)
        ok = rel <= args.loss_rtol and r["steps"] > 0
        rows.append((f"train AMP {name}", "ok" if ok else "FAIL",
                     f"mean loss {r['loss']:.4f} (rel diff {rel:.2e}, tol {args.loss_rtol}), "
                     f"{r['steps']}/{args.steps} optimizer steps taken, {r['s']:.1f}s"))
    return rows


def _run(cmd: list[str], cwd: Path, timeout: int = 900) -> tuple[bool, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
    return proc.returncode == 0, f"exit {proc.returncode}: {tail[0][:120]}"


def check_torchrun_and_half(tmp: Path) -> list[tuple[str, str, str]]:
    data = tmp / "shapes"
    _run([sys.executable, str(REPO / "data/scripts/make_shapes.py"), "--out", str(data), "--n-train", "64",
          "--n-val", "16", "--img-size", "160"], REPO)
    ok, msg = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "train.py",
                    "--cfg", "cfg/yolov3-demo.cfg", "--data", str(data / "shapes.data"), "--hyp",
                    "cfg/hyp-demo.yaml", "--epochs", "2", "--batch-size", "16", "--img-size", "160",
                    "--device", "0", "--project", str(tmp / "runs"), "--name", "ddp"], REPO)
    rows = [("torchrun 1 process NCCL", "ok" if ok else "FAIL", msg)]
    weights = tmp / "runs" / "ddp" / "weights" / "best.pt"
    if not weights.is_file():
        return rows + [("predict.py --half", "FAIL", "no best.pt from the torchrun run")]
    ok, msg = _run([sys.executable, "predict.py", "--weights", str(weights), "--source",
                    str(data / "val" / "images"), "--img-size", "160", "--device", "0", "--half",
                    "--project", str(tmp / "predict"), "--name", "half"], REPO)
    drawn = len(list((tmp / "predict" / "half").rglob("*.jpg")))
    return rows + [("predict.py --half", "ok" if ok and drawn else "FAIL", f"{msg}; {drawn} images drawn")]


def _step_time(model: torch.nn.Module, loss_fn, optimizer, scaler, bs: int, size: int, nc: int) -> float:
    """Median seconds of one bf16 AMP training step at batch `bs` (raises torch.OutOfMemoryError)."""
    imgs, targets, _, _ = synthetic_batches(1, bs, size, nc)[0]
    x = (imgs.cuda().float() / 255).contiguous(memory_format=torch.channels_last)
    t = targets.cuda()
    times = []
    for i in range(6):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _ = loss_fn(model(x), t)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def check_throughput(args: argparse.Namespace, device: torch.device) -> list[tuple[str, str, str]]:
    model = DarkNet(REPO / args.cfg).to(device).to(memory_format=torch.channels_last).train()
    gflops = model.info(args.img_size)["gflops"]
    hyp = load_hyp(REPO / "cfg" / "hyp.yaml")
    optimizer = build_optimizer(model, "sgd", hyp)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    loss_fn = YoloLoss(model, hyp, args.img_size)
    best, bs = None, 8
    while bs <= args.max_batch:
        try:
            best = (bs, _step_time(model, loss_fn, optimizer, scaler, bs, args.img_size, model.nc))
        except torch.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
        bs *= 2
    if best is None:
        return [("throughput", "FAIL", f"batch 8 at {args.img_size} does not fit")]
    bs, sec = best
    ips = bs / sec
    mfu = ips * 3 * gflops / (args.peak_tflops * 1e3)
    return [(f"train {Path(args.cfg).stem} @{args.img_size} bf16", "ok",
             f"batch {bs}: {sec * 1e3:.0f} ms/step, {ips:.0f} img/s, MFU {100 * mfu:.1f}% "
             f"({3 * gflops:.0f} GFLOP/img, peak {args.peak_tflops:.0f} TFLOP/s)")]


def main(args: argparse.Namespace) -> int:
    if not torch.cuda.is_available():
        print("gpu_check needs CUDA: no GPU is visible here (torch.cuda.is_available() is False); "
              "run it on a GPU machine")
        return 0
    device = torch.device("cuda", 0)
    torch.backends.cudnn.benchmark = True
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(device)}, "
          f"{torch.cuda.get_device_properties(device).total_memory / 2**30:.0f} GiB")
    rows = check_amp(args, device)
    with tempfile.TemporaryDirectory() as tmp:
        rows += check_torchrun_and_half(Path(tmp))
    if not args.skip_throughput:
        rows += check_throughput(args, device)
    print("| check | result | detail |\n| --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0 if all(r[1] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
