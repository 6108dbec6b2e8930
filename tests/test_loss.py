"""Loss: focal loss against hand-computed values, target assignment on a real yolov3-tiny, and
YoloLoss behaviour (keys, gain scaling, balance, nc == 1, AMP dtypes, learning on shapes images).
The IoU kinds the box loss uses are tested with the rest of the geometry in test_geometry.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from build_utils.cfg_edit import rewrite_cfg_classes
from build_utils.hyp import load_hyp, loss_hyp
from data.scripts.shapes_dataset import SHAPE_NAMES, ShapesConfig, make_shapes_image
from modules.model import DarkNet
from train_val_utils.loss import FocalLoss, YoloLoss, build_targets, smooth_BCE

# ---------------------------------------------------------------- focal loss, smoothing


def test_focal_loss_matches_formula():
    x = torch.tensor([-2.0, 0.5, 3.0, 0.0])
    y = torch.tensor([0.0, 1.0, 1.0, 0.3])
    gamma, alpha = 2.0, 0.25
    fl = FocalLoss(nn.BCEWithLogitsLoss(), gamma=gamma, alpha=alpha)
    expected = []
    for xi, yi in zip(x.tolist(), y.tolist()):
        p = 1 / (1 + math.exp(-xi))
        bce = -(yi * math.log(p) + (1 - yi) * math.log(1 - p))
        p_t = yi * p + (1 - yi) * (1 - p)
        a_t = yi * alpha + (1 - yi) * (1 - alpha)
        expected.append(bce * a_t * (1 - p_t) ** gamma)
    assert fl(x, y).item() == pytest.approx(sum(expected) / 4, rel=1e-6)
    fl_sum = FocalLoss(nn.BCEWithLogitsLoss(reduction="sum"), gamma=gamma, alpha=alpha)
    assert fl_sum(x, y).item() == pytest.approx(sum(expected), rel=1e-6)


def test_smooth_bce():
    assert smooth_BCE(0.0) == (1.0, 0.0)
    assert smooth_BCE(0.1) == pytest.approx((0.95, 0.05))


# ---------------------------------------------------------------- build_targets on yolov3-tiny


@pytest.fixture(scope="module")
def tiny(repo_root) -> DarkNet:
    torch.manual_seed(0)
    return DarkNet(repo_root / "cfg" / "yolov3-tiny.cfg").train()


def _fake_preds(model: DarkNet, bs: int, size: int) -> list[torch.Tensor]:
    return [torch.zeros(bs, y.na, size // y.stride, size // y.stride, y.no) for y in model.yolo_modules()]


def test_build_targets_crafted(tiny):
    # tiny @320: layer 0 stride 32 (10x10), anchors (81,82) (135,169) (344,319);
    #            layer 1 stride 16 (20x20), anchors (23,27) (37,58) (81,82).
    targets = torch.tensor([
        [0, 2, 0.53, 0.37, 81 / 320, 82 / 320],  # exactly anchor (81,82)
        [1, 7, 1.00, 0.00, 0.30, 0.30],  # centre on the right edge: stays in the last column
        [1, 3, 0.50, 0.50, 0.01, 0.01],  # too small for every anchor: matched nowhere
    ])
    tcls, tbox, indices, anchors = build_targets(_fake_preds(tiny, 2, 320), targets, tiny, iou_t=0.2)
    # layer 0, wh-IoUs: target 0 -> 1.00, 0.29, 0.06; target 1 (96x96 px) -> 0.72, 0.40, 0.08
    b, a, gj, gi = indices[0]
    rows = sorted(zip(b.tolist(), a.tolist(), gj.tolist(), gi.tolist(), tcls[0].tolist()))
    assert rows == [(0, 0, 3, 5, 2), (0, 1, 3, 5, 2), (1, 0, 0, 9, 7), (1, 1, 0, 9, 7)]
    first = (b == 0) & (a == 0)
    assert tbox[0][first][0].tolist() == pytest.approx([0.3, 0.7, 81 / 32, 82 / 32], abs=1e-5)
    assert anchors[0][first][0].tolist() == pytest.approx([81 / 32, 82 / 32])
    edge = (b == 1) & (a == 0)
    assert tbox[0][edge][0].tolist() == pytest.approx([1.0, 0.0, 3.0, 3.0], abs=1e-5)
    # layer 1, wh-IoUs: target 0 -> 0.09, 0.32, 1.00; target 1 -> 0.07, 0.23, 0.72
    b, a, gj, gi = indices[1]
    rows = sorted(zip(b.tolist(), a.tolist(), gj.tolist(), gi.tolist()))
    assert rows == [(0, 1, 7, 10), (0, 2, 7, 10), (1, 1, 0, 19), (1, 2, 0, 19)]
    assert all(t.dtype == torch.long for t in (b, a, gj, gi, tcls[1]))
    # a stricter threshold keeps only the close anchors
    _, _, indices, _ = build_targets(_fake_preds(tiny, 2, 320), targets, tiny, iou_t=0.5)
    assert sorted(zip(indices[0][0].tolist(), indices[0][1].tolist())) == [(0, 0), (1, 0)]
    assert sorted(zip(indices[1][0].tolist(), indices[1][1].tolist())) == [(0, 2), (1, 2)]


def test_build_targets_matches_loop_reference(tiny):
    g = torch.Generator().manual_seed(1)
    n = 40
    wh = torch.rand(n, 2, generator=g) * 0.6 + 0.02
    targets = torch.cat((torch.randint(0, 4, (n, 1), generator=g).float(),
                         torch.randint(0, 80, (n, 1), generator=g).float(),
                         torch.rand(n, 2, generator=g), wh), 1)
    preds = _fake_preds(tiny, 4, 256)
    tcls, tbox, indices, _ = build_targets(preds, targets, tiny, iou_t=0.2)
    for layer, (p, y) in enumerate(zip(preds, tiny.yolo_modules())):
        ny, nx = p.shape[2:4]
        expected = set()
        for t in targets.tolist():
            w, h = t[4] * nx, t[5] * ny
            for k, (aw, ah) in enumerate((y.anchors / y.stride).tolist()):
                inter = min(w, aw) * min(h, ah)
                if inter / (w * h + aw * ah - inter) > 0.2:
                    expected.add((int(t[0]), k, min(int(t[3] * ny), ny - 1), min(int(t[2] * nx), nx - 1)))
        got = {tuple(r) for r in torch.stack(indices[layer], 1).tolist()}
        assert got == expected
        assert len(tcls[layer]) == len(tbox[layer]) == len(indices[layer][0])


def test_build_targets_empty(tiny):
    tcls, tbox, indices, anchors = build_targets(_fake_preds(tiny, 2, 320), torch.zeros(0, 6), tiny, 0.2)
    assert all(len(t) == 0 for t in tcls) and all(t.shape == (0, 4) for t in tbox)
    assert all(a.shape == (0, 2) for a in anchors)


# ---------------------------------------------------------------- YoloLoss


@pytest.fixture(scope="module")
def hyp(repo_root) -> dict:
    return load_hyp(repo_root / "cfg" / "hyp.yaml")


_TARGETS = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4], [1, 4, 0.2, 0.7, 0.1, 0.15]])


def test_yolo_loss_keys_and_values(tiny, hyp):
    loss_fn = YoloLoss(tiny, hyp, 256)
    torch.manual_seed(0)
    preds = tiny(torch.rand(2, 3, 256, 256))
    loss, items = loss_fn(preds, _TARGETS)
    assert set(items) == {"box_loss", "obj_loss", "class_loss"}
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.requires_grad
    assert all(v.ndim == 0 and not v.requires_grad and v > 0 for v in items.values())
    assert loss.item() == pytest.approx(sum(v.item() for v in items.values()), rel=1e-5)
    loss.backward()
    assert torch.isfinite(tiny.module_list[0][0].weight.grad).all()
    tiny.zero_grad(set_to_none=True)
    # no targets: only objectness
    _, items = loss_fn([p.detach() for p in preds], torch.zeros(0, 6))
    assert items["box_loss"] == 0 and items["class_loss"] == 0 and items["obj_loss"] > 0


def test_yolo_loss_built_once_with_scaled_gains(tiny, hyp):
    loss_fn = YoloLoss(tiny, hyp, 640)
    assert loss_fn.gains == pytest.approx((3.54, 64.3 * 640 / 320, 37.4 * tiny.nc / 80))
    assert loss_fn.balance == (1.0, 1.0) and loss_fn.iou_kind == "giou"
    assert loss_fn.iou_t == pytest.approx(0.2)
    assert isinstance(loss_fn.bce_obj, nn.BCEWithLogitsLoss)  # fl_gamma 0: plain BCE
    assert isinstance(YoloLoss(tiny, {**hyp, "fl_gamma": 1.5}, 640).bce_cls, FocalLoss)
    assert YoloLoss(nn.DataParallel(tiny), hyp, 640).model is tiny  # reads the bare model's YOLO layers
    # the section object works as well as the dict, and the hyp is not modified
    assert YoloLoss(tiny, loss_hyp(hyp), 640).gains == loss_fn.gains and hyp["obj"] == pytest.approx(64.3)
    # the modules are built once: a call does not replace them
    bce = loss_fn.bce_obj
    with torch.no_grad():
        loss_fn(tiny(torch.rand(1, 3, 64, 64)), _TARGETS[:1])
    assert loss_fn.bce_obj is bce


def test_yolo_loss_gains_scale_each_term(tiny, hyp):
    torch.manual_seed(0)
    with torch.no_grad():
        preds = tiny(torch.rand(2, 3, 256, 256))
    ref = YoloLoss(tiny, hyp, 256)(preds, _TARGETS)[1]
    # obj gain grows with the image size, cls gain with nc (here 80: factor 1)
    bigger = YoloLoss(tiny, hyp, 512)(preds, _TARGETS)[1]
    assert bigger["obj_loss"].item() == pytest.approx(2 * ref["obj_loss"].item(), rel=1e-6)
    assert bigger["box_loss"] == ref["box_loss"] and bigger["class_loss"] == ref["class_loss"]


def test_yolo_loss_options_take_effect(tiny, hyp):
    torch.manual_seed(0)
    with torch.no_grad():
        preds = tiny(torch.rand(2, 3, 256, 256))
    ref = YoloLoss(tiny, hyp, 256)(preds, _TARGETS)[1]
    for change, key in [({"iou_type": "ciou"}, "box_loss"), ({"fl_gamma": 1.5}, "obj_loss"),
                        ({"fl_gamma": 1.5}, "class_loss"), ({"label_smoothing": 0.1}, "class_loss"),
                        ({"gr": 0.0}, "obj_loss"), ({"obj_pw": 2.0}, "obj_loss"),
                        ({"cls_pw": 2.0}, "class_loss")]:
        items = YoloLoss(tiny, {**hyp, **change}, 256)(preds, _TARGETS)[1]
        assert torch.isfinite(items[key]) and not torch.isclose(items[key], ref[key]), (change, key)
    doubled = YoloLoss(tiny, {**hyp, "giou": 2 * hyp["giou"]}, 256)(preds, _TARGETS)[1]
    assert doubled["box_loss"].item() == pytest.approx(2 * ref["box_loss"].item(), rel=1e-5)


def test_yolo_loss_balance_weights_objectness_per_layer(tiny, hyp):
    torch.manual_seed(0)
    with torch.no_grad():
        preds = tiny(torch.rand(2, 3, 256, 256))
    obj = {}
    for balance in ((1.0, 1.0), (1.0, 0.0), (0.0, 1.0), (4.0, 0.5)):
        obj[balance] = YoloLoss(tiny, hyp, 256, balance=balance)(preds, _TARGETS)[1]["obj_loss"].item()
    assert obj[(1.0, 0.0)] > 0 and obj[(0.0, 1.0)] > 0
    assert obj[(1.0, 1.0)] == pytest.approx(obj[(1.0, 0.0)] + obj[(0.0, 1.0)], rel=1e-6)
    assert obj[(4.0, 0.5)] == pytest.approx(4 * obj[(1.0, 0.0)] + 0.5 * obj[(0.0, 1.0)], rel=1e-6)
    with pytest.raises(ValueError, match="2 YOLO layers"):
        YoloLoss(tiny, hyp, 256, balance=(1.0, 1.0, 1.0))


def test_yolo_loss_follows_the_model_to_another_device(tiny, hyp):
    loss_fn = YoloLoss(tiny, hyp, 256)
    loss_fn.device = torch.device("meta")  # as if built before the model moved
    with torch.no_grad():
        loss, _ = loss_fn(tiny(torch.rand(1, 3, 64, 64)), _TARGETS[:1])
    assert loss_fn.device == torch.device("cpu") and loss_fn.bce_obj.pos_weight.device.type == "cpu"
    assert torch.isfinite(loss)


def test_yolo_loss_single_class_has_no_class_loss(repo_root, hyp):
    text = rewrite_cfg_classes((repo_root / "cfg" / "yolov3-tiny.cfg").read_text(), 1)
    model = DarkNet.from_cfg_text(text).train()
    assert model.nc == 1
    preds = model(torch.rand(1, 3, 128, 128))
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.4, 0.4]])
    loss, items = YoloLoss(model, hyp, 128)(preds, targets)
    assert items["class_loss"] == 0 and items["box_loss"] > 0 and torch.isfinite(loss)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_yolo_loss_float32_from_low_precision(tiny, hyp, dtype):
    torch.manual_seed(0)
    with torch.no_grad():
        preds = tiny(torch.rand(2, 3, 256, 256))
    loss_fn = YoloLoss(tiny, hyp, 256)
    ref, _ = loss_fn(preds, _TARGETS)
    low, _ = loss_fn([p.to(dtype) for p in preds], _TARGETS)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(ref.item(), rel=2e-2)


@pytest.mark.slow  # ~5 s on a quiet 2-core machine, much more when the cores are shared
def test_loss_decreases_on_shapes(repo_root, hyp):
    """30 optimizer steps on 4 shapes images must clearly lower the loss (the loss trains a model)."""
    size, nc = 96, len(SHAPE_NAMES)
    torch.manual_seed(0)
    text = rewrite_cfg_classes((repo_root / "cfg" / "yolov3-tiny.cfg").read_text(), nc)
    model = DarkNet.from_cfg_text(text).train()
    imgs, targets = [], []
    for i in range(4):
        img, labels = make_shapes_image(0, "train", i, ShapesConfig(img_size=size, max_objects=4))
        imgs.append(torch.from_numpy(img).permute(2, 0, 1).float() / 255)
        targets.append(np.concatenate([np.full((len(labels), 1), i), labels], 1))
    x = torch.stack(imgs)  # (4, 3, 96, 96)
    t = torch.from_numpy(np.concatenate(targets)).float()  # (n, 6)
    loss_fn = YoloLoss(model, hyp, size)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses, parts = [], []
    for _ in range(30):
        loss, items = loss_fn(model(x), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        parts.append(items)
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < 0.75 * np.mean(losses[:3]), losses  # about 10.6 -> 6.2
    assert parts[-1]["class_loss"] < 0.2 * parts[0]["class_loss"]
