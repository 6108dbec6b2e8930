"""Dataset tools: VOC/COCO round trips, make_data + the model-core parser, k-means, make_shapes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest

from build_utils.data_cfg import parse_data_cfg
from build_utils.datasets import LoadImagesAndLabels
from build_utils.errors import DatasetError
from build_utils.parse_config import parse_model_cfg

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "data" / "scripts"
TOOLS = ("voc2yolo", "coco2yolo", "make_data", "kmeans_anchors", "make_shapes")


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name: str, *argv: str) -> object:
    module = _script(name)
    return module.main(module.get_args_parser().parse_args(list(argv)))


def _rows(path: Path) -> np.ndarray:
    return np.array(path.read_text().split(), dtype=np.float64).reshape(-1, 5)


@pytest.mark.parametrize("name", TOOLS)
def test_help(name: str) -> None:
    out = subprocess.run([sys.executable, str(SCRIPTS / f"{name}.py"), "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "usage" in out.stdout


def _voc_object(name: str, box: tuple[int, ...], difficult: int = 0) -> str:
    x1, y1, x2, y2 = box
    return (f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin>"
            f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")


def test_voc_round_trip(tmp_path: Path) -> None:
    voc = tmp_path / "VOC2012"
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (voc / sub).mkdir(parents=True)
    objects = {"a": [("dog", (10, 20, 110, 70)), ("cat", (0, 0, 200, 100), 1), ("cat", (5, 5, 5, 40))],
               "b": [("cat", (50, 25, 150, 75))]}
    for img_id, objs in objects.items():
        cv2.imwrite(str(voc / "JPEGImages" / f"{img_id}.jpg"), np.zeros((100, 200, 3), np.uint8))
        body = "".join(_voc_object(*o) for o in objs)
        (voc / "Annotations" / f"{img_id}.xml").write_text(
            f"<annotation><filename>{img_id}.jpg</filename><size><width>200</width><height>100</height>"
            f"<depth>3</depth></size>{body}</annotation>")
    (voc / "ImageSets/Main/train.txt").write_text("a\n")
    (voc / "ImageSets/Main/val.txt").write_text("b\n")
    out = tmp_path / "yolo"
    _run("voc2yolo", "--voc-root", str(voc), "--out", str(out))
    assert (out / "classes.names").read_text().split() == ["cat", "dog"]
    np.testing.assert_allclose(_rows(out / "train/labels/a.txt"), [[1, 0.3, 0.45, 0.5, 0.5]])  # difficult,
    np.testing.assert_allclose(_rows(out / "val/labels/b.txt"), [[0, 0.5, 0.5, 0.5, 0.5]])  # zero-area gone
    assert (out / "train/images/a.jpg").is_file()
    _run("voc2yolo", "--voc-root", str(voc), "--out", str(out), "--keep-difficult")
    assert len(_rows(out / "train/labels/a.txt")) == 2


def _coco_tree(tmp_path: Path) -> tuple[Path, Path]:
    imgs = tmp_path / "val2017"
    imgs.mkdir()
    cv2.imwrite(str(imgs / "000000000001.jpg"), np.zeros((100, 200, 3), np.uint8))
    cv2.imwrite(str(imgs / "000000000002.jpg"), np.zeros((50, 50, 3), np.uint8))
    coco = {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "width": 200, "height": 100},
                   {"id": 2, "file_name": "000000000002.jpg", "width": 50, "height": 50}],
        "categories": [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"},
                       {"id": 5, "name": "plane"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 90, "bbox": [20, 10, 100, 50], "iscrowd": 0, "area": 1},
            {"id": 2, "image_id": 1, "category_id": 5, "bbox": [0, 0, 200, 100], "iscrowd": 1, "area": 1},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [150, 50, 50, 50], "iscrowd": 0, "area": 1},
        ],
    }
    js = tmp_path / "instances_val.json"
    js.write_text(json.dumps(coco))
    return js, imgs


def test_coco_round_trip_and_make_data(tmp_path: Path) -> None:
    js, imgs = _coco_tree(tmp_path)
    out = tmp_path / "coco"
    _run("coco2yolo", "--out", str(out), "--val-json", str(js), "--val-images", str(imgs),
         "--train-json", str(js), "--train-images", str(imgs))
    assert (out / "classes.names").read_text().split() == ["person", "plane", "toothbrush"]
    assert json.loads((out / "category_ids.json").read_text()) == [1, 5, 90]
    np.testing.assert_allclose(_rows(out / "val/labels/000000000001.txt"),
                               [[2, 0.35, 0.35, 0.5, 0.5], [0, 0.875, 0.75, 0.25, 0.5]])  # crowd skipped
    assert _rows(out / "val/labels/000000000002.txt").shape == (0, 5)
    from_yaml = parse_data_cfg(out / "dataset.yaml")  # coco2yolo's own dataset YAML names the COCO JSON
    assert from_yaml["valid_json"] == str((out / "val_instances.json").resolve())
    assert from_yaml["category_ids"] == [1, 5, 90] and from_yaml["class_names"][2] == "toothbrush"
    assert from_yaml["valid"] == str((out / "val" / "images").resolve())
    data_path = _run("make_data", "--root", str(out), "--base-cfg", str(REPO / "cfg/yolov3-tiny.cfg"))
    data = parse_data_cfg(data_path)
    assert data["classes"] == 3 and data["class_names"] == ["person", "plane", "toothbrush"]
    assert Path(data["valid_json"]).name == "val_instances.json"
    assert data["category_ids"] == [1, 5, 90]  # parse_data_cfg reads the file into the list
    assert Path(data["train"]).read_text().splitlines()[0] == "train/images/000000000001.jpg"
    yolo = [s for s in parse_model_cfg(out / "coco.cfg") if s["type"] == "yolo"]
    assert yolo and all(s["classes"] == 3 for s in yolo)
    ds = LoadImagesAndLabels(data["valid"], img_size=64, nc=data["classes"])
    assert len(ds) == 2 and sum(len(lab) for lab in ds.labels) == 2


def test_kmeans_finds_known_anchors(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    sizes = np.array([[20, 20], [60, 30], [120, 150]])  # pixels in 320x320 images
    rng = np.random.default_rng(0)
    blank = np.zeros((320, 320, 3), np.uint8)
    for i in range(12):
        cv2.imwrite(str(tmp_path / "images" / f"{i}.jpg"), blank)
        wh = sizes * rng.uniform(0.95, 1.05, (3, 1)) / 320
        rows = "".join(f"{k} 0.5 0.5 {w:.5f} {h:.5f}\n" for k, (w, h) in enumerate(wh))
        (tmp_path / "labels" / f"{i}.txt").write_text(rows)
    anchors = _run("kmeans_anchors", "--path", str(tmp_path / "images"), "--img-size", "320", "--n", "3")
    np.testing.assert_allclose(np.array(anchors), sizes, rtol=0.06)
    out = tmp_path / "tiny.cfg"
    _run("kmeans_anchors", "--path", str(tmp_path / "images"), "--img-size", "640", "--n", "6",
         "--cfg", str(REPO / "cfg/yolov3-tiny.cfg"), "--out", str(out), "--refine", "50")
    yolo = [s for s in parse_model_cfg(out) if s["type"] == "yolo"]
    assert np.array(yolo[0]["anchors"]).size == 12


def test_make_shapes_dataset(tmp_path: Path) -> None:
    args = ["--n-train", "12", "--n-val", "4", "--img-size", "128", "--seed", "7"]
    _run("make_shapes", "--out", str(tmp_path / "a"), *args)
    _run("make_shapes", "--out", str(tmp_path / "b"), *args)
    _run("make_shapes", "--out", str(tmp_path / "c"), *args[:-1], "8")
    a = sorted((tmp_path / "a/train/labels").glob("*.txt"))
    assert len(a) == 12 and len(list((tmp_path / "a/val/images").glob("*.jpg"))) == 4
    texts = [p.read_text() for p in a]
    assert texts == [(tmp_path / "b/train/labels" / p.name).read_text() for p in a]
    assert texts != [(tmp_path / "c/train/labels" / p.name).read_text() for p in a]
    rows = np.concatenate([_rows(p) for p in a])
    assert set(rows[:, 0].astype(int)) <= set(range(5)) and 12 <= len(rows) <= 96
    assert rows[:, 3:].max() <= 0.75 and rows[:, 3:].min() >= 0.05
    data = parse_data_cfg(tmp_path / "a/shapes.data")
    assert data["classes"] == 5 and len(data["class_names"]) == 5
    ds = LoadImagesAndLabels(data["train"], img_size=128, nc=data["classes"])
    assert len(ds) == 12 and ds.image_shapes.tolist()[0] == [128, 128]


def test_coco_classes_match_loosely_and_keep_coco_spelling(tmp_path: Path) -> None:
    """`--classes Tooth_Brush PERSON` finds the categories; classes.names and the .data keep COCO's
    spelling, the spelling fine-tuning matches against data/coco.names."""
    js, imgs = _coco_tree(tmp_path)
    out = tmp_path / "coco"
    _run("coco2yolo", "--out", str(out), "--val-json", str(js), "--val-images", str(imgs),
         "--train-json", str(js), "--train-images", str(imgs), "--classes", "Tooth_Brush", "PERSON")
    assert (out / "classes.names").read_text().splitlines() == ["person", "toothbrush"]
    np.testing.assert_allclose(_rows(out / "val/labels/000000000001.txt"),
                               [[1, 0.35, 0.35, 0.5, 0.5], [0, 0.875, 0.75, 0.25, 0.5]])
    made = _run("make_data", "--root", str(out), "--base-cfg", str(REPO / "cfg" / "yolov3-tiny.cfg"))
    data = parse_data_cfg(made)
    assert data["class_names"] == ["person", "toothbrush"]
    with pytest.raises(DatasetError, match="--classes zebra not among its categories"):
        _run("coco2yolo", "--out", str(out), "--val-json", str(js), "--val-images", str(imgs),
             "--classes", "zebra")
