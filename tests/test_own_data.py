"""Your own data: warm-up rule, k-means masks, dataset YAML and layouts, split lists, converters,
resume selection, deployable best.pt, image size from the .pt, predict --nosave and category ids."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from build_utils.cfg_edit import mask_problems, partition_masks
from build_utils.data_cfg import parse_data_cfg
from build_utils.datasets import LoadImagesAndLabels
from build_utils.errors import ConfigError, UserError
from build_utils.hyp import OptimizerHyp
from build_utils.parse_config import parse_model_cfg_text
from modules.checkpoint import build_checkpoint, deployable_checkpoint, save_checkpoint
from modules.loading import load_model
from modules.model import DarkNet
from train_val_utils.training.ema import ModelEMA
from train_val_utils.training.optim import optimizer_steps, warmup_accumulate, warmup_iterations
from train_val_utils.training.resume import find_last_checkpoint, resume_options

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "cfg" / "yolov3-tiny.cfg"


def _image(path: Path, size: int = 64) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), 90, np.uint8)).save(path)


def _label(path: Path, rows: str = "0 0.5 0.5 0.3 0.4\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rows)


# ---- 1. warm-up ------------------------------------------------------------------------------------
def test_warmup_capped_at_a_third_of_the_run():
    h = OptimizerHyp()  # warmup_epochs 3
    assert warmup_iterations(10, h, 50) == 16  # 80 images, batch 8, 5 epochs: not the whole run
    assert warmup_iterations(1000, h, 300_000) == 3000  # long runs: warmup_epochs * nb
    assert warmup_iterations(10, h, 10_000) == 100  # the floor
    assert warmup_iterations(10, OptimizerHyp(warmup_epochs=0.0), 50) == 0


def test_accumulation_ramps_during_warmup():
    assert [warmup_accumulate(ni, 16, 8) for ni in (0, 8, 15, 16, 40)] == [1, 4, 8, 8, 8]
    assert optimizer_steps(10, 5, 0, 8) == 10  # no warm-up: 2 steps per 10-batch epoch
    assert optimizer_steps(10, 5, 16, 8) > 10
    assert optimizer_steps(10, 5, 0, 1) == 50


# ---- 2. k-means masks -------------------------------------------------------------------------------
def test_tiny_masks_partitioned_and_metrics_use_the_masked_anchors(tmp_path, caplog):
    from data.scripts.kmeans_anchors import anchor_metrics, write_cfg_anchors

    assert partition_masks([32, 16], 6) == [[3, 4, 5], [0, 1, 2]]
    assert partition_masks([32, 16, 8], 9) == [[6, 7, 8], [3, 4, 5], [0, 1, 2]]
    official = parse_model_cfg_text(TINY.read_text(), str(TINY))
    problems = mask_problems(official, str(TINY))
    assert any("share anchor(s) [3]" in p for p in problems)
    assert any("never use anchor(s) [0]" in p for p in problems)
    DarkNet(TINY)  # the official 1,2,3 + 3,4,5 keeps loading
    rng = np.random.default_rng(0)
    wh = np.concatenate([rng.uniform(4, 12, (50, 2)), rng.uniform(100, 300, (50, 2))])  # tiny and huge boxes
    anchors = [(6, 6), (8, 8), (10, 10), (120, 120), (200, 200), (280, 280)]
    out = tmp_path / "tiny-anchors.cfg"
    with caplog.at_level(logging.INFO):
        masks = write_cfg_anchors(TINY, out, anchors, wh)
    assert masks == [[3, 4, 5], [0, 1, 2]]
    sections = parse_model_cfg_text(out.read_text(), str(out))
    assert [s["mask"] for s in sections if s["type"] == "yolo"] == [[3, 4, 5], [0, 1, 2]]
    assert mask_problems(sections) == []
    assert any("masks share anchor(s) [3]" in r.message for r in caplog.records)  # the input cfg's problem
    used = anchor_metrics(wh, np.array(anchors, np.float64))
    assert f"best possible recall {used['bpr']:.4f}" in caplog.text
    # the official masks leave anchor 0 out: metrics over the used anchors lose the small boxes
    without_0 = anchor_metrics(wh, np.array(anchors[1:], np.float64))
    assert without_0["mean_iou"] < used["mean_iou"]


# ---- 3. dataset YAML, layouts, split lists ----------------------------------------------------------
def _yolo_layout(root: Path, split_first: bool, n: int = 4) -> None:
    for split in ("train", "val"):
        for i in range(n):
            img = root / (f"{split}/images" if split_first else f"images/{split}") / f"{split}{i}.jpg"
            _image(img)
            _label(Path(str(img).replace("/images/", "/labels/")).with_suffix(".txt"))


def test_dataset_yaml_names_list_dict_and_folder_lists(tmp_path):
    _yolo_layout(tmp_path / "ds", split_first=False)
    _yolo_layout(tmp_path / "ds2", split_first=False)
    y = tmp_path / "d.yaml"
    y.write_text("path: ds\ntrain: [images/train, ../ds2/images/train]\nval: images/val\n"
                 "names: {0: cat, 1: dog}\ncategory_ids: [17, 18]\n")
    d = parse_data_cfg(y)
    assert d["classes"] == 2 and d["class_names"] == ["cat", "dog"] and d["category_ids"] == [17, 18]
    assert isinstance(d["train"], list) and len(d["train"]) == 2
    assert len(LoadImagesAndLabels(d["train"], img_size=64, nc=2).img_files) == 8  # both folders
    y.write_text("path: ds\ntrain: images/train\nval: images/val\nnc: 3\nnames: [cat, dog]\n")
    with pytest.raises(ConfigError, match="nc: 3 but names lists 2"):
        parse_data_cfg(y)
    y.write_text("path: nowhere\ntrain: images/train\nval: images/val\nnames: [a]\n")
    with pytest.raises(ConfigError, match="path: nowhere not found"):
        parse_data_cfg(y)


def test_shipped_coco128_files(repo_root, coco128, monkeypatch):
    monkeypatch.chdir(repo_root)
    for name in ("coco128.data", "coco128.yaml"):
        d = parse_data_cfg(repo_root / "data" / name)
        assert d["classes"] == 80 and len(d["category_ids"]) == 80 and d["category_ids"][-1] == 90
        assert Path(d["train"]).resolve() == (coco128 / "images" / "train").resolve()
    names = parse_data_cfg(repo_root / "data" / "coco128.yaml")["class_names"]
    assert names == parse_data_cfg(repo_root / "data" / "coco128.data")["class_names"]
    assert {"motorcycle", "couch", "tv", "airplane"} <= set(names)  # COCO's own spelling


@pytest.mark.parametrize("split_first", [True, False])
def test_make_data_accepts_both_layouts(tmp_path, split_first):
    from data.scripts.make_data import get_args_parser, main

    root = tmp_path / "ds"
    _yolo_layout(root, split_first)
    (root / "classes.names").write_text("thing\n")
    data = main(get_args_parser().parse_args(["--root", str(root), "--base-cfg", str(TINY),
                                              "--out", str(tmp_path / "out")]))
    d = parse_data_cfg(data)
    assert len(LoadImagesAndLabels(d["train"], img_size=64, nc=1).img_files) == 4
    assert all("val" in Path(f).name for f in LoadImagesAndLabels(d["valid"], img_size=64, nc=1).img_files)


def test_split_list_warns_only_about_missing_images(tmp_path, caplog):
    folder = tmp_path / "images"
    for i in range(6):
        _image(folder / f"{i}.jpg")
        _label(tmp_path / "labels" / f"{i}.txt")
    (tmp_path / "train.txt").write_text("".join(f"images/{i}.jpg\n" for i in range(3)))
    with caplog.at_level(logging.WARNING):
        LoadImagesAndLabels(tmp_path / "train.txt", img_size=64, nc=1)
    assert "without an image" not in caplog.text
    for i in range(5):
        _label(tmp_path / "labels" / f"gone{i}.txt")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        LoadImagesAndLabels(tmp_path / "train.txt", img_size=64, nc=1)
    assert "5 label files without an image on disk" in caplog.text and "(2 more)" in caplog.text
    assert "gone3" not in caplog.text


# ---- converters -------------------------------------------------------------------------------------
def _voc(root: Path, with_sets: bool) -> None:
    for i in range(10):
        _image(root / "JPEGImages" / f"{i:03d}.jpg", 100)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{i:03d}.xml").write_text(
            f"<annotation><filename>{i:03d}.jpg</filename><size><width>100</width><height>100</height></size>"
            "<object><name>cat</name><difficult>0</difficult><bndbox><xmin>10</xmin><ymin>10</ymin><xmax>50</xmax>"
            "<ymax>60</ymax></bndbox></object><object><name>dog</name><difficult>1</difficult><bndbox>"
            "<xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>")
    if with_sets:
        (root / "ImageSets" / "Main").mkdir(parents=True)
        (root / "ImageSets" / "Main" / "train.txt").write_text("000\n001\n")
        (root / "ImageSets" / "Main" / "val.txt").write_text("002\n")


def test_voc2yolo_counts_difficult_and_uses_all_xmls_without_imagesets(tmp_path, capsys):
    from data.scripts.voc2yolo import get_args_parser, main

    _voc(tmp_path / "VOC", with_sets=False)
    main(get_args_parser().parse_args(["--voc-root", str(tmp_path / "VOC"), "--out", str(tmp_path / "o")]))
    err = capsys.readouterr().err  # the script's logging goes to stderr
    assert "10 boxes marked difficult skipped" in err
    assert "no ImageSets/Main; using all 10 XMLs" in err
    assert len(list((tmp_path / "o" / "train" / "labels").glob("*.txt"))) == 9
    assert len(list((tmp_path / "o" / "val" / "labels").glob("*.txt"))) == 1


def test_coco2yolo_classes_subset_reindexed(tmp_path):
    from data.scripts.coco2yolo import get_args_parser, main

    imgs = tmp_path / "imgs"
    for i in range(3):
        _image(imgs / f"{i}.jpg", 100)
    cats = [{"id": 1, "name": "person"}, {"id": 4, "name": "motorcycle"}, {"id": 18, "name": "dog"}]
    anns = [{"id": 1, "image_id": 0, "category_id": 1, "bbox": [10, 10, 20, 20], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 18, "bbox": [10, 10, 30, 20], "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 4, "bbox": [5, 5, 30, 20], "iscrowd": 0}]
    js = tmp_path / "inst.json"
    js.write_text(json.dumps({"categories": cats, "annotations": anns, "images": [
        {"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 100} for i in range(3)]}))
    out = tmp_path / "coco"
    main(get_args_parser().parse_args(["--out", str(out), "--val-json", str(js), "--val-images", str(imgs),
                                       "--classes", "dog", "4"]))
    assert (out / "classes.names").read_text().split("\n")[:2] == ["motorcycle", "dog"]
    assert json.loads((out / "category_ids.json").read_text()) == [4, 18]
    assert sorted(p.name for p in (out / "val" / "labels").glob("*.txt")) == ["1.txt", "2.txt"]
    assert (out / "val" / "labels" / "1.txt").read_text().startswith("1 ")
    assert {c["id"] for c in json.loads((out / "val_instances.json").read_text())["categories"]} == {4, 18}


# ---- 4. resume, checkpoints, image size, predict ------------------------------------------------------
def _fake_run(project: Path, name: str, epoch: int, epochs: int) -> Path:
    path = project / name / "weights" / "last.pt"
    path.parent.mkdir(parents=True)
    save_checkpoint({"epoch": epoch, "options": {"epochs": epochs}, "optimizer": {}, "rng": {}}, path)
    return path


def test_bare_resume_picks_the_newest_unfinished_run(tmp_path, caplog):
    import os

    unfinished = _fake_run(tmp_path, "exp", 2, 10)
    finished = _fake_run(tmp_path, "exp2", 9, 10)
    os.utime(unfinished, (1, 1))  # older than the finished one
    with caplog.at_level(logging.INFO):
        assert find_last_checkpoint(tmp_path) == unfinished
    assert f"newest unfinished run under {tmp_path} is {unfinished}" in caplog.text
    finished.parent.parent.rename(tmp_path / "done")
    unfinished.unlink()
    with pytest.raises(UserError, match="every run .* has finished"):
        find_last_checkpoint(tmp_path)


def _tiny_ckpt(img_size: int = 96, category_ids: list[int] | None = None) -> dict:
    model = DarkNet(TINY)
    ema = ModelEMA(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return build_checkpoint(model, ema, opt, None, None, 3, 0.5, {}, {"img_size": img_size, "epochs": 10},
                            [f"c{i}" for i in range(80)], [], category_ids=category_ids)


def test_deployable_best_pt_is_small_fp16_and_loads(tmp_path):
    ckpt = _tiny_ckpt()
    assert ckpt["img_size"] == 96 and ckpt["strides"] == [32, 16]
    best, last = tmp_path / "best.pt", tmp_path / "last.pt"
    save_checkpoint(deployable_checkpoint(ckpt), best)
    save_checkpoint(ckpt, last)
    assert best.stat().st_size < 20e6 < last.stat().st_size  # tiny: ~17.7 MB against ~71 MB
    model, names = load_model(best)
    assert names[0] == "c0" and model.train_img_size == 96
    ema = DarkNet(TINY)
    ema.load_state_dict(ckpt["ema"])
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref, got = ema.eval()(x)[0], model(x)[0]
    assert torch.allclose(ref[..., 4:], got[..., 4:], atol=2e-2)  # fp16 rounding of the weights only
    fresh = DarkNet(TINY)
    from train_val_utils.training.train_setup import load_start_weights

    load_start_weights(fresh, str(best))  # fine-tuning from best.pt reads the fp16 weights
    assert fresh.state_dict()["module_list.0.conv.weight"].dtype == torch.float32
    with pytest.raises(UserError, match="deployable weights only"):
        resume_options(torch.load(best, weights_only=True), best, {}, {})


def test_predict_uses_the_pt_size_nosave_and_category_ids(tmp_path, capsys, monkeypatch):
    import predict

    monkeypatch.chdir(tmp_path)
    weights = tmp_path / "best.pt"
    save_checkpoint(deployable_checkpoint(_tiny_ckpt(96, list(range(1, 81)))), weights)
    _image(tmp_path / "src" / "a.jpg", 200)
    base = ["--weights", str(weights), "--source", str(tmp_path / "src"), "--device", "cpu",
            "--conf-thres", "0.0", "--max-det", "5"]
    predict.main(predict.get_args_parser().parse_args([*base, "--nosave", "--project", "p1"]))
    err = capsys.readouterr().err
    assert "--img-size 96 (the model's training size)" in err and ": 96x96 " in err
    assert not (tmp_path / "p1").exists() and "Results saved to" not in err
    predict.main(predict.get_args_parser().parse_args([*base, "--nosave", "--save-json", "--project", "p2"]))
    recs = json.loads((tmp_path / "p2" / "exp" / "predictions.json").read_text())
    assert recs and all(r["category_id"] == int(r["category_name"][1:]) + 1 for r in recs)


def test_class_mismatch_error_cites_the_line_and_a_command_that_runs(tmp_path):
    from train_val_utils.training.train_setup import class_mismatch_error

    err = class_mismatch_error(DarkNet(TINY), str(TINY), "my.data", 3, False)
    lines = TINY.read_text().splitlines()
    line = next(i for i, t in enumerate(lines, 1) if t.replace(" ", "") == "classes=80")
    assert f"{TINY}:{line}:" in str(err)
    cmd = str(err).split("train with it: ")[1]
    from data.scripts.make_cfg import get_args_parser, main

    out = tmp_path / "new.cfg"
    args = cmd.split()[2:]
    args[args.index("--out") + 1] = str(out)
    main(get_args_parser().parse_args(args))
    assert DarkNet(out).nc == 3


def test_interrupted_line_names_the_resume_command(tmp_path):
    from train_val_utils.training.resume import resume_command

    last = tmp_path / "last.pt"
    assert "nothing to resume" in resume_command(last)
    last.write_bytes(b"x")
    assert resume_command(last) == f"resume with: python train.py --resume {last}"


def test_validation_defaults_to_the_pt_size(tmp_path, monkeypatch, caplog):  # main() sets no logging
    import validation

    _yolo_layout(tmp_path / "ds", split_first=False, n=2)
    y = tmp_path / "d.yaml"
    y.write_text("path: ds\ntrain: images/train\nval: images/val\nnames: [" + ", ".join(
        f"c{i}" for i in range(80)) + "]\n")
    weights = tmp_path / "best.pt"
    save_checkpoint(deployable_checkpoint(_tiny_ckpt(64)), weights)
    monkeypatch.chdir(tmp_path)
    args = validation.get_args_parser().parse_args(["--weights", str(weights), "--data", str(y), "--device",
                                                    "cpu", "--no-plots", "--workers", "0"])
    with caplog.at_level(logging.INFO):
        res = validation.main(args)
    assert "--img-size 64 (the model's training size)" in caplog.text and res["n_images"] == 2
