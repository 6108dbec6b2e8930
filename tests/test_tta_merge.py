"""Test-time augmentation (de-augmented views agree with the plain one) and merge-NMS (vectorised
against a brute-force greedy reference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from build_utils.dataset.augment import letterbox
from build_utils.dataset.image_io import read_image
from build_utils.geometry import box_iou
from modules.model import DarkNet
from modules.weights import load_darknet_weights
from train_val_utils.engine import EvalOptions
from train_val_utils.evaluation.nms import merge_boxes, non_max_suppression
from train_val_utils.evaluation.tta import TTA_VIEWS, View, augment_view, deaugment, tta_forward

REPO = Path(__file__).resolve().parents[1]


class BoxModel(torch.nn.Module):
    """Synthetic detector: one box per image around the bright block (sub-pixel: brightness-weighted)."""

    max_stride = 32

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        bs, _, h, w = x.shape
        m = (x.mean(1) - 0.5).clamp(min=0) * 2  # (bs, H, W): 1 inside the block, 0 on black and grey pad
        yy, xx = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
        n = m.sum((1, 2)).clamp(min=1e-6)
        cx, cy = (m * xx).sum((1, 2)) / n + 0.5, (m * yy).sum((1, 2)) / n + 0.5
        bw, bh = m.amax(1).sum(1), m.amax(2).sum(1)  # lit columns / rows, partial edges count partly
        ones = torch.ones_like(cx)
        return torch.stack([cx, cy, bw, bh, ones, ones], 1)[:, None], None  # (bs, 1, 6)


def test_deaugmented_synthetic_box_matches_plain() -> None:
    x = torch.zeros(2, 3, 96, 160)
    x[0, :, 20:60, 30:90] = 1.0
    x[1, :, 50:90, 100:150] = 1.0
    model = BoxModel()
    plain = model(x)[0]
    for view in (View(0.83, True), View(0.67, False), View(1.0, True), View(1.2, True)):
        xi, ratios = augment_view(x, view, 32)
        assert xi.shape[2] % 32 == 0 and xi.shape[3] % 32 == 0
        back = deaugment(model(xi)[0], ratios, view.flip, x.shape[3])
        assert torch.allclose(back[..., :4], plain[..., :4], atol=1.0), (view, back, plain)
    assert tta_forward(model, x).shape == (2, len(TTA_VIEWS), 6)
    assert augment_view(x, View(1.2, True), 32)[0].shape[2:] == (128, 192)  # 115x192 enlarged, padded to 32


@pytest.fixture(scope="module")
def tiny(tiny_weights):
    model = DarkNet(REPO / "cfg/yolov3-tiny.cfg")
    load_darknet_weights(model, tiny_weights)
    return model.eval()


def test_official_tiny_dog_deaugmented_views_equal_plain(tiny, darknet_dir) -> None:
    """Identity-like check on real weights: a 2x (nearest) enlarged dog.jpg viewed at scale 0.5 with a
    flip is exactly the flipped image, so its de-augmented boxes must be the flipped run's boxes, mapped
    back, in the enlarged image's pixels; and the flipped run agrees with the plain one on strong boxes."""
    img, _, _ = letterbox(read_image(darknet_dir / "dog.jpg"), 416, auto=True, stride=32)  # rect 416x320
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()[None] / 255  # (1, 3, 320, 416)
    big = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")  # (1, 3, 640, 832)
    view, ratios = augment_view(big, View(0.5, True), 32)
    assert torch.allclose(view, x.flip(3), atol=1e-6) and ratios == (0.5, 0.5)
    with torch.no_grad():
        plain = non_max_suppression(tiny(x)[0], 0.3, 0.45)[0]
        raw_flip = tiny(x.flip(3))[0]  # (1, N, 85) in flipped-image pixels
        back_big = non_max_suppression(deaugment(raw_flip, ratios, True, big.shape[3]), 0.3, 0.45)[0]
        back = non_max_suppression(deaugment(raw_flip, (1.0, 1.0), True, x.shape[3]), 0.3, 0.45)[0]
        both = tta_forward(tiny, x)
    assert torch.allclose(back_big[:, :4], 2 * back[:, :4], atol=1.0)
    assert torch.equal(back_big[:, 5], back[:, 5])
    assert both.shape[1] > raw_flip.shape[1] and both.shape[2] == raw_flip.shape[2]
    assert plain.shape[0] >= 3  # dog, bicycle, truck/car
    strong = [c for c in (2, 16) if c in plain[:, 5] and c in back[:, 5]]  # car, dog
    assert strong
    for c in strong:
        a, b = plain[plain[:, 5] == c][:1, :4], back[back[:, 5] == c][:1, :4]
        assert box_iou(a, b).item() > 0.8, (c, a, b)


def _brute_merge(boxes, scores, groups, iou_thres):
    """Greedy NMS in Python; each kept box collects the boxes it suppresses (itself included)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    alive, out = set(order), []
    for i in order:
        if i not in alive:
            continue
        alive.discard(i)
        members = [(i, 1.0)]
        for j in order:
            if j in alive and groups[j] == groups[i]:
                iou = float(box_iou(boxes[i:i + 1], boxes[j:j + 1])[0, 0])
                if iou > iou_thres:
                    members.append((j, iou))
                    alive.discard(j)
        w = torch.tensor([scores[j] * iou for j, iou in members], dtype=torch.float64)
        b = torch.stack([boxes[j].double() for j, _ in members])
        out.append((i, (w[:, None] * b).sum(0) / w.sum()))
    return out


@pytest.mark.parametrize("agnostic", [False, True])
def test_merge_boxes_equals_brute_force(agnostic: bool) -> None:
    g = torch.Generator().manual_seed(0)
    n = 120
    xy = torch.rand(n, 2, generator=g) * 200
    wh = torch.rand(n, 2, generator=g) * 60 + 5
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(n, generator=g)
    classes = torch.randint(0, 3, (n,), generator=g).float()
    groups = torch.zeros_like(classes) if agnostic else classes
    ref = _brute_merge(boxes, scores.tolist(), groups.tolist(), 0.4)
    keep = torch.tensor([i for i, _ in ref])
    merged = merge_boxes(boxes, scores, groups, keep, 0.4)
    assert torch.allclose(merged.double(), torch.stack([b for _, b in ref]), atol=1e-4)
    # through non_max_suppression: same keeps, merged coordinates, plain scores/classes
    pred = torch.zeros(1, n, 8)
    pred[0, :, :4] = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1)
    pred[0, :, 4] = scores
    pred[0, torch.arange(n), 5 + classes.long()] = 1.0
    plain = non_max_suppression(pred, 0.0, 0.4, agnostic=agnostic, multi_label=False)[0]
    merge = non_max_suppression(pred, 0.0, 0.4, agnostic=agnostic, multi_label=False, merge=True)[0]
    assert torch.equal(plain[:, 4:], merge[:, 4:]) and len(plain) == len(ref)
    assert torch.allclose(merge[:, :4].double(), torch.stack([b for _, b in ref]), atol=1e-3)
    assert not torch.allclose(plain[:, :4], merge[:, :4])


def test_eval_options_reject_unknown_nms() -> None:
    from build_utils.errors import UserError

    with pytest.raises(UserError, match="plain, merge"):
        EvalOptions(nms="soft")
