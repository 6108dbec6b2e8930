"""Exact values the numerical core must produce, each derived by hand in the test.

Every test here kills a plausible one-line mistake that broader tests let through (the mutation table
in `bench/mutation_table.py` names them): focal loss honouring `fl_gamma`, odd letterbox padding and its
inverse, the 1% label tolerance, Darknet's batch-norm epsilon and leaky slope, the objectness target's
`gr` blend, every loss term, NMS and COCO matching at an IoU exactly at the threshold, the sliver rules
of augmentation, COCO ground truth and the EMA decay. Accumulation is in `test_accumulation.py`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from build_utils.cfg_edit import rewrite_cfg_classes
from build_utils.dataset.augment import box_candidates, letterbox, random_affine
from build_utils.dataset.labels import parse_label_file
from build_utils.geometry import scale_coords
from build_utils.hyp import load_hyp
from modules.model import DarkNet
from train_val_utils.evaluation.coco_eval import coco_gt_from_labels, detections_to_coco
from train_val_utils.evaluation.metrics import ap_per_class, match_predictions
from train_val_utils.evaluation.nms import _greedy_rounds_torch, nms_torch, non_max_suppression
from train_val_utils.loss import YoloLoss
from train_val_utils.training.ema import ModelEMA

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
GOOD_ROW = "0 0.5 0.5 0.2 0.2\n"


@pytest.fixture(scope="module")
def tiny() -> DarkNet:
    torch.manual_seed(0)
    return DarkNet(REPO / "cfg" / "yolov3-tiny.cfg").train()


@pytest.fixture(scope="module")
def hyp() -> dict:
    return load_hyp(REPO / "cfg" / "hyp.yaml")


# ---------------------------------------------------------------- loss


def test_focal_term_at_gamma_2_hand_computed(tiny: DarkNet, hyp: dict) -> None:
    """fl_gamma reaches both BCE modules: gamma 2 (not the 1.5 default), alpha 0.25 on positives."""
    loss_fn = YoloLoss(tiny, {**hyp, "fl_gamma": 2.0}, 416)
    logits, targets = torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0])
    # logit 0, target 1: p = 0.5, BCE = ln 2, p_t = 0.5, alpha_t = 0.25 -> ln 2 * 0.25 * 0.5^2
    positive = math.log(2) * 0.25 * 0.5**2
    # logit 2, target 0: p = sigmoid(2), BCE = ln(1 + e^2), p_t = 1 - p, alpha_t = 0.75 -> BCE * 0.75 * p^2
    p = 1 / (1 + math.exp(-2.0))
    negative = math.log(1 + math.exp(2.0)) * 0.75 * p**2
    assert positive == pytest.approx(0.0433217, abs=1e-7) and negative == pytest.approx(1.2375586, abs=1e-6)
    for bce in (loss_fn.bce_obj, loss_fn.bce_cls):
        assert bce(logits, targets).item() == pytest.approx((positive + negative) / 2, rel=1e-6)


def _loss_items(model: DarkNet, hyp: dict, **change: float) -> dict[str, float]:
    """Loss items of yolov3-tiny at 64 px for crafted predictions: box logits 0, objectness and class
    logits 1, and one 32-px target of class 0 centred on a stride-16 cell's middle (0.625 = 2.5 / 4).

    The box is 2x2 cells at stride 16 and 1x1 at stride 32. wh-IoU above iou_t 0.2 matches the stride-16
    anchors (23,27) and (37,58) (0.606, 0.477) and no stride-32 anchor (best 0.154). Box logits 0 put
    each prediction at the cell middle with the anchor's size: concentric with the target, so its IoU,
    GIoU and DIoU with the target all equal the wh-IoU.
    """
    preds = [torch.zeros(1, y.na, 64 // y.stride, 64 // y.stride, y.no) for y in model.yolo_modules()]
    for p in preds:
        p[..., 4:] = 1.0
    target = torch.tensor([[0, 0, 0.625, 0.625, 0.5, 0.5]])
    items = YoloLoss(model, {**hyp, **change}, 64)(preds, target)[1]
    return {k: v.item() for k, v in items.items()}


def _demo_model(nc: int = 5) -> DarkNet:
    text = rewrite_cfg_classes((REPO / "cfg" / "yolov3-demo.cfg").read_text(), nc)
    return DarkNet.from_cfg_text(text, source="demo.cfg")


IOU_A = (23 / 16) * (27 / 16) / 4  # anchor (23,27) inside the 2x2-cell target
IOU_B = 4 / ((37 / 16) * (58 / 16))  # the target inside anchor (37,58)
SOFTPLUS_1 = math.log1p(math.e)  # BCE(logit 1, target t) = softplus(1) - t


@pytest.mark.parametrize("gr", [1.0, 0.0, 0.25])
def test_objectness_target_blends_one_and_iou_by_gr(tiny: DarkNet, hyp: dict, gr: float) -> None:
    """Objectness target (1 - gr) + gr * IoU at the two matched cells, 0 elsewhere; BCE means per layer."""
    t_sum = sum((1 - gr) + gr * iou for iou in (IOU_A, IOU_B))
    # stride 32: 3 x 2 x 2 cells, all target 0; stride 16: 3 x 4 x 4 = 48 cells, two of them t
    expected = 64.3 * 64 / 320 * (SOFTPLUS_1 + (SOFTPLUS_1 - t_sum / 48))
    assert _loss_items(tiny, hyp, gr=gr)["obj_loss"] == pytest.approx(expected, rel=1e-6)


def test_gains_scale_class_by_nc_and_objectness_by_size(hyp: dict) -> None:
    """cls x nc / 80 and obj x img_size / 320: a 5-class model at 512 px (neither is the classic 80 / 320)."""
    loss_fn = YoloLoss(_demo_model(5), hyp, 512)
    assert loss_fn.gains == pytest.approx((3.54, 64.3 * 512 / 320, 37.4 * 5 / 80), rel=1e-12)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_box_and_class_terms_hand_computed(tiny: DarkNet, hyp: dict, smoothing: float) -> None:
    """Box: giou gain x mean(1 - GIoU) over the 2 matches. Class: cls gain (x 80/80) x mean BCE over the
    2 x 80 logits, targets 1 - eps/2 for class 0 and eps/2 for the other 79."""
    items = _loss_items(tiny, hyp, label_smoothing=smoothing)
    assert items["box_loss"] == pytest.approx(3.54 * (1 - (IOU_A + IOU_B) / 2), rel=1e-6)
    positive, negative = 1 - smoothing / 2, smoothing / 2
    expected_cls = 37.4 * (SOFTPLUS_1 - (positive + 79 * negative) / 80)
    assert items["class_loss"] == pytest.approx(expected_cls, rel=1e-6)


# ---------------------------------------------------------------- letterbox with odd padding


@pytest.mark.parametrize(("h0", "w0"), [(201, 300), (300, 201)])
def test_odd_padding_letterbox_and_scale_coords_invert_exactly(h0: int, w0: int) -> None:
    """Gain 416/300; the short side becomes round(201 * 416 / 300) = 279 px and gets 137 px of padding:
    68 before (top or left, rounded down) and 69 after. scale_coords recomputes the same 68."""
    img = np.full((h0, w0, 3), 255, np.uint8)
    out, (rw, rh), (pw, ph) = letterbox(img, 416)
    ys, xs = np.nonzero(out[..., 0] == 255)
    extent = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    wide = w0 > h0
    assert out.shape == (416, 416, 3) and (out[..., 0] != 255).sum() == 416 * 137
    assert extent == ([0, 68, 416, 347] if wide else [68, 0, 347, 416])
    assert (pw, ph) == ((0.0, 68.0) if wide else (68.0, 0.0))
    assert (rw, rh) == ((416 / 300, 279 / 201) if wide else (279 / 201, 416 / 300))
    whole = torch.tensor([extent], dtype=torch.float64)
    box = torch.tensor([[30.0, 40.0, 120.0, 150.0]], dtype=torch.float64)  # x1 y1 x2 y2 in the original
    boxed = box * torch.tensor([rw, rh, rw, rh], dtype=torch.float64) + torch.tensor([pw, ph, pw, ph])
    for ratio_pad in (None, ((rh, rw), (pw, ph))):  # recomputed, and the dataset's exact values
        back = scale_coords((416, 416), whole, (h0, w0), ratio_pad)
        assert torch.allclose(back, torch.tensor([[0.0, 0.0, w0, h0]], dtype=torch.float64), atol=1e-9)
        assert torch.allclose(scale_coords((416, 416), boxed, (h0, w0), ratio_pad), box, atol=1e-9)


def test_box_candidates_drops_each_kind_of_sliver() -> None:
    """Kept: both sides above 2 px, more than 20% of the area left, aspect ratio under 20."""
    before = np.array([[0, 0, 10, 10], [0, 0, 10, 3], [0, 0, 3, 10], [0, 0, 10, 10], [0, 0, 63, 3],
                       [0, 0, 60, 3]], np.float32)
    after = np.array([[0, 0, 10, 10], [0, 0, 10, 2], [0, 0, 2, 10], [0, 0, 4, 5], [0, 0, 63, 3],
                      [0, 0, 60, 3]], np.float32)
    # whole; 2 px high; 2 px wide; 20% of the area (not above); aspect 21; aspect 20 (not under)
    assert box_candidates(before, after).tolist() == [True, False, False, False, False, False]
    assert box_candidates(before[:1], np.array([[0, 0, 10, 2.5]], np.float32)).tolist() == [True]


class _LowDraws:
    """A Generator stand-in whose uniform(low, high) draws are `low`: scale 0.5 gives exactly 0.5x."""

    def uniform(self, low: float, high: float, size: int | None = None) -> float:
        return low


def test_random_affine_judges_clipped_area_against_the_scaled_box() -> None:
    """At 0.5x into a 40 x 40 output, x' = 0.5 x - 5: box 0..18 becomes -5..4, clipped to 0..4 (16 px^2),
    which is 16 / 81 < 20% of the scaled box (9 x 9): dropped. Box 30..70 lands whole at 10..30."""
    labels = np.array([[0, 0, 0, 18, 18], [1, 30, 30, 70, 70]], np.float32)
    _, out = random_affine(np.zeros((100, 100, 3), np.uint8), labels, scale=0.5, out_shape=(40, 40),
                           rng=_LowDraws())
    assert out.tolist() == [[1, 10, 10, 30, 30]]


# ---------------------------------------------------------------- label tolerance (1%)


def test_label_half_percent_out_is_clipped_one_and_a_half_percent_is_corrupt(tmp_path: Path) -> None:
    label = tmp_path / "img.txt"
    # right edge 0.905 + 0.1 = 1.005, top edge 0.095 - 0.1 = -0.005: 0.5% out, clipped to the image
    label.write_text("3 0.905 0.5 0.2 0.4\n7 0.5 0.095 0.4 0.2\n")
    labels, notes = parse_label_file(str(label), nc=80)
    # x1 0.805 .. x2 1.0 -> cx 0.9025, w 0.195; y1 0.0 .. y2 0.195 -> cy 0.0975, h 0.195
    np.testing.assert_allclose(labels, [[3, 0.9025, 0.5, 0.195, 0.4], [7, 0.5, 0.0975, 0.4, 0.195]],
                               rtol=0, atol=1e-7)
    assert notes == []
    for row in ("3 0.915 0.5 0.2 0.4\n", "7 0.5 0.085 0.4 0.2\n"):  # 1.015 and -0.015: 1.5% out
        label.write_text(GOOD_ROW + row)
        with pytest.raises(ValueError, match=r"img\.txt:2: box outside the image"):
            parse_label_file(str(label), nc=80)



# ---------------------------------------------------------------- Darknet arithmetic: BN epsilon, leaky


def _darknet_conv_bn_leaky(x: np.ndarray, w: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                           mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Darknet's forward_convolutional_layer for a 3x3, stride-1, pad-1 conv, in float64:
    normalize_cpu (x - mean) / sqrt(var + .000001), scale_bias, add_bias, leaky (x > 0 ? x : .1 * x)."""
    _, h, wd = x.shape  # (c, h, w)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    out = np.zeros((w.shape[0], h, wd))
    for i in range(3):
        for j in range(3):
            out += np.einsum("oc,chw->ohw", w[:, :, i, j], padded[:, i:i + h, j:j + wd])
    out = (out - mean[:, None, None]) / np.sqrt(var[:, None, None] + 0.000001)
    out = out * gamma[:, None, None] + beta[:, None, None]
    return np.where(out > 0, out, 0.1 * out)


