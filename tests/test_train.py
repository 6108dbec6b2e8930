"""train.py: flags, user errors, resume rules, fine-tuning, freezing, NaN guard (fast, in-process)."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from build_utils.cfg_edit import rewrite_cfg_classes
from build_utils.errors import UserError
from modules.checkpoint import rng_state, save_checkpoint, set_rng_state
from modules.model import DarkNet
from modules.weights import save_darknet_weights
from train_val_utils.training.resume import resume_options
from train_val_utils.training.train_setup import backbone_end, freeze_layers, load_start_weights

REPO = Path(__file__).resolve().parents[1]
DEMO_CFG = REPO / "cfg" / "yolov3-demo.cfg"


def _model(nc: int) -> DarkNet:
    return DarkNet.from_cfg_text(rewrite_cfg_classes(DEMO_CFG.read_text(), nc), source=f"demo-{nc}.cfg")


def test_every_flag_parses_and_booleans_turn_off() -> None:
    args = train.get_args_parser().parse_args(
        [
            "--cfg",
            "a.cfg",
            "--data",
            "b.data",
            "--hyp",
            "h.yaml",
            "--weights",
            "w.pt",
            "--epochs",
            "7",
            "--batch-size",
            "8",
            "--nbs",
            "32",
            "--img-size",
            "320",
            "--multi-scale",
            "--rect",
            "--cache-images",
            "--freeze",
            "backbone",
            "--optimizer",
            "adamw",
            "--device",
            "cpu",
            "--workers",
            "1",
            "--no-amp",
            "--amp-dtype",
            "bfloat16",
            "--no-ema",
            "--resume",
            "--notest",
            "--no-savebest",
            "--patience",
            "3",
            "--single-cls",
            "--sync-bn",
            "--seed",
            "5",
            "--deterministic",
            "--strict",
            "--project",
            "p",
            "--name",
            "n",
            "--exist-ok",
        ]
    )
    numbers = (args.epochs, args.batch_size, args.nbs, args.img_size, args.patience, args.seed)
    assert numbers == (7, 8, 32, 320, 3, 5)
    assert args.multi_scale and args.rect and args.cache_images and args.notest and args.single_cls
    assert args.amp is False and args.ema is False and args.savebest is False
    assert args.resume == "latest" and args.freeze == "backbone" and args.optimizer == "adamw"
    defaults = train.get_args_parser().parse_args([])
    assert defaults.amp is None and defaults.ema and defaults.savebest and defaults.resume is None
    assert train.get_args_parser().parse_args(["--resume", "x/last.pt"]).resume == "x/last.pt"


@pytest.mark.parametrize("size", [100, 0, -32])
def test_img_size_must_be_multiple_of_32(size: int) -> None:
    args = train.get_args_parser().parse_args(["--img-size", str(size)])
    with pytest.raises(UserError, match="multiple of 32"):
        train.check_options(args)


def test_bad_hyp_is_one_line_exit_2(tmp_path: Path) -> None:
    hyp = tmp_path / "hyp.yaml"
    hyp.write_text((REPO / "cfg" / "hyp.yaml").read_text().replace("lr0: 0.001", "lr0: -1"))
    data = tmp_path / "x.data"
    data.write_text("classes=1\ntrain=t.txt\nvalid=t.txt\nnames=n.names\n")
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "--hyp",
            str(hyp),
            "--cfg",
            str(DEMO_CFG),
            "--device",
            "cpu",
            "--project",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(hyp) in errors[0] and "Traceback" not in done.stderr
    assert "lr0" in done.stderr.split("error:", 1)[1]  # the hyp loader lists each problem after the header


def test_rng_state_round_trip() -> None:
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


def _ckpt(epoch: int, **options: object) -> dict:
    base = {
        "cfg": "cfg/a.cfg",
        "data": "d.data",
        "epochs": 10,
        "batch_size": 16,
        "workers": 4,
        "device": "",
        "img_size": 416,
        "resume": None,
    }
    return {"epoch": epoch, "options": {**base, **options}}


def test_resume_options_whitelist_and_refusals() -> None:
    defaults = vars(train.get_args_parser().parse_args([]))
    given = {**defaults, "resume": "latest", "epochs": 12, "workers": 1, "cfg": defaults["cfg"]}
    merged = resume_options(_ckpt(3), Path("last.pt"), given, defaults)
    assert merged["epochs"] == 12 and merged["workers"] == 1 and merged["cfg"] == "cfg/a.cfg"
    with pytest.raises(UserError, match="already finished"):
        resume_options(_ckpt(9), Path("last.pt"), {**defaults, "resume": "latest"}, defaults)
    with pytest.raises(UserError, match="different cfg or data"):
        resume_options(_ckpt(3), Path("last.pt"), {**defaults, "cfg": "cfg/b.cfg"}, defaults)
    with pytest.raises(UserError, match="epochs may only grow"):
        resume_options(_ckpt(3, epochs=40), Path("last.pt"), {**defaults, "epochs": 20}, defaults)
    with pytest.raises(UserError, match="changed options"):
        resume_options(_ckpt(3), Path("last.pt"), {**defaults, "img_size": 320}, defaults)


def test_freeze_backbone_and_heads_only() -> None:
    model = _model(5)
    assert backbone_end(model) == 10  # demo cfg: no shortcuts, backbone ends after its last maxpool (9)
    n_backbone = sum(p.numel() for m in list(model.module_list)[:10] for p in m.parameters())
    assert freeze_layers(model, "backbone") == n_backbone
    assert all(not p.requires_grad for p in model.module_list[8].parameters())
    assert all(p.requires_grad for p in model.module_list[12].parameters())
    freeze_layers(model, "heads-only")
    trainable = {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {str(i - 1) for i in model.yolo_layers}
    assert freeze_layers(model, "none") == 0 and all(p.requires_grad for p in model.parameters())
    assert backbone_end(DarkNet(REPO / "cfg" / "yolov3-spp.cfg")) == 75


def _predictor_keys(model: DarkNet) -> set[str]:
    return {k for k in model.state_dict() if int(k.split(".")[1]) + 1 in model.yolo_layers}


def test_finetune_from_pt_and_darknet_of_other_class_count(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = _model(5)
    save_checkpoint({"model": src.state_dict(), "ema": None}, tmp_path / "src.pt")
    save_darknet_weights(src, tmp_path / "src.weights")
    save_darknet_weights(src, tmp_path / "backbone.conv.10", cutoff=10)
    for weights in ("src.pt", "src.weights"):
        dst = _model(3)
        load_start_weights(dst, str(tmp_path / weights))
        own, ref = dst.state_dict(), src.state_dict()
        same = [k for k in own if k not in _predictor_keys(dst) and torch.equal(own[k], ref[k])]
        float_keys = [k for k in own if own[k].is_floating_point()]
        assert set(float_keys) - _predictor_keys(dst) <= set(same) | {k for k in own if "num_batches" in k}
        assert own["module_list.13.conv.weight"].shape[0] == 3 * 8  # predictor re-initialised for 3 classes
    dst = _model(5)
    load_start_weights(dst, str(tmp_path / "backbone.conv.10"))
    own, ref = dst.state_dict(), src.state_dict()
    assert torch.equal(own["module_list.8.conv.weight"], ref["module_list.8.conv.weight"])
    assert not torch.equal(own["module_list.10.conv.weight"], ref["module_list.10.conv.weight"])
