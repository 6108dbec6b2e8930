"""Convert a Pascal VOC year folder to the YOLO layout (stdlib XML parsing, no extra packages).

    python data/scripts/voc2yolo.py --voc-root VOCdevkit/VOC2012 --out data/voc2012
    python data/scripts/voc2yolo.py --voc-root VOCdevkit/VOC2012 --out data/voc2012 --names data/voc.names \
        --splits train val --keep-difficult

Writes OUT/{split}/{images,labels}/ and OUT/classes.names; then run make_data.py on OUT.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file, not `python -m data.scripts.voc2yolo`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from build_utils.cli import ArgumentParser, run_cli, setup_logging
from build_utils.data_cfg import load_class_names
from build_utils.errors import UserError
from data.scripts.dataset_convert import convert_voc

LOGGER = logging.getLogger("voc2yolo")


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Pascal VOC (XML) to YOLO txt labels.")
    parser.add_argument("--voc-root", required=True, help="VOC year folder with Annotations/, "
                        "ImageSets/Main/ and JPEGImages/ (e.g. VOCdevkit/VOC2012)")
    parser.add_argument("--out", required=True, help="output dataset folder")
    parser.add_argument("--names", help="class names file fixing the class order; None = sorted "
                        "names found in the annotations; data/voc.names gives the usual VOC order)")
    parser.add_argument("--splits", nargs="+", default=["train", "val"],
                        help="ImageSets/Main lists to convert")
    parser.add_argument("--keep-difficult", action=argparse.BooleanOptionalAction, default=False,
                        help="keep objects marked difficult (VOC evaluation skips them)")
    parser.add_argument("--verbose", action=argparse.BooleanOptionalAction, default=False,
                        help="debug logging")
    return parser


def main(args: argparse.Namespace) -> None:
    setup_logging(args.verbose)
    root = Path(args.voc_root)
    if not (root / "Annotations").is_dir():
        raise UserError(f"{root}: no Annotations/ folder; pass the VOC year folder, e.g. VOCdevkit/VOC2012")
    names = load_class_names(args.names) if args.names else None
    out = Path(args.out)
    names = convert_voc(root, out, names, tuple(args.splits), args.keep_difficult)
    (out / "classes.names").write_text("".join(n + "\n" for n in names))
    LOGGER.info("wrote %s (%d classes) and %s", out / "classes.names", len(names),
                ", ".join(f"{out / s}" for s in args.splits))


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser().parse_args()))