def test_conv_bn_leaky_equals_darknet_formula() -> None:
    """yolov3-tiny layer 0 with tiny running variances (where epsilon 1e-6 vs 1e-5 matters) and
    negative outputs (where the slope matters) against Darknet's arithmetic by hand."""
    block = DarkNet(REPO / "cfg" / "yolov3-tiny.cfg").module_list[0].eval()
    conv, bn = block.conv, block.bn
    rng = np.random.default_rng(0)
    params = {
        "w": rng.normal(0, 0.3, conv.weight.shape), "gamma": rng.uniform(0.5, 1.5, 16),
        "beta": rng.normal(0, 0.5, 16), "mean": rng.normal(0, 0.2, 16),
        "var": np.concatenate([rng.uniform(1e-6, 4e-6, 8), rng.uniform(0.5, 2.0, 8)]),
    }
    params = {k: v.astype(np.float32).astype(np.float64) for k, v in params.items()}  # exact in float32
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(params["w"]))
        for name, key in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "mean"),
                          ("running_var", "var")):
            getattr(bn, name).copy_(torch.from_numpy(params[key]))
    x = rng.normal(0, 0.01, (3, 5, 7)).astype(np.float32)  # small inputs: conv outputs near the mean
    with torch.no_grad():
        got = block(torch.from_numpy(x)[None])[0].double().numpy()
    expected = _darknet_conv_bn_leaky(x.astype(np.float64), params["w"], params["gamma"], params["beta"],
                                      params["mean"], params["var"])
    assert (expected < -1).sum() > 50 and (expected > 1).sum() > 50  # both slopes and large values used
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- NMS at the threshold


