"""The loss pinned to an independent implementation (`../shared/reference/loss_parity/`).

Two checks, both to 1e-5: our loss on the classic implementation's raw outputs of a fixed coco128 batch
gives that implementation's loss items, and our own Darknet-exact model + loss on the same images gives
the recorded end-to-end items. Any change that moves the loss shows up here first.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from build_utils.hyp import load_hyp
from modules.model import DarkNet
from modules.weights import load_darknet_weights
from train_val_utils.loss import YoloLoss


@pytest.fixture(scope="module")
def parity(darknet_dir, tiny_weights):
    root = darknet_dir.parent / "loss_parity"
    if not root.is_dir():
        pytest.skip(f"loss parity data not found at {root} (it ships beside the checkout as ../shared)")
    expected = json.loads((root / "expected.json").read_text())
    batch = dict(np.load(root / "batch_coco128_320.npz"))
    model = DarkNet(darknet_dir / "yolov3-tiny.cfg")  # official cfg: second [yolo] mask 0,1,2
    load_darknet_weights(model, tiny_weights)
    hyp = load_hyp("cfg/hyp.yaml")
    hyp.update(expected["hyp"])
    hyp.update(gr=expected["gr"], label_smoothing=0.0, iou_type="giou")
    assert model.nc == expected["nc"]
    loss_fn = YoloLoss(model, hyp, expected["img_size"])  # scales cls by nc/80 and obj by img_size/320
    return expected, batch, model, loss_fn


def _items(loss_items: dict[str, torch.Tensor]) -> dict[str, float]:
    keys = {"box": "box_loss", "obj": "obj_loss", "cls": "class_loss"}
    out = {k: float(loss_items[name]) for k, name in keys.items()}
    out["total"] = sum(out.values())
    return out


def _assert_close(got: dict[str, float], want: dict[str, float]) -> None:
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-5), (key, got, want)


def test_loss_on_classic_outputs(parity):
    expected, batch, _, loss_fn = parity
    preds = [torch.from_numpy(batch["archive_out0"]), torch.from_numpy(batch["archive_out1"])]
    _, items = loss_fn(preds, torch.from_numpy(batch["targets"]))
    _assert_close(_items(items), expected["loss_on_archive_outputs"])


def test_loss_end_to_end_on_our_model(parity):
    expected, batch, model, loss_fn = parity
    model.train()
    with torch.no_grad():
        preds = model(torch.from_numpy(batch["imgs"]).float() / 255.0)
    _, items = loss_fn(preds, torch.from_numpy(batch["targets"]))
    _assert_close(_items(items), expected["loss_darknet_exact_model_end_to_end"])
