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
from modules.class_transfer import normalise_class_name

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
def parse_voc_xml(path: Path, keep_difficult: bool) -> tuple[str, float, float, list[str], np.ndarray, int]:
    """(filename, w, h, names, (n, 4) xyxy pixels, difficult boxes skipped) of one VOC annotation file."""
    try:
        root = ET.parse(path).getroot()
        size = root.find("size")
        w, h = float(size.findtext("width")), float(size.findtext("height"))
    except (ET.ParseError, AttributeError, TypeError, ValueError) as err:
        raise DatasetError(f"{path}: not a VOC annotation with <size><width>/<height> ({err})") from None
    names, boxes, difficult = [], [], 0
    for obj in root.iter("object"):
        if not keep_difficult and obj.findtext("difficult", "0").strip() == "1":
            difficult += 1
            continue
        bnd = obj.find("bndbox")
        try:
            box = [float(bnd.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (AttributeError, TypeError, ValueError):
            raise DatasetError(f"{path}: an <object> without a numeric <bndbox>") from None
        names.append(obj.findtext("name", "").strip())
        boxes.append(box)
    fname = root.findtext("filename", path.stem + ".jpg")
    return fname, w, h, names, np.array(boxes).reshape(-1, 4), difficult


def convert_voc(voc_root: Path, out: Path, class_names: list[str] | None, splits: tuple[str, ...],
                keep_difficult: bool = False) -> list[str]:
    """Convert a VOCdevkit year folder (Annotations, ImageSets/Main, JPEGImages); returns class names.

    Without `class_names` the names are collected from the annotations (sorted). Without
    ImageSets/Main every XML is used (`voc_split_ids`).
    """
    ids = voc_split_ids(voc_root, splits)
    parsed = {s: [parse_voc_xml(voc_root / "Annotations" / f"{i}.xml", keep_difficult) for i in v]
              for s, v in ids.items()}
    if class_names is None:
        class_names = sorted({n for recs in parsed.values() for r in recs for n in r[3]})
    index = {n: i for i, n in enumerate(class_names)}
    difficult = sum(r[5] for recs in parsed.values() for r in recs)
    if difficult:
        LOGGER.info("%d boxes marked difficult skipped (--keep-difficult keeps them)", difficult)
    for split, recs in parsed.items():
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        (out / split / "labels").mkdir(parents=True, exist_ok=True)
        for img_id, (fname, w, h, names, boxes, _) in tqdm(zip(ids[split], recs), total=len(recs),
                                                              desc=split):
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


def voc_split_ids(voc_root: Path, splits: tuple[str, ...]) -> dict[str, list[str]]:
    """Image ids per split from ImageSets/Main/<split>.txt; without that folder, every Annotations/*.xml
    (sorted), every 10th to the last split when there are several (a note says so)."""
    main = voc_root / "ImageSets" / "Main"
    if not main.is_dir():
        all_ids = sorted(p.stem for p in (voc_root / "Annotations").glob("*.xml"))
        if not all_ids:
            raise DatasetError(f"{voc_root}/Annotations: no *.xml files")
        if len(splits) == 1:
            out = {splits[0]: all_ids}
        else:
            held = set(all_ids[9::10])
            out = {s: [] for s in splits}
            for i in all_ids:
                out[splits[-1] if i in held else splits[0]].append(i)
        LOGGER.warning("%s: no ImageSets/Main; using all %d XMLs in Annotations/ (%s)", voc_root,
                       len(all_ids), ", ".join(f"{s}: {len(v)}" for s, v in out.items()))
        return out
    ids = {}
    for split in splits:
        list_file = main / f"{split}.txt"
        if not list_file.is_file():
            raise DatasetError(f"{list_file}: split list not found; is {voc_root} a VOC year folder?")
        ids[split] = [ln.split()[0] for ln in list_file.read_text().splitlines() if ln.strip()]
    return ids


# --- COCO --------------------------------------------------------------------------------------
def load_coco_json(json_path: Path) -> dict:
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
        data["categories"], data["images"]
    except (OSError, ValueError, KeyError) as err:
        raise DatasetError(f"{json_path}: not a COCO instances JSON ({err})") from None
    return data


def select_categories(cats: list[dict], classes: list[str] | None, source: str) -> list[dict]:
    """The categories named by `classes` (names or COCO ids), in COCO id order; all when None.

    Names match as fine-tuning matches them (case, spaces, '_' and '-' ignored: `Dining_Table` finds
    `dining table`), and the JSON's own spelling is what the caller writes to classes.names, so the
    names then match the starting weights' names (data/coco.names) without edits.
    """
    cats = sorted(cats, key=lambda c: c["id"])
    if not classes:
        return cats
    by_name = {normalise_class_name(c["name"]): c for c in reversed(cats)}  # first of a repeated name
    by_id = {str(c["id"]): c for c in cats}
    classes = [by_id[k]["name"] if normalise_class_name(k) not in by_name and k in by_id else k
               for k in classes]
    unknown = [k for k in classes if normalise_class_name(k) not in by_name]
    if unknown:
        raise DatasetError(f"{source}: --classes {', '.join(unknown)} not among its categories "
                           f"({', '.join(c['name'] for c in cats[:10])}{', ...' if len(cats) > 10 else ''})")
    keep = {by_name[normalise_class_name(k)]["id"] for k in classes}
    return [c for c in cats if c["id"] in keep]


def subset_coco(data: dict, cats: list[dict]) -> dict:
    """The JSON restricted to `cats`: their annotations, and the images holding at least one of them."""
    ids = {c["id"] for c in cats}
    anns = [a for a in data.get("annotations", []) if a["category_id"] in ids]
    with_ann = {a["image_id"] for a in anns}
    return {**data, "categories": cats, "annotations": anns,
            "images": [im for im in data["images"] if im["id"] in with_ann]}


def convert_coco(json_path: Path, image_dir: Path, out: Path, split: str,
                 classes: list[str] | None = None) -> tuple[list[str], list[int], dict]:
    """Convert one COCO instances JSON; returns (class names, original category id per class, the JSON
    as converted). `classes` (names or ids) keeps those categories, re-indexed 0..k-1 in COCO id
    order, and only the images that hold one of them."""
    data = load_coco_json(json_path)
    cats = select_categories(data["categories"], classes, str(json_path))
    if classes:
        n_images = len(data["images"])
        data = subset_coco(data, cats)
        LOGGER.info("%s: --classes keeps %d categories and %d of %d images", json_path, len(cats),
                    len(data["images"]), n_images)
    images = data["images"]
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
    return [c["name"] for c in cats], [int(c["id"]) for c in cats], data
