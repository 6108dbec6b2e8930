"""Generate the built-in synthetic shapes dataset (YOLO layout, lists, .names and .data).

    python data/scripts/make_shapes.py --out data/shapes --n-train 1000 --n-val 200 --img-size 320 --seed 0

Writes OUT/{train,val}/{images,labels}/, OUT/train.txt, OUT/val.txt (paths relative to OUT),
OUT/shapes.names and OUT/shapes.data. The same seed always gives the same dataset.
"""

from __future__ import annotations

import argparse
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
from tqdm import tqdm

if __package__ in (None, ""):  # run as a file, not `python -m data.scripts.make_shapes`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from build_utils.cli import ArgumentParser, run_cli, setup_logging
from build_utils.errors import UserError
from data.scripts.shapes_dataset import SHAPE_NAMES, ShapesConfig, make_shapes_image

LOGGER = logging.getLogger("make_shapes")


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Generate the synthetic shapes detection dataset.")
    parser.add_argument("--out", default="data/shapes", help="output folder")
    parser.add_argument("--n-train", type=int, default=1000, help="training images")
    parser.add_argument("--n-val", type=int, default=200, help="validation images")
    parser.add_argument("--img-size", type=int, default=320, help="square image side in px")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same dataset")
    parser.add_argument("--min-frac", type=float, default=0.08, help="smallest object side / image side")
    parser.add_argument("--max-frac", type=float, default=0.55, help="largest object side / image side")
    parser.add_argument("--max-objects", type=int, default=8, help="most objects per image")
    parser.add_argument("--workers", type=int, default=4, help="writer threads")
    parser.add_argument("--verbose", action=argparse.BooleanOptionalAction, default=False,
                        help="debug logging")
    return parser


def _write_one(out: Path, split: str, index: int, cfg: ShapesConfig, seed: int) -> str:
    img, labels = make_shapes_image(seed, split, index, cfg)
    rel = f"{split}/images/{index:06d}.jpg"
    cv2.imwrite(str(out / rel), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    lines = "".join(f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in labels)
    (out / split / "labels" / f"{index:06d}.txt").write_text(lines)
    return rel


def main(args: argparse.Namespace) -> None:
    setup_logging(args.verbose)
    if args.n_train < 1 or args.n_val < 1:
        raise UserError("--n-train and --n-val must be at least 1")
    if args.img_size < 32:
        raise UserError(f"--img-size {args.img_size}: use at least 32 px")
    if not 0 < args.min_frac <= args.max_frac < 1:
        raise UserError("--min-frac/--max-frac: need 0 < min-frac <= max-frac < 1")
    cfg = ShapesConfig(img_size=args.img_size, min_frac=args.min_frac, max_frac=args.max_frac,
                       max_objects=max(1, args.max_objects))
    out = Path(args.out)
    jobs = [("train", i) for i in range(args.n_train)] + [("val", i) for i in range(args.n_val)]
    for split in ("train", "val"):
        for kind in ("images", "labels"):
            (out / split / kind).mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max(1, args.workers)) as pool:
        rels = list(tqdm(pool.map(lambda j: _write_one(out, j[0], j[1], cfg, args.seed), jobs),
                         total=len(jobs), desc="shapes", unit="img"))
    (out / "train.txt").write_text("".join(r + "\n" for r in rels[: args.n_train]))
    (out / "val.txt").write_text("".join(r + "\n" for r in rels[args.n_train:]))
    (out / "shapes.names").write_text("".join(n + "\n" for n in SHAPE_NAMES))
    (out / "shapes.data").write_text(
        f"classes={len(SHAPE_NAMES)}\ntrain=train.txt\nvalid=val.txt\nnames=shapes.names\n"
    )
    LOGGER.info("wrote %d train + %d val images (%d px, seed %d) to %s; data file %s",
                args.n_train, args.n_val, args.img_size, args.seed, out, out / "shapes.data")


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser().parse_args()))
