"""Real training runs on a few 64-px shapes images: run folder, NaN guard, exact resume after SIGKILL,
and a 2-process gloo DDP run through torchrun."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import signal_on_line
from torch.utils.data import DataLoader

from build_utils.datasets import LoadImagesAndLabels, collate_fn
from build_utils.hyp import load_hyp
from modules.checkpoint import load_checkpoint
from modules.model import DarkNet
from train_val_utils.engine import StepSchedule, TrainKit, train_one_epoch
from train_val_utils.loss import YoloLoss
from train_val_utils.training.distributed_utils import DistInfo
from train_val_utils.training.epoch_meter import NonFiniteLossError
from train_val_utils.training.optim import build_optimizer

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    subprocess.run(
        [
            sys.executable,
            str(REPO / "data/scripts/make_shapes.py"),
            "--out",
            str(out),
            "--n-train",
            "8",
            "--n-val",
            "2",
            "--img-size",
            "64",
            "--seed",
            "3",
            "--workers",
            "1",
        ],
        check=True,
        env=ENV,
        capture_output=True,
        timeout=120,
    )
    return out / "shapes.data"


def _train_cmd(data: Path, project: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(REPO / "train.py"),
        "--cfg",
        str(REPO / "cfg/yolov3-demo.cfg"),
        "--data",
        str(data),
        "--hyp",
        str(REPO / "cfg/hyp-demo.yaml"),
        "--img-size",
        "64",
        "--batch-size",
        "4",
        "--nbs",
        "8",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--project",
        str(project),
        "--no-amp",
        *extra,
    ]


def test_nan_guard_names_the_batch_files(shapes: Path) -> None:
    dataset = LoadImagesAndLabels(str(shapes.parent / "train.txt"), img_size=64, batch_size=4, nc=5)
    loader = DataLoader(dataset, batch_size=4, collate_fn=collate_fn)
    model = DarkNet(REPO / "cfg/yolov3-demo.cfg")
    with torch.no_grad():
        model.module_list[0].conv.weight.fill_(float("nan"))
    hyp = load_hyp(REPO / "cfg/hyp-demo.yaml")
    kit = TrainKit(model=model, loss_fn=YoloLoss(model, hyp, 64),
                   optimizer=build_optimizer(model, "sgd", hyp),
                   scaler=torch.amp.GradScaler("cpu", enabled=False),
                   ema=None, device=torch.device("cpu"), dist=DistInfo(0, 1, 0, torch.device("cpu")))
    schedule = StepSchedule(accumulate=1, nbs=4, warmup_iters=0, img_size=64)
    with pytest.raises(NonFiniteLossError) as err:
        train_one_epoch(kit, loader, 0, 1, 1.0, schedule)
    assert "non-finite loss" in str(err.value) and dataset.img_files[0] in str(err.value)


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted_run(shapes: Path, tmp_path: Path) -> None:
    args = ("--epochs", "3", "--deterministic", "--notest", "--seed", "1", "--multi-scale")
    full = subprocess.run(
        _train_cmd(shapes, tmp_path / "full", *args), env=ENV, capture_output=True, text=True, timeout=300
    )
    assert full.returncode == 0, full.stderr[-2000:]
    run = tmp_path / "full" / "exp"
    for name in (
        "args.yaml",
        "results.csv",
        "results.txt",
        "results.png",
        "labels.jpg",
        "weights/last.pt",
        "weights/best.pt",
    ):
        assert (run / name).is_file(), name
    rows = list(csv.DictReader((run / "results.csv").open()))
    assert len(rows) == 3
    # --notest: epochs 0-1 are not evaluated (NaN, never a fake mAP of 0); the last epoch always is
    assert all(math.isnan(float(r["map50"])) for r in rows[:2])
    assert not math.isnan(float(rows[2]["map50"]))
    assert load_checkpoint(run / "weights/best.pt")["optimizer"] is None  # stripped at the end

    proc = subprocess.Popen(
        _train_cmd(shapes, tmp_path / "cut", *args),
        env=ENV,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    signal_on_line(proc, "epoch 0/2 saved", signal.SIGKILL)  # kill the moment epoch 0's checkpoint is written
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    last = tmp_path / "cut" / "exp" / "weights" / "last.pt"
    assert load_checkpoint(last)["epoch"] == 0
    resumed = subprocess.run(
        _train_cmd(shapes, tmp_path / "cut", "--resume", str(last)),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = load_checkpoint(run / "weights/last.pt"), load_checkpoint(last)
    assert b["epoch"] == 2 and len(b["results"]) == 3
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["ema"]:
        assert torch.equal(a["ema"][key], b["ema"][key]), key
    again = subprocess.run(
        _train_cmd(shapes, tmp_path / "cut", "--resume", str(last)),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 2 and "already finished" in again.stderr


@pytest.mark.slow
def test_ddp_two_process_gloo_run(shapes: Path, tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
        *_train_cmd(shapes, tmp_path, "--epochs", "1", "--notest")[1:],
    ]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "exp" / "weights" / "last.pt")
    assert ckpt["epoch"] == 0 and not any(k.startswith("module.") for k in ckpt["model"])
    assert "rank 1/2" in done.stderr and sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


@pytest.mark.slow
def test_switches_take_effect(shapes: Path, tmp_path: Path) -> None:
    """--single-cls (1-class cfg), --no-ema, --no-savebest, --freeze, --optimizer, --name reach the run."""
    from build_utils.cfg_edit import rewrite_cfg_classes

    cfg = tmp_path / "one.cfg"
    cfg.write_text(rewrite_cfg_classes((REPO / "cfg/yolov3-demo.cfg").read_text(), 1))
    cmd = _train_cmd(
        shapes,
        tmp_path,
        "--epochs",
        "1",
        "--notest",
        "--single-cls",
        "--no-ema",
        "--no-savebest",
        "--freeze",
        "backbone",
        "--optimizer",
        "adam",
        "--name",
        "sw",
    )
    cmd[cmd.index("--cfg") + 1] = str(cfg)
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    wdir = tmp_path / "sw" / "weights"
    ckpt = load_checkpoint(wdir / "last.pt")
    assert not (wdir / "best.pt").exists() and ckpt["ema"] is None and ckpt["class_names"] == ["object"]
    assert "freeze backbone: backbone layers 0-9 frozen" in done.stderr
    assert "betas" in ckpt["optimizer"]["param_groups"][0] and ckpt["options"]["optimizer"] == "adam"
