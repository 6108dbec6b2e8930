"""One model on one split prints one mAP: the training log (results.csv), validation.py and benchmark.py agree
to 1e-4 on best.pt, scored against one ground truth: the YOLO labels (coco128), or the COCO JSON that the data
names (a coco2yolo conversion whose JSON holds a crowd region and a box the conversion clips, so the labels
would give another number)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import benchmark
import export
import train
import validation
from build_utils.datasets import EVAL_SHAPE_GROUP, batches_within_groups
from modules.backends import load_backend
from modules.checkpoint import deployable_checkpoint, load_checkpoint, save_checkpoint
from modules.export_utils import checkpoint_from_model
from modules.loading import as_deployed
from modules.model import DarkNet
from train_val_utils.benchmarks import format_benchmark

REPO = Path(__file__).resolve().parents[1]
TINY_CFG = REPO / "cfg" / "yolov3-tiny.cfg"
N_IMAGES = 12


def test_batches_never_cross_a_shape_group() -> None:
    batches = batches_within_groups(70, 24, 32)
    assert [len(b) for b in batches] == [24, 8, 24, 8, 6]
    assert sum(batches, []) == list(range(70))
    assert all(b[0] // 32 == b[-1] // 32 for b in batches)
    assert [len(b) for b in batches_within_groups(40, 64, EVAL_SHAPE_GROUP)] == [32, 8]


def test_training_scores_exactly_what_best_pt_gives(tmp_path: Path) -> None:
    """`as_deployed` (what training scores) computes bit for bit what validation.py's model of best.pt
    computes (fused, channels_last)."""
    torch.manual_seed(0)
    model = DarkNet(TINY_CFG).train()
    model(torch.rand(2, 3, 64, 64))  # a training forward moves the BN running statistics off 0/1
    model.to(memory_format=torch.channels_last).eval()  # as the trainer holds it
    best = tmp_path / "best.pt"
    ckpt = checkpoint_from_model(model, [str(i) for i in range(80)], {})
    save_checkpoint(deployable_checkpoint(ckpt), best)
    loaded = load_backend(best, None, torch.device("cpu"), fuse=True, channels_last=True)  # as validation.py
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        deployed, from_file, raw = as_deployed(model)(x)[0], loaded(x)[0], model(x)[0]
    assert torch.equal(deployed, from_file)
    assert not torch.equal(raw, from_file)  # float16 rounding and fusion do change the outputs


@pytest.fixture(scope="module")
def tiny_pt(tmp_path_factory: pytest.TempPathFactory, tiny_weights: Path) -> Path:
    """The official tiny weights as a .pt with COCO category ids."""
    out = tmp_path_factory.mktemp("pt") / "tiny.pt"
    return export.main(export.get_args_parser().parse_args(
        ["--weights", str(tiny_weights), "--cfg", str(TINY_CFG), "--format", "pt", "--out", str(out),
         "--names", str(REPO / "data" / "coco128.data")]))


def _first_images(coco128: Path, n: int) -> list[Path]:
    return sorted((coco128 / "images" / "train").glob("*.jpg"))[:n]


def _three_maps(data: Path, weights: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple]:
    """(mAP, mAP@0.5) of one epoch of fine-tuning as results.csv logs it, and of its best.pt through
    validation.py and benchmark.py (its PyTorch row), each at its own batch size."""
    monkeypatch.setenv("YOLOV3_CACHE", str(tmp / "cache"))
    result = train.main(train.get_args_parser().parse_args(
        ["--cfg", str(TINY_CFG), "--data", str(data), "--weights", str(weights), "--epochs", "1",
         "--batch-size", "4", "--img-size", "320", "--workers", "0", "--device", "cpu", "--project",
         str(tmp / "train"), "--name", "run", "--no-amp"]))
    run_dir = Path(result["save_dir"])
    row = list(csv.DictReader((run_dir / "results.csv").open()))[-1]
    best = run_dir / "weights" / "best.pt"
    common = ["--weights", str(best), "--data", str(data), "--workers", "0", "--device", "cpu"]
    val = validation.main(validation.get_args_parser().parse_args(
        [*common, "--batch-size", "5", "--no-plots", "--project", str(tmp / "val")]))
    monkeypatch.setattr(format_benchmark, "FORMATS", ("PyTorch",))  # the other rows export, minutes here
    rows = benchmark.main(benchmark.get_args_parser().parse_args(
        [*common, "--batch-size", "3", "--project", str(tmp / "bench")]))
    return {"training log": (float(row["map"]), float(row["map50"])),
            "final": (result["map"], result["map50"]), "validation.py": (val["map"], val["map50"]),
            "benchmark.py": (rows[0].map, rows[0].map50)}


def _assert_one_map(maps: dict[str, tuple]) -> None:
    ref = maps["validation.py"]
    assert ref[1] > 0.05, maps  # a real score, not an empty one
    for got in maps.values():
        assert abs(got[0] - ref[0]) < 1e-4 and abs(got[1] - ref[1]) < 1e-4, maps


@pytest.mark.slow
def test_one_map_against_the_labels(tmp_path: Path, coco128: Path, tiny_pt: Path, repo_root: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    images = tmp_path / "images"
    (tmp_path / "labels").mkdir()
    images.mkdir()
    for img in _first_images(coco128, N_IMAGES):
        (images / img.name).symlink_to(img)
        label = coco128 / "labels" / "train" / f"{img.stem}.txt"
        if label.exists():
            (tmp_path / "labels" / label.name).symlink_to(label)
    data = tmp_path / "coco.data"
    names = repo_root / "data" / "coco.names"
    data.write_text(f"classes=80\ntrain={images}\nvalid={images}\nnames={names}\n")
    _assert_one_map(_three_maps(data, tiny_pt, tmp_path, monkeypatch))


def _coco_json_for(images: list[Path], coco128: Path, category_ids: list[int]) -> dict:
    """COCO instances for `images` from their coco128 labels, plus what YOLO labels cannot hold: a crowd
    region over the first image's people, and a box of the second image that runs past its right border."""
    import cv2

    coco = {"images": [], "annotations": [], "categories": [{"id": c, "name": f"c{c}"} for c in category_ids]}
    for i, img in enumerate(images):
        h, w = cv2.imread(str(img)).shape[:2]
        coco["images"].append({"id": 1000 + i, "file_name": img.name, "width": w, "height": h})
        rows = np.loadtxt(coco128 / "labels" / "train" / f"{img.stem}.txt", ndmin=2)
        for cls, cx, cy, bw, bh in rows:
            box = [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": 1000 + i,
                                        "iscrowd": 0, "category_id": category_ids[int(cls)], "bbox": box,
                                        "area": box[2] * box[3]})
    first = coco["images"][0]
    w, h = first["width"], first["height"]
    coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": first["id"], "iscrowd": 1,
                                "category_id": category_ids[0], "bbox": [0, 0, w, h], "area": w * h})
    second = [a for a in coco["annotations"] if a["image_id"] == 1001][0]
    second["bbox"][2] += coco["images"][1]["width"]  # past the border: coco2yolo clips it, the JSON keeps it
    return coco


