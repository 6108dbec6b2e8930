"""Write a cfg for your class count (and anchors) from a base cfg, editing only what must change.

    python data/scripts/make_cfg.py --base cfg/yolov3-spp.cfg --classes 3 --out cfg/my.cfg
    python data/scripts/make_cfg.py --base cfg/yolov3-spp.cfg --classes 3 \
        --anchors "10,13, 16,30, 33,23, 30,61, 62,45, 59,119, 116,90, 156,198, 373,326" --out cfg/my.cfg
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from build_utils.cfg_edit import mask_problems, rewrite_cfg_classes
from build_utils.cli import ArgumentParser, run_cli, setup_logging
from build_utils.errors import ConfigError, UserError
from build_utils.parse_config import parse_model_cfg_text, read_cfg_text

logger = logging.getLogger(__name__)


def parse_anchors(text: str) -> list[tuple[int, int]]:
    """'10,13, 16,30' -> [(10, 13), (16, 30)]; w,h pairs in pixels of the network input."""
    try:
        values = [int(round(float(v))) for v in text.replace(" ", ",").split(",") if v.strip()]
    except ValueError:
        raise ConfigError(
            f"--anchors {text!r}: expected comma-separated numbers like '10,13, 16,30'"
        ) from None
    if not values or len(values) % 2:
        raise ConfigError(f"--anchors {text!r}: expected w,h pairs, got {len(values)} numbers")
    return list(zip(values[::2], values[1::2]))


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__
    )
    parser.add_argument("--base", type=Path, default=Path("cfg/yolov3-spp.cfg"), help="cfg to start from")
    parser.add_argument("--classes", type=int, required=True, help="number of classes of your dataset")
    parser.add_argument("--anchors", type=str, default=None,
                        help="optional anchors 'w,h, w,h, ...' in input pixels (e.g. from kmeans_anchors.py)")
    parser.add_argument("--out", type=Path, required=True, help="cfg file to write")
    parser.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=False,
                        help="replace --out when it already exists")
    parser.add_argument("--verbose", action=argparse.BooleanOptionalAction, default=False,
                        help="debug logging")
    return parser


def main(args: argparse.Namespace) -> None:
    setup_logging(args.verbose)
    if not args.base.is_file():
        raise ConfigError(f"{args.base}:0: base cfg not found; pass --base cfg/yolov3-spp.cfg or another cfg")
    if args.out.exists() and not args.overwrite:
        raise UserError(f"{args.out}: already exists; pass --overwrite to replace it")
    anchors = parse_anchors(args.anchors) if args.anchors else None
    text = rewrite_cfg_classes(read_cfg_text(args.base), args.classes, anchors, str(args.base))
    for problem in mask_problems(parse_model_cfg_text(text, str(args.out)), str(args.out)):
        logger.warning("%s; kmeans_anchors.py --cfg rewrites masks that use every anchor once", problem)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    logger.info("wrote %s: %d classes%s, from %s", args.out, args.classes,
                f", {len(anchors)} anchors" if anchors else "", args.base)


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser().parse_args()))
