"""Convert COCO instances JSON + images to the YOLO layout, keeping the original category ids.

    python data/scripts/coco2yolo.py --out data/coco \
        --train-json annotations/instances_train2017.json --train-images train2017 \
        --val-json annotations/instances_val2017.json --val-images val2017

Writes OUT/{train,val}/{images,labels}/, OUT/classes.names, OUT/category_ids.json (element i = COCO
category id of class i) and OUT/val_instances.json (a copy of the val JSON) so that make_data.py
can point evaluation at the original annotations (with --classes, a copy holding only the kept
categories and images). Crowd boxes are skipped. Class names are COCO's own spelling (`motorcycle`,
`couch`, `tv`, ...), the spelling data/coco.names uses too.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file, not `python -m data.scripts.coco2yolo`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from build_utils.cli import HelpFormatter, run_cli, setup_logging
from build_utils.errors import UserError
from data.scripts.dataset_convert import convert_coco

LOGGER = logging.getLogger("coco2yolo")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter, description="COCO instances JSON to YOLO txt labels.")
    parser.add_argument("--out", required=True, help="output dataset folder")
    parser.add_argument("--train-json", help="instances JSON of the training split")
    parser.add_argument("--train-images", help="image folder of the training split")
    parser.add_argument("--val-json", help="instances JSON of the validation split")
    parser.add_argument("--val-images", help="image folder of the validation split")
    parser.add_argument("--classes", nargs="+", default=None,
                        help="keep only these categories (COCO names or category ids), re-indexed 0..k-1 in "
                             "category id order; only images holding one of them are kept. None = all")
    parser.add_argument("--verbose", action=argparse.BooleanOptionalAction, default=False,
                        help="debug logging")
    return parser


def main(args: argparse.Namespace) -> None:
    setup_logging(args.verbose)
    splits = [(s, j, i) for s, j, i in (("train", args.train_json, args.train_images),
                                         ("val", args.val_json, args.val_images)) if j or i]
    if not splits:
        raise UserError("nothing to convert: pass --train-json/--train-images and/or --val-json/--val-images")
    for split, js, imgs in splits:
        if not (js and imgs):
            raise UserError(f"--{split}-json and --{split}-images go together")
        if not Path(js).is_file():
            raise UserError(f"{js}: --{split}-json not found")
    out = Path(args.out)
    names, cat_ids = None, None
    for split, js, imgs in splits:
        n, c, converted = convert_coco(Path(js), Path(imgs), out, split, args.classes)
        if names is not None and (n, c) != (names, cat_ids):
            raise UserError(f"{js}: its categories differ from the other split's; convert them separately")
        names, cat_ids = n, c
        if split == "val":
            if args.classes:  # scored against the kept categories only
                (out / "val_instances.json").write_text(json.dumps(converted))
            else:
                shutil.copyfile(js, out / "val_instances.json")
    (out / "classes.names").write_text("".join(n + "\n" for n in names))
    (out / "category_ids.json").write_text(json.dumps(cat_ids))
    LOGGER.info("wrote %s (%d classes), %s", out / "classes.names", len(names), out / "category_ids.json")


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser().parse_args()))
