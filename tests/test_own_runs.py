"""Real short runs: a 5-epoch, 80-image fine-tune reaches lr0; coco128's images/train layout (through
make_data) and a dataset YAML each train and validate; the final best.pt for tiny is < 20 MB and loads."""

from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modules.loading import load_model

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TINY = REPO / "cfg" / "yolov3-tiny.cfg"


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "results.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_short_fine_tune_reaches_lr0(tmp_path):
    _run("data/scripts/make_shapes.py", "--out", str(tmp_path / "s"), "--n-train", "80", "--n-val", "4",
         "--img-size", "64", "--seed", "1", "--workers", "1")
    cfg = tmp_path / "tiny5.cfg"
    _run("data/scripts/make_cfg.py", "--base", str(TINY), "--classes", "5", "--out", str(cfg))
    out = _run("train.py", "--cfg", str(cfg), "--data", str(tmp_path / "s" / "shapes.data"),
               "--img-size", "64",
               "--batch-size", "8", "--epochs", "5", "--notest", "--device", "cpu", "--workers", "0",
               "--no-channels-last", "--project", str(tmp_path / "runs"), "--name", "ft")
    assert "warm-up 16 of 50 iterations" in out.stderr and "optimizer steps in all" in out.stderr
    rows = _rows(tmp_path / "runs" / "ft")
    lr0, lrf = 0.001, 0.01
    lrs = [float(r["lr"]) for r in rows]
    # after warm-up the cosine schedule alone sets the lr: lr0 * factor(epoch), i.e. lr0 at its peak
    for epoch in (2, 3, 4):
        factor = (1 + math.cos(epoch * math.pi / 5)) / 2 * (1 - lrf) + lrf
        assert lrs[epoch] == pytest.approx(lr0 * factor, rel=1e-6)
    # warm-up ends in epoch 1 at 15/16 of its target lr0 * factor(1) = 0.905 lr0; before this rule the
    # whole run sat inside a 500-iteration warm-up and peaked at 3.8e-5
    assert max(lrs) == pytest.approx(lr0 * ((1 + math.cos(math.pi / 5)) / 2 * (1 - lrf) + lrf) * 15 / 16)


def _coco128_subset(coco128: Path, root: Path, n: int = 8) -> None:
    """The standard YOLO layout images/train + labels/train (coco128's own), a few images."""
    for sub in ("images", "labels"):
        (root / sub / "train").mkdir(parents=True)
    for img in sorted((coco128 / "images" / "train").glob("*.jpg"))[:n]:
        shutil.copy(img, root / "images" / "train" / img.name)
        label = coco128 / "labels" / "train" / f"{img.stem}.txt"
        if label.is_file():
            shutil.copy(label, root / "labels" / "train" / label.name)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["yaml", "make_data"])
def test_coco128_layout_and_yaml_train_and_validate(tmp_path, coco128, kind):
    root = tmp_path / "c128"
    _coco128_subset(coco128, root)
    if kind == "yaml":
        data = tmp_path / "c128.yaml"
        data.write_text((REPO / "data" / "coco128.yaml").read_text().replace(
            "path: ../shared/reference/coco128", f"path: {root}"))
    else:
        _run("data/scripts/make_data.py", "--root", str(root), "--names", str(REPO / "data" / "coco128.yaml"),
             "--base-cfg", str(TINY))
        data = root / "c128.data"
    runs = tmp_path / "runs"
    _run("train.py", "--cfg", str(TINY), "--data", str(data), "--img-size", "64", "--batch-size", "4",
         "--epochs", "1", "--device", "cpu", "--workers", "0", "--project", str(runs), "--name", "r")
    best = runs / "r" / "weights" / "best.pt"
    assert best.stat().st_size < 20e6 < (runs / "r" / "weights" / "last.pt").stat().st_size
    model, names = load_model(best)
    assert model.train_img_size == 64 and len(names) == 80
    out = _run("validation.py", "--weights", str(best), "--data", str(data), "--device", "cpu",
               "--workers", "0",
               "--project", str(tmp_path / "val"), "--no-plots")
    assert "--img-size 64 (the model's training size)" in out.stderr
    assert (tmp_path / "val" / "exp" / "metrics.json").is_file()