def test_nms_iou_exactly_at_threshold_keeps_both() -> None:
    """Suppression needs an IoU strictly above iou_thres: [0,0,20,1] and [0,0,9,1] overlap 9 / 20 = 0.45,
    exactly float32(0.45), so at the deployment default 0.45 both stay; any lower threshold drops one."""
    boxes = torch.tensor([[0.0, 0.0, 20.0, 1.0], [0.0, 0.0, 9.0, 1.0]])
    scores = torch.tensor([0.9, 0.8])
    assert np.float32(9) / np.float32(20) == np.float32(0.45)
    assert nms_torch(boxes, scores, 0.45).tolist() == [0, 1]
    assert nms_torch(boxes, scores, 0.4499).tolist() == [0]
    group = torch.zeros(2, dtype=torch.int64)
    assert _greedy_rounds_torch(boxes, group, 0.45).tolist() == [0, 1]  # the GPU kernel's rounds
    assert _greedy_rounds_torch(boxes, group, 0.4499).tolist() == [0]
    # the same boxes as one image's raw predictions: cx, cy, w, h, objectness, one class probability
    pred = torch.tensor([[[10.0, 0.5, 20.0, 1.0, 0.9, 1.0], [4.5, 0.5, 9.0, 1.0, 0.8, 1.0]]])
    for merge in (False, True):  # merge-NMS merges exactly what plain NMS suppresses: nothing here
        det = non_max_suppression(pred, conf_thres=0.25, iou_thres=0.45, merge=merge)[0]
        np.testing.assert_allclose(det, [[0, 0, 20, 1, 0.9, 0], [0, 0, 9, 1, 0.8, 0]], rtol=0, atol=1e-6)
    assert non_max_suppression(pred, conf_thres=0.25, iou_thres=0.4499)[0].shape == (1, 6)


