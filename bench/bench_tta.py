"""Accuracy and speed of plain NMS, merge-NMS, TTA and TTA + merge on coco128 (official yolov3-tiny).

    python bench/bench_tta.py                        # ../shared/reference, 416, CPU, markdown table
    python bench/bench_tta.py --device 0 --img-size 416 --batch-size 16
    python bench/bench_tta.py --protocol reference   # as ../shared/reference/tta was measured

`--protocol batch` (default) runs `evaluate` four times on one loader (rect batches of --batch-size, conf
0.001, IoU 0.6) and prints one markdown row per mode: COCO mAP@0.5:0.95, mAP@0.5 and ms per image
(pre + inference + NMS). `--protocol reference` measures the way the classic code's numbers in
`../shared/reference/tta/classic_tta_coco128.json` were measured: one image at a time, each letterboxed
to the square --img-size (`square`) or to its smallest multiple-of-32 rectangle (`rect`), and prints
ours beside the classic numbers with each mode's gain over plain NMS. On a shared machine the absolute
timings are noisy; the ratios to the plain row are what to compare.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from build_utils.cli import ArgumentParser, run_cli, setup_logging
from build_utils.data_cfg import load_class_names
from build_utils.datasets import LoadImagesAndLabels, collate_fn
from build_utils.torch_utils import select_device
from modules.loading import load_model
from train_val_utils.engine import EvalOptions, evaluate
from train_val_utils.evaluation.tta import CLASSIC_VIEWS, TTA_VIEWS

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"
MODES = (("plain", False, "plain"), ("merge", False, "merge"), ("TTA", True, "plain"),
         ("TTA + merge", True, "merge"))  # (row label, augment, nms)
CLASSIC_KEYS = {"plain": "plain", "merge": "merge", "TTA": "tta_plain", "TTA + merge": "tta_merge"}
logger = logging.getLogger("bench_tta")


def get_args_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__)
    p.add_argument("--images", default=str(REFERENCE / "coco128" / "images" / "train"))
    p.add_argument("--weights", default=str(REFERENCE / "weights" / "yolov3-tiny.weights"))
    p.add_argument("--cfg", default=str(REPO / "cfg" / "yolov3-tiny.cfg"))
    p.add_argument("--names", default=str(REPO / "data" / "coco.names"))
    p.add_argument("--img-size", type=int, default=416)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--protocol", choices=("batch", "reference"), default="batch",
                   help="batch: rect batches of --batch-size; reference: one image at a time, square and "
                        "rect, beside ../shared/reference/tta/classic_tta_coco128.json")
    p.add_argument("--classic", default=str(REFERENCE / "tta" / "classic_tta_coco128.json"))
    p.add_argument("--modes", nargs="+", default=[m[0] for m in MODES], choices=[m[0] for m in MODES],
                   help="which rows to measure (the first one listed is the base of the gains)")
    p.add_argument("--views", choices=("tta", "classic"), default="tta",
                   help="TTA views: tta = this suite's four (as is, flipped x1.2, x0.83, flipped x0.67); "
                        "classic = the classic code's three (as is, flipped x0.83, x0.67)")
    p.add_argument("--layouts", nargs="+", default=["square", "rect"], choices=["square", "rect"],
                   help="--protocol reference: which letterbox layouts")
    return p


def score_modes(model: torch.nn.Module, loader: torch.utils.data.DataLoader, names: list[str],
                device: torch.device, modes: list[str], views: str = "tta") -> list[dict]:
    rows = []
    tta_views = TTA_VIEWS if views == "tta" else CLASSIC_VIEWS
    for label, augment, nms in (m for m in MODES if m[0] in modes):
        options = EvalOptions(augment=augment, nms=nms, tta_views=tta_views)
        res = evaluate(model, loader, names, device, options)
        ms = sum(res["speed_ms"].values())
        rows.append({"mode": label, "map": res["map"], "map50": res["map50"], "ms": ms})
    return rows


def print_batch_table(rows: list[dict]) -> None:
    base = rows[0]["ms"]
    print("| mode | mAP@0.5:0.95 | mAP@0.5 | ms/img | time vs plain |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['mode']} | {r['map']:.4f} | {r['map50']:.4f} | {r['ms']:.1f} | {r['ms'] / base:.2f}x |")


def print_reference_table(letterbox: str, rows: list[dict], classic: dict) -> None:
    """Ours and the classic code's mAPs per mode, and each one's gain over its own plain NMS."""
    print(f"\n{letterbox}: ours vs classic (mAP@0.5:0.95 / mAP@0.5; gain = mode - {rows[0]['mode']})\n")
    print("| mode | ours | classic | our gain | classic gain |")
    print("| --- | --- | --- | --- | --- |")
    ours0, classic0 = rows[0]["map"], classic[f"{letterbox}_{CLASSIC_KEYS[rows[0]['mode']]}"][0]
    for r in rows:
        c = classic[f"{letterbox}_{CLASSIC_KEYS[r['mode']]}"]
        print(f"| {r['mode']} | {r['map']:.4f} / {r['map50']:.4f} | {c[0]:.4f} / {c[1]:.4f} | "
              f"{r['map'] - ours0:+.4f} | {c[0] - classic0:+.4f} |")


def main(args: argparse.Namespace) -> dict[str, list[dict]]:
    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    names = load_class_names(args.names)
    model, _ = load_model(args.weights, args.cfg, device=device, fuse=True)
    if args.protocol == "batch":
        layouts = {"rect": (args.batch_size, True, 0.5)}
    else:  # one image at a time: square letterbox, or the image's own smallest 32-multiple rectangle
        layouts = {k: v for k, v in {"square": (1, False, 0.0), "rect": (1, True, 0.0)}.items()
                   if k in args.layouts}
    results = {}
    for letterbox, (batch, rect, pad) in layouts.items():
        dataset = LoadImagesAndLabels(args.images, args.img_size, batch, rect=rect, nc=len(names), pad=pad)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, collate_fn=collate_fn)
        results[letterbox] = score_modes(model, loader, names, device, args.modes, args.views)
        print(f"\nyolov3-tiny (official weights) on {len(dataset)} coco128 images at {args.img_size}, "
              f"{device}, batch {batch}, {letterbox}, {args.views} TTA views\n")
        print_batch_table(results[letterbox])
        if args.protocol == "reference":
            print_reference_table(letterbox, results[letterbox], json.loads(Path(args.classic).read_text()))
    return results


if __name__ == "__main__":
    setup_logging()
    sys.exit(run_cli(main, get_args_parser().parse_args()))
