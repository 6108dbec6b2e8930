"""Anchors for your dataset at an image size; optionally written into a cfg.

    python data/scripts/kmeans_anchors.py --data data/shapes/shapes.data --img-size 416
    python data/scripts/kmeans_anchors.py --data my.data --img-size 416 \
        --cfg cfg/my.cfg --out cfg/my-anchors.cfg

k-means (distance 1 - IoU) on the label widths/heights, scaled the way the loader scales images
(long side = img_size) so the anchors fit what the model sees, then a hill-climb refinement.
Prints the anchors (w,h pairs in input pixels, smallest first), the best possible recall (share
of labels within a 4x width/height ratio of some anchor) and the mean best IoU. With --cfg the
masks are rewritten too: the anchors are split evenly over the `[yolo]` heads, the largest to the
largest stride (yolov3-tiny: `3,4,5` on the stride-32 head, `0,1,2` on the stride-16 head), and
the metrics are those of the anchors the masks use. A cfg whose masks skip or share anchors (the
official tiny cfg's `1,2,3` + `3,4,5`) is named in a warning.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from build_utils.cfg_edit import mask_problems, partition_masks, rewrite_cfg_classes
from build_utils.cli import ArgumentParser, run_cli, setup_logging
from build_utils.data_cfg import parse_data_cfg
from build_utils.datasets import LoadImagesAndLabels
from build_utils.errors import ConfigError, DatasetError, UserError
from build_utils.parse_config import parse_model_cfg_text, read_cfg_text
from modules.model import DarkNet

LOGGER = logging.getLogger("kmeans_anchors")
ANCHOR_T = 4.0  # a label is "recallable" when some anchor is within this wh ratio (the loss's rule)


def wh_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU of boxes sharing a corner: wh (n, 2), anchors (k, 2) -> (n, k)."""
    inter = np.minimum(wh[:, None], anchors[None]).prod(2)  # (n, k)
    return inter / (wh.prod(1)[:, None] + anchors.prod(1)[None] - inter)


def anchor_metrics(wh: np.ndarray, anchors: np.ndarray) -> dict[str, float]:
    """Best possible recall (ratio rule) and mean best IoU of `anchors` (k, 2) on `wh` (n, 2)."""
    ratio = wh[:, None] / anchors[None]  # (n, k, 2)
    worst = np.minimum(ratio, 1 / ratio).min(2)  # (n, k)
    best = worst.max(1)
    return {"bpr": float((best > 1 / ANCHOR_T).mean()), "mean_iou": float(wh_iou(wh, anchors).max(1).mean())}