# ---------------------------------------------------------------- metrics at the threshold, COCO ground truth


def test_iou_exactly_at_threshold_is_a_match_like_coco() -> None:
    """COCO matches at IoU >= threshold: a detection covering half of its box (IoU exactly 0.5) counts
    at 0.5 only; one at 0.75 exactly (15 x 10 of a 20 x 10 box) counts from 0.5 to 0.75."""
    gt = torch.tensor([[0, 0, 0, 10, 10.0], [0, 100, 100, 120, 110]])
    det = torch.tensor([[0, 0, 10, 20, 0.9, 0], [100, 100, 115, 110, 0.8, 0]])
    correct = match_predictions(det, gt)
    assert correct[0].tolist() == [True] + [False] * 9
    assert correct[1].tolist() == [True] * 6 + [False] * 4


def test_perfect_detections_have_f1_one() -> None:
    """F1 = 2PR / (P + R): 1 for perfect detections (P = R = 1), at the best-F1 confidence."""
    res = ap_per_class(np.ones((2, 10), bool), np.array([0.9, 0.8]), np.array([0, 1]), np.array([0, 1]), nc=2)
    assert res.p.tolist() == [1.0, 1.0] and res.r.tolist() == [1.0, 1.0]
    np.testing.assert_allclose(res.f1, [1.0, 1.0], rtol=1e-12)


