"""Convert COCO instances JSON + images to the YOLO layout, keeping the original category ids.

    python data/scripts/coco2yolo.py --out data/coco \
        --train-json annotations/instances_train2017.json --train-images train2017 \
        --val-json annotations/instances_val2017.json --val-images val2017

Writes OUT/{train,val}/{images,labels}/, OUT/classes.names, OUT/category_ids.json (element i = COCO
category id of class i), OUT/val_instances.json (a copy of the val JSON; with --classes, a copy holding
only the kept categories and images) and OUT/dataset.yaml, a dataset YAML naming all of them
(`valid_json: val_instances.json`), so `--data OUT/dataset.yaml` scores against the original COCO
annotations in training, validation.py and benchmark.py (make_data.py writes the same into a .data).
Crowd boxes are skipped in the labels (the COCO JSON keeps them as regions no detection is blamed for),
and boxes are clipped to the image. Class names are COCO's own spelling (`motorcycle`,
`couch`, `tv`, ...), the spelling data/coco.names uses too.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

import yaml

if __package__ in (None, ""):  # run as a file, not `python -m data.scripts.coco2yolo`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from build_utils.cli import ArgumentParser, run_cli, setup_logging
from build_utils.errors import UserError
from data.scripts.dataset_convert import convert_coco

LOGGER = logging.getLogger("coco2yolo")


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="COCO instances JSON to YOLO txt labels.")
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
    dataset_yaml = write_dataset_yaml(out, [s for s, _, _ in splits], names, cat_ids)
    LOGGER.info("wrote %s (%d classes), %s and %s", out / "classes.names", len(names),
                out / "category_ids.json", dataset_yaml)


def write_dataset_yaml(out: Path, splits: list[str], names: list[str], cat_ids: list[int]) -> Path:
    """OUT/dataset.yaml: the splits, names, category ids and the val split's COCO JSON (`valid_json`)."""
    val = "val" if "val" in splits else "train"  # without a val split the train images are scored
    train = "train" if "train" in splits else splits[0]
    doc = {"path": ".", "train": f"{train}/images",
           "val": f"{val}/images", "nc": len(names), "names": list(names), "category_ids": list(cat_ids)}
    if (out / "val_instances.json").is_file() and val == "val":
        doc["valid_json"] = "val_instances.json"
    path = out / "dataset.yaml"
    path.write_text("# written by data/scripts/coco2yolo.py: scored against valid_json when it is named\n"
                    + yaml.safe_dump(doc, sort_keys=False))
    return path


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser().parse_args()))