def kmeans_iou(wh: np.ndarray, k: int, iters: int = 100,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """k-medians clustering of wh (n, 2) with distance 1 - IoU; returns (k, 2) sorted by area."""
    rng = rng if rng is not None else np.random.default_rng(0)
    if len(wh) < k:
        raise ValueError(f"{len(wh)} boxes are too few for {k} anchors")
    centres = wh[rng.choice(len(wh), k, replace=False)].astype(np.float64)
    for _ in range(iters):
        assign = wh_iou(wh, centres).argmax(1)  # (n,)
        new = np.array([np.median(wh[assign == j], 0) if np.any(assign == j) else centres[j]
                        for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    return centres[np.argsort(centres.prod(1))]


def refine_anchors(wh: np.ndarray, anchors: np.ndarray, generations: int = 300,
                   rng: np.random.Generator | None = None) -> np.ndarray:
    """Random multiplicative mutations, kept when the mean best IoU improves (cheap hill climb)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    best, best_fit = anchors.copy(), wh_iou(wh, anchors).max(1).mean()
    for _ in range(generations):
        trial = best * np.clip(rng.normal(1, 0.1, best.shape), 0.3, 3.0)
        fit = wh_iou(wh, trial).max(1).mean()
        if fit > best_fit:
            best, best_fit = trial, fit
    return best[np.argsort(best.prod(1))]


def label_wh_pixels(labels: list[np.ndarray], shapes_hw: np.ndarray, img_size: int) -> np.ndarray:
    """(n, 2) label widths/heights in pixels once each image's long side is `img_size`."""
    scale = img_size / shapes_hw.max(1)  # (m,)
    parts = [lab[:, 3:5] * (hw[::-1] * s) for lab, hw, s in zip(labels, shapes_hw, scale) if len(lab)]
    wh = np.concatenate(parts, 0) if parts else np.zeros((0, 2))
    return wh[(wh >= 2).all(1)]  # sub-2-pixel boxes say nothing about anchor shapes


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="k-means anchors for a dataset (optionally into a cfg).")
    parser.add_argument("--data", help=".data file (its train= images are used)")
    parser.add_argument("--path", help="images instead of --data: a folder, .txt list or glob")
    parser.add_argument("--img-size", type=int, default=416, help="network input size")
    parser.add_argument("--n", type=int, default=9, help="number of anchors")
    parser.add_argument("--refine", type=int, default=300, help="refinement generations (0 = k-means only)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the k-means start and refinement")
    parser.add_argument("--cfg", help="cfg to write the anchors into (with --out)")
    parser.add_argument("--out", help="where to write the cfg with the new anchors")
    parser.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=False,
                        help="allow --out to replace an existing file")
    parser.add_argument("--verbose", action=argparse.BooleanOptionalAction, default=False,
                        help="debug logging")
    return parser


def main(args: argparse.Namespace) -> list[tuple[int, int]]:
    setup_logging(args.verbose)
    if bool(args.data) == bool(args.path):
        raise UserError("pass exactly one of --data or --path")
    if bool(args.cfg) != bool(args.out):
        raise UserError("--cfg and --out go together (the cfg to edit and where to write it)")
    if args.out and Path(args.out).exists() and not args.overwrite:
        raise UserError(f"{args.out}: exists; pass --overwrite or another --out")
    nc, path = None, args.path
    if args.data:
        data = parse_data_cfg(args.data)
        nc, path = data["classes"], data["train"]
    ds = LoadImagesAndLabels(path, img_size=args.img_size, nc=nc)
    wh = label_wh_pixels(ds.labels, ds.image_shapes, args.img_size)
    if len(wh) < args.n:
        raise DatasetError(f"{path}: {len(wh)} usable boxes, too few for {args.n} anchors")
    rng = np.random.default_rng(args.seed)
    anchors = kmeans_iou(wh, args.n, rng=rng)
    if args.refine:
        anchors = refine_anchors(wh, anchors, args.refine, rng)
    result = [(max(1, int(round(w))), max(1, int(round(h)))) for w, h in anchors]
    m = anchor_metrics(wh, np.array(result, dtype=np.float64))
    LOGGER.info("anchors @%d: %s", args.img_size, ",  ".join(f"{w},{h}" for w, h in result))
    LOGGER.info("%d boxes: best possible recall %.4f, mean best IoU %.4f", len(wh), m["bpr"], m["mean_iou"])
    if args.cfg:
        write_cfg_anchors(Path(args.cfg), Path(args.out), result, wh)
    return result


def write_cfg_anchors(cfg: Path, out: Path, anchors: list[tuple[int, int]],
                      wh: np.ndarray) -> list[list[int]]:
    """Write `anchors` and evenly partitioned masks into a copy of `cfg`; logs the used anchors' metrics."""
    text = read_cfg_text(cfg)
    sections = parse_model_cfg_text(text, str(cfg))
    for problem in mask_problems(sections, str(cfg)):
        LOGGER.warning("%s (rewritten in %s)", problem, out)
    yolo = [s for s in sections if s["type"] == "yolo"]
    if not yolo:
        raise ConfigError(f"{cfg}:1: no [yolo] section to write anchors into")
    strides = [m.stride for m in DarkNet.from_cfg_text(text, str(cfg)).yolo_modules()]
    masks = partition_masks(strides, len(anchors))
    new = rewrite_cfg_classes(text, int(yolo[0]["classes"]), anchors=anchors, source=str(cfg), masks=masks)
    used = sorted({m for mask in masks for m in mask})
    m = anchor_metrics(wh, np.array([anchors[i] for i in used], dtype=np.float64))
    out.write_text(new, encoding="utf-8")
    LOGGER.info("wrote %s: masks %s (strides %s); anchors the masks use: best possible recall %.4f, "
                "mean best IoU %.4f", out, " / ".join(",".join(map(str, k)) for k in masks), strides,
                m["bpr"], m["mean_iou"])
    return masks


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser().parse_args()))