@pytest.mark.slow
def test_one_map_against_the_coco_json(tmp_path: Path, coco128: Path, tiny_pt: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    images = _first_images(coco128, N_IMAGES)
    ids = load_checkpoint(tiny_pt)["category_ids"]
    source = tmp_path / "coco_images"
    source.mkdir()
    for img in images:
        shutil.copy(img, source / img.name)
    js = tmp_path / "instances.json"
    js.write_text(json.dumps(_coco_json_for(images, coco128, ids)))
    out = tmp_path / "converted"
    subprocess.run([sys.executable, str(REPO / "data/scripts/coco2yolo.py"), "--out", str(out),
                    "--train-json", str(js), "--train-images", str(source), "--val-json", str(js),
                    "--val-images", str(source)], check=True, capture_output=True, timeout=300)
    data = out / "dataset.yaml"  # coco2yolo names the JSON there: valid_json
    maps = _three_maps(data, tiny_pt, tmp_path, monkeypatch)
    _assert_one_map(maps)
    # the JSON is what was scored: the same best.pt against the labels alone gives another number
    labels_only = out / "labels_only.yaml"
    labels_only.write_text(data.read_text().replace("valid_json: val_instances.json", ""))
    best = next((tmp_path / "train").glob("*/weights/best.pt"))
    plain = validation.main(validation.get_args_parser().parse_args(
        ["--weights", str(best), "--data", str(labels_only), "--workers", "0", "--device", "cpu",
         "--no-plots", "--project", str(tmp_path / "val_labels")]))
    assert abs(plain["map"] - maps["validation.py"][0]) > 1e-3, (plain["map"], maps)
