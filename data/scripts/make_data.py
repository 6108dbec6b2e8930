"""From a YOLO-layout dataset folder, write train.txt, val.txt, the .data file and a cfg for its classes.

    python data/scripts/make_data.py --root data/voc2012 --base-cfg cfg/yolov3-spp.cfg
    python data/scripts/make_data.py --root data/coco --valid-json data/coco/val_instances.json

ROOT holds {train,val}/images (labels beside them in {train,val}/labels) and one *.names file (or
pass --names). Writes ROOT/train.txt, ROOT/val.txt (paths relative to ROOT), ROOT/<name>.data and
ROOT/<name>.cfg (the base cfg with classes/filters rewritten by the cfg tool; nothing else changes).
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
from build_utils.cli import run_cli, setup_logging
from build_utils.errors import UserError
from build_utils.img_list import list_image_files
from build_utils.parse_config import load_class_names, read_cfg_text

LOGGER = logging.getLogger("make_data")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Write lists, .data and a cfg for a YOLO-layout dataset.")
    parser.add_argument("--root", required=True, help="dataset folder with train/images and val/images")
    parser.add_argument("--names", help="class names file (default: the only *.names in --root)")
    parser.add_argument("--name", help="base name of the .data/.cfg files (default: the folder name)")
    parser.add_argument("--base-cfg", default="cfg/yolov3-spp.cfg", help="cfg to adapt (default yolov3-spp)")
    parser.add_argument("--valid-json", help="COCO JSON of the val split, written as valid_json= "
                        "(default: ROOT/val_instances.json when present)")
    parser.add_argument("--verbose", action=argparse.BooleanOptionalAction, default=False)
    return parser


def _names_file(root: Path, given: str | None) -> Path:
    if given:
        return Path(given)
    found = sorted(root.glob("*.names"))
    if len(found) != 1:
        raise UserError(f"{root}: expected exactly one *.names file, found {len(found)}; pass --names")
    return found[0]


def _write_list(root: Path, split: str) -> Path:
    folder = root / split / "images"
    if not folder.is_dir():
        raise UserError(f"{folder}: not found; --root must hold {split}/images (voc2yolo.py, coco2yolo.py)")
    files = list_image_files(folder)
    if not files:
        raise UserError(f"{folder}: no images")
    out = root / f"{split}.txt"
    out.write_text("".join(Path(f).relative_to(root).as_posix() + "\n" for f in files))
    return out


def _rel(path: Path, root: Path) -> str:
    """Path relative to the dataset folder when inside it, so the folder can be moved as a whole."""
    path = path.resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def main(args: argparse.Namespace) -> Path:
    setup_logging(args.verbose)
    root = Path(args.root).resolve()
    names_path = _names_file(root, args.names)
    names = load_class_names(names_path)
    name = args.name or root.name
    train, val = _write_list(root, "train"), _write_list(root, "val")
    lines = [f"classes={len(names)}", f"train={train.name}", f"valid={val.name}",
             f"names={_rel(names_path, root)}"]
    valid_json = Path(args.valid_json) if args.valid_json else root / "val_instances.json"
    if args.valid_json and not valid_json.is_file():
        raise UserError(f"{valid_json}: --valid-json not found")
    if valid_json.is_file():
        lines.append(f"valid_json={_rel(valid_json, root)}")
        if (root / "category_ids.json").is_file():
            lines.append("category_ids=category_ids.json")
    data_path = root / f"{name}.data"
    data_path.write_text("\n".join(lines) + "\n")
    base = Path(args.base_cfg)
    if not base.is_file():
        raise UserError(f"{base}: --base-cfg not found")
    cfg_text = rewrite_cfg_classes(read_cfg_text(base), len(names), source=str(base))
    (root / f"{name}.cfg").write_text(cfg_text, encoding="utf-8")
    LOGGER.info("wrote %s, %s, %s and %s (%d classes)", train, val, data_path, root / f"{name}.cfg",
                len(names))
    return data_path


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser().parse_args()))
