"""VOC XML and COCO JSON annotations to the YOLO layout `out/{split}/{images,labels}` + names.

YOLO label rows are `class cx cy w h` normalised to the image. Images are copied (or
hard-linked when possible) so the output is a self-contained dataset folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from build_utils.errors import DatasetError

LOGGER = logging.getLogger(__name__)


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _write_rows(path: Path, rows: np.ndarray) -> None:
    """rows (n, 5) `[class, cx, cy, w, h]` normalised."""
    path.write_text("".join(f"{int(r[0])} {r[1]:.6f} {r[2]:.6f} {r[3]:.6f} {r[4]:.6f}\n" for r in rows))


def xyxy_to_yolo_rows(classes: np.ndarray, xyxy: np.ndarray, w: float, h: float) -> np.ndarray:
    """(n,) classes + (n, 4) pixel xyxy -> (n, 5) `[class, cx, cy, w, h]` normalised, clipped to the image."""
    box = xyxy.astype(np.float64).reshape(-1, 4).copy()
    box[:, [0, 2]] = box[:, [0, 2]].clip(0, w)
    box[:, [1, 3]] = box[:, [1, 3]].clip(0, h)
    out = np.zeros((len(box), 5))
    out[:, 0] = classes
    out[:, 1] = (box[:, 0] + box[:, 2]) / 2 / w
    out[:, 2] = (box[:, 1] + box[:, 3]) / 2 / h
    out[:, 3] = (box[:, 2] - box[:, 0]) / w
    out[:, 4] = (box[:, 3] - box[:, 1]) / h
    return out


# --- VOC ---------------------------------------------------------------------------------------
def parse_voc_xml(path: Path, keep_difficult: bool) -> tuple[str, float, float, list[str], np.ndarray]:
    """(filename, w, h, names, (n, 4) xyxy pixels) of one VOC annotation file."""
    try:
        root = ET.parse(path).getroot()
        size = root.find("size")
        w, h = float(size.findtext("width")), float(size.findtext("height"))
    except (ET.ParseError, AttributeError, TypeError, ValueError) as err:
        raise DatasetError(f"{path}: not a VOC annotation with <size><width>/<height> ({err})") from None
    names, boxes = [], []
    for obj in root.iter("object"):
        if not keep_difficult and obj.findtext("difficult", "0").strip() == "1":
            continue
        bnd = obj.find("bndbox")
        try:
            box = [float(bnd.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (AttributeError, TypeError, ValueError):
            raise DatasetError(f"{path}: an <object> without a numeric <bndbox>") from None
        names.append(obj.findtext("name", "").strip())
        boxes.append(box)
    return root.findtext("filename", path.stem + ".jpg"), w, h, names, np.array(boxes).reshape(-1, 4)


def convert_voc(voc_root: Path, out: Path, class_names: list[str] | None, splits: tuple[str, ...],
                keep_difficult: bool = False) -> list[str]:
    """Convert a VOCdevkit year folder (Annotations, ImageSets/Main, JPEGImages); returns class names.

    Without `class_names` the names are collected from the annotations (sorted).
    """
    ids = {}
    for split in splits:
        list_file = voc_root / "ImageSets" / "Main" / f"{split}.txt"
        if not list_file.is_file():
            raise DatasetError(f"{list_file}: split list not found; is {voc_root} a VOC year folder?")
        ids[split] = [ln.split()[0] for ln in list_file.read_text().splitlines() if ln.strip()]
    parsed = {s: [parse_voc_xml(voc_root / "Annotations" / f"{i}.xml", keep_difficult) for i in v]
              for s, v in ids.items()}
    if class_names is None:
        class_names = sorted({n for recs in parsed.values() for r in recs for n in r[3]})
    index = {n: i for i, n in enumerate(class_names)}
    for split, recs in parsed.items():
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        (out / split / "labels").mkdir(parents=True, exist_ok=True)
        for img_id, (fname, w, h, names, boxes) in tqdm(zip(ids[split], recs), total=len(recs), desc=split):
            unknown = [n for n in names if n not in index]
            if unknown:
                raise DatasetError(f"{voc_root}/Annotations/{img_id}.xml: class {unknown[0]!r} is not in the "
                                   "names list; pass --names with every class")
            area_ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            if not area_ok.all():
                LOGGER.warning("%s/Annotations/%s.xml: %d zero-area boxes skipped", voc_root, img_id,
                               int((~area_ok).sum()))
            cls = np.array([index[n] for n in names], dtype=np.float64)
            rows = xyxy_to_yolo_rows(cls[area_ok], boxes[area_ok], w, h)
            src = voc_root / "JPEGImages" / fname
            _link_or_copy(src, out / split / "images" / src.name)
            _write_rows(out / split / "labels" / f"{Path(src.name).stem}.txt", rows)
    return class_names


# --- COCO --------------------------------------------------------------------------------------
def convert_coco(json_path: Path, image_dir: Path, out: Path, split: str) -> tuple[list[str], list[int]]:
    """Convert one COCO instances JSON; returns (class names, original category id per class)."""
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
        cats = sorted(data["categories"], key=lambda c: c["id"])
        images = data["images"]
    except (OSError, ValueError, KeyError) as err:
        raise DatasetError(f"{json_path}: not a COCO instances JSON ({err})") from None
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    per_image: dict[int, list] = defaultdict(list)
    crowd = 0
    for ann in data.get("annotations", []):
        if ann.get("iscrowd", 0):
            crowd += 1
            continue
        per_image[ann["image_id"]].append((cat_index[ann["category_id"]], *ann["bbox"]))
    if crowd:
        LOGGER.info("%s: %d crowd annotations skipped", json_path, crowd)
    (out / split / "images").mkdir(parents=True, exist_ok=True)
    (out / split / "labels").mkdir(parents=True, exist_ok=True)
    for img in tqdm(images, desc=split):
        src = image_dir / img["file_name"]
        if not src.is_file():
            raise DatasetError(f"{src}: image listed in {json_path} not found; check --images")
        anns = np.array(per_image.get(img["id"], []), dtype=np.float64).reshape(-1, 5)  # cls, x, y, w, h
        xyxy = np.concatenate([anns[:, 1:3], anns[:, 1:3] + anns[:, 3:5]], 1)
        keep = (anns[:, 3] > 0) & (anns[:, 4] > 0)
        rows = xyxy_to_yolo_rows(anns[keep, 0], xyxy[keep], img["width"], img["height"])
        _link_or_copy(src, out / split / "images" / src.name)
        _write_rows(out / split / "labels" / f"{src.stem}.txt", rows)
    return [c["name"] for c in cats], [int(c["id"]) for c in cats]
