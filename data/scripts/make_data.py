"""From a YOLO-layout dataset folder, write train.txt, val.txt, the .data file and a cfg for its classes.

    python data/scripts/make_data.py --root data/voc2012 --base-cfg cfg/yolov3-spp.cfg
    python data/scripts/make_data.py --root data/coco --valid-json data/coco/val_instances.json

ROOT holds either layout: {train,val}/images + {train,val}/labels (what voc2yolo.py and coco2yolo.py
write) or images/{train,val} + labels/{train,val} (the YOLO layout of coco128, ultralytics and
Roboflow exports); without a val split the train images are also used for validation (a warning
says so). Class names come from the one *.names file in ROOT, or --names (a .names file or a dataset
YAML). Writes OUT/train.txt, OUT/val.txt (paths relative to OUT when inside it), OUT/<name>.data and
OUT/<name>.cfg (the base cfg with classes/filters rewritten by the cfg tool; nothing else changes);
OUT is ROOT unless --out is given (use it for a read-only dataset).
When ROOT/val_instances.json and ROOT/category_ids.json exist (coco2yolo.py writes them) the .data
gets `valid_json=` and `category_ids=` automatically, so evaluation scores against the original
COCO annotations with the real category ids.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from build_utils.cfg_edit import rewrite_cfg_classes
from build_utils.cli import ArgumentParser, run_cli, setup_logging
from build_utils.data_cfg import load_class_names, parse_data_cfg
from build_utils.data_yaml import is_data_yaml
from build_utils.dataset.img_list import list_image_files
from build_utils.errors import UserError
from build_utils.parse_config import read_cfg_text

LOGGER = logging.getLogger("make_data")


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Write lists, .data and a cfg for a YOLO-layout dataset.")
    parser.add_argument("--root", required=True,
                        help="dataset folder with train/images + val/images, or images/train + images/val")
    parser.add_argument("--names", help="class names file or dataset YAML; None = the only *.names in --root")
    parser.add_argument("--out", help="folder for the lists, .data and cfg; None = --root")
    parser.add_argument("--name", help="base name of the .data/.cfg files; None = the folder name")
    parser.add_argument("--base-cfg", default="cfg/yolov3-spp.cfg", help="cfg to adapt")
    parser.add_argument("--valid-json", help="COCO JSON of the val split, written as valid_json= "
                        "; None = ROOT/val_instances.json when present")
    parser.add_argument("--verbose", action=argparse.BooleanOptionalAction, default=False,
                        help="debug logging")
    return parser


def _names_file(root: Path, given: str | None) -> Path:
    if given:
        return Path(given)
    found = sorted(root.glob("*.names"))
    if len(found) != 1:
        raise UserError(f"{root}: expected exactly one *.names file, found {len(found)}; pass --names")
    return found[0]


def split_folder(root: Path, split: str) -> Path | None:
    """The image folder of `split` in either layout: ROOT/split/images or ROOT/images/split."""
    for folder in (root / split / "images", root / "images" / split):
        if folder.is_dir():
            return folder
    return None


def _write_list(out_dir: Path, split: str, folder: Path) -> Path:
    files = list_image_files(folder)
    if not files:
        raise UserError(f"{folder}: no images")
    out = out_dir / f"{split}.txt"
    out.write_text("".join(_rel(Path(f), out_dir) + "\n" for f in files))
    return out


def _split_lists(root: Path, out_dir: Path) -> tuple[Path, Path]:
    train_dir = split_folder(root, "train")
    if train_dir is None:
        raise UserError(f"{root}: no train/images or images/train folder; --root must hold one of the two "
                        "YOLO layouts (voc2yolo.py and coco2yolo.py write train/images)")
    val_dir = split_folder(root, "val")
    train = _write_list(out_dir, "train", train_dir)
    if val_dir is None:
        LOGGER.warning("%s: no val/images or images/val; validating on the train images (scores will be "
                       "optimistic; add a val split for honest numbers)", root)
        val_dir = train_dir
    return train, _write_list(out_dir, "val", val_dir)


def _rel(path: Path, root: Path) -> str:
    """Path relative to the dataset folder when inside it, so the folder can be moved as a whole."""
    path = path.resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def main(args: argparse.Namespace) -> Path:
    setup_logging(args.verbose)
    root = Path(args.root).resolve()
    out_dir = Path(args.out).resolve() if args.out else root
    out_dir.mkdir(parents=True, exist_ok=True)
    names_path = _names_file(root, args.names)
    yaml_names = is_data_yaml(names_path)
    names = parse_data_cfg(names_path)["class_names"] if yaml_names else load_class_names(names_path)
    name = args.name or root.name
    if yaml_names:
        names_path = out_dir / f"{name}.names"
        names_path.write_text("".join(n + "\n" for n in names))
    train, val = _split_lists(root, out_dir)
    lines = [f"classes={len(names)}", f"train={train.name}", f"valid={val.name}",
             f"names={_rel(names_path, out_dir)}"]
    valid_json = Path(args.valid_json) if args.valid_json else root / "val_instances.json"
    if args.valid_json and not valid_json.is_file():
        raise UserError(f"{valid_json}: --valid-json not found")
    if valid_json.is_file():
        lines.append(f"valid_json={_rel(valid_json, out_dir)}")
        if (root / "category_ids.json").is_file():
            lines.append(f"category_ids={_rel(root / 'category_ids.json', out_dir)}")
    data_path = out_dir / f"{name}.data"
    data_path.write_text("\n".join(lines) + "\n")
    base = Path(args.base_cfg)
    if not base.is_file():
        raise UserError(f"{base}: --base-cfg not found")
    cfg_text = rewrite_cfg_classes(read_cfg_text(base), len(names), source=str(base))
    (out_dir / f"{name}.cfg").write_text(cfg_text, encoding="utf-8")
    LOGGER.info("wrote %s, %s, %s and %s (%d classes)", train, val, data_path, out_dir / f"{name}.cfg",
                len(names))
    return data_path


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser().parse_args()))