def test_coco_ground_truth_from_labels_by_hand() -> None:
    """A YOLO label (class, cx, cy, w, h normalised) of a 200 x 100 (w x h) image -> COCO bbox
    [x, y, w, h] in pixels from the top-left corner, area w x h."""
    labels = [np.array([[2, 0.25, 0.5, 0.3, 0.4]], np.float32)]
    gt = coco_gt_from_labels(["a.jpg"], labels, np.array([[100, 200]]), category_ids=[5, 6, 7])
    ann = gt["annotations"][0]
    assert ann["bbox"] == pytest.approx([20.0, 30.0, 60.0, 40.0]) and ann["area"] == pytest.approx(2400.0)
    assert ann["category_id"] == 7 and gt["images"][0] == {"id": 0, "file_name": "a.jpg", "height": 100,
                                                          "width": 200}
    det = detections_to_coco(np.array([[20, 30, 80, 70, 0.5, 1]]), image_id=0, category_ids=[5, 6, 7])
    assert det == [{"image_id": 0, "category_id": 6, "bbox": [20.0, 30.0, 60.0, 40.0], "score": 0.5}]


# ---------------------------------------------------------------- EMA


def test_ema_follows_the_optimizer_steps_not_the_batches() -> None:
    """ModelEMA.update per optimizer step: decay d = 0.9999 * (1 - exp(-updates / 2000))."""
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ModelEMA(model)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    d1 = 0.9999 * (1 - math.exp(-1 / 2000))
    assert ema.ema.weight.item() == pytest.approx(1 - d1, rel=1e-6)
    ema.update(model)
    d2 = 0.9999 * (1 - math.exp(-2 / 2000))
    assert ema.ema.weight.item() == pytest.approx(d2 * (1 - d1) + (1 - d2), rel=1e-6)
