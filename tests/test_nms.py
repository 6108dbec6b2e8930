"""NMS: the pure-torch kernel keeps exactly what a plain reference (and torchvision, when present) keeps,
on random and adversarial inputs; non_max_suppression honours classes, agnostic, multi_label, max_det."""

from __future__ import annotations

import pytest
import torch

from train_val_utils.evaluation.nms import (
    MAX_WH,
    _greedy_rounds_torch,
    batched_nms_torch,
    batched_nms_xyxy,
    nms_torch,
    non_max_suppression,
)


def reference_nms(boxes: torch.Tensor, scores: torch.Tensor, thr: float) -> list[int]:
    """Textbook greedy NMS, one pair at a time, with torchvision's tie and 0/0 rules."""
    order = sorted(range(len(scores)), key=lambda k: -float(scores[k]))  # Python's sort is stable
    suppressed = [False] * len(order)
    keep = []
    for a, i in enumerate(order):
        if suppressed[a]:
            continue
        keep.append(i)
        ix1, iy1, ix2, iy2 = boxes[i]
        iarea = (ix2 - ix1) * (iy2 - iy1)
        for b in range(a + 1, len(order)):
            j = order[b]
            jx1, jy1, jx2, jy2 = boxes[j]
            w = (torch.min(ix2, jx2) - torch.max(ix1, jx1)).clamp(min=0)
            h = (torch.min(iy2, jy2) - torch.max(iy1, jy1)).clamp(min=0)
            inter = w * h
            if inter / (iarea + (jx2 - jx1) * (jy2 - jy1) - inter) > thr:
                suppressed[b] = True
    return keep


def random_boxes(n: int, gen: torch.Generator, size: float = 100.0) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=gen) * size
    wh = torch.rand(n, 2, generator=gen) * size / 3
    return torch.cat((xy, xy + wh), 1)


def adversarial_cases() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    base = random_boxes(30, gen)
    cases = []
    # ties: quantised scores so many boxes share one score
    cases.append((base, (torch.rand(30, generator=gen) * 4).floor() / 4))
    # identical boxes, identical and different scores
    same = torch.tensor([[10.0, 10, 50, 50]]).repeat(6, 1)
    cases.append((same, torch.tensor([0.5, 0.5, 0.9, 0.5, 0.9, 0.1])))
    # zero-area boxes (points and lines), duplicated: 0/0 IoU must suppress nothing
    zero = torch.tensor([[5.0, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 0], [0, 0, 10, 0], [0, 0, 10, 10]])
    cases.append((zero, torch.tensor([0.9, 0.9, 0.8, 0.7, 0.6])))
    # all scores equal
    cases.append((base, torch.full((30,), 0.3)))
    # boxes exactly at the threshold: IoU 0.5 against threshold 0.5 is not suppressed
    edge = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 20]])
    cases.append((edge, torch.tensor([0.9, 0.8, 0.7])))
    return cases


@pytest.mark.parametrize("thr", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_torch_matches_reference_random(thr: float) -> None:
    gen = torch.Generator().manual_seed(0)
    for n in (0, 1, 2, 17, 120):
        boxes = random_boxes(n, gen)
        scores = torch.rand(n, generator=gen)
        assert nms_torch(boxes, scores, thr).tolist() == reference_nms(boxes, scores, thr)


@pytest.mark.parametrize("thr", [0.3, 0.5, 0.9])
def test_nms_torch_matches_reference_adversarial(thr: float) -> None:
    for boxes, scores in adversarial_cases():
        assert nms_torch(boxes, scores, thr).tolist() == reference_nms(boxes, scores, thr)


def test_nms_adversarial_expected_keeps() -> None:
    cases = adversarial_cases()
    boxes, scores = cases[1]  # identical boxes: only the first of the highest-score tie survives
    assert nms_torch(boxes, scores, 0.5).tolist() == [2]
    boxes, scores = cases[2]  # zero-area duplicates all survive
    assert sorted(nms_torch(boxes, scores, 0.5).tolist()) == [0, 1, 2, 3, 4]
    boxes, scores = cases[4]  # IoU exactly 0.5 stays, 0.5 is not > 0.5
    assert nms_torch(boxes, scores, 0.5).tolist() == [0, 1, 2]


def shifted(boxes: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    return boxes + cls.float()[:, None] * MAX_WH


@pytest.mark.parametrize("thr", [0.3, 0.5, 0.9])
def test_batched_nms_torch_matches_reference_on_shifted_boxes(thr: float) -> None:
    gen = torch.Generator().manual_seed(4)
    for boxes, scores in adversarial_cases() + [(random_boxes(120, gen), torch.rand(120, generator=gen))]:
        cls = torch.randint(0, 4, (len(scores),), generator=gen)
        keep = batched_nms_torch(shifted(boxes, cls), scores, cls, thr).tolist()
        assert keep == reference_nms(shifted(boxes, cls), scores, thr)
        assert batched_nms_xyxy(boxes, scores, cls, thr).tolist() == keep
        # and it is per-class NMS: each class's keeps equal NMS of that class alone
        for c in cls.unique().tolist():
            idx = (cls == c).nonzero().view(-1)
            alone = idx[nms_torch(boxes[idx], scores[idx], thr)].tolist()
            assert [k for k in keep if cls[k] == c] == alone


def test_gpu_rounds_equal_cpu_rounds() -> None:
    """The torch rounds (used for CUDA tensors) keep exactly what the NumPy rounds (CPU) keep."""
    gen = torch.Generator().manual_seed(5)
    for boxes, scores in adversarial_cases() + [(random_boxes(400, gen), torch.rand(400, generator=gen))]:
        cls = torch.randint(0, 3, (len(scores),), generator=gen)
        order = torch.sort(scores, descending=True, stable=True).indices
        b = shifted(boxes, cls)[order]
        group = torch.unique(cls[order], return_inverse=True)[1]
        for thr in (0.3, 0.5, 0.9):
            expected = batched_nms_torch(shifted(boxes, cls), scores, cls, thr)
            assert order[_greedy_rounds_torch(b, group, thr)].tolist() == expected.tolist()


def test_nms_torch_matches_torchvision() -> None:
    tv = pytest.importorskip("torchvision.ops", reason="torchvision not installed")
    gen = torch.Generator().manual_seed(2)
    cases = adversarial_cases() + [(random_boxes(500, gen), torch.rand(500, generator=gen))]
    for boxes, scores in cases:
        cls = torch.randint(0, 5, (len(scores),), generator=gen)
        for thr in (0.3, 0.5, 0.9):
            assert nms_torch(boxes, scores, thr).tolist() == tv.nms(boxes, scores, thr).tolist()
            expected = tv.nms(shifted(boxes, cls), scores, thr).tolist()
            assert batched_nms_torch(shifted(boxes, cls), scores, cls, thr).tolist() == expected


def make_pred(rows: list[list[float]], nc: int) -> torch.Tensor:
    """rows of [cx, cy, w, h, obj, cls0..] -> (1, n, 5+nc)."""
    t = torch.tensor(rows, dtype=torch.float32)
    assert t.shape[1] == 5 + nc
    return t[None]


def test_non_max_suppression_class_aware_and_agnostic() -> None:
    # two overlapping boxes of different classes, one duplicate of class 0
    pred = make_pred([[50, 50, 20, 20, 0.9, 0.9, 0.1],
                      [51, 50, 20, 20, 0.8, 0.1, 0.9],
                      [50, 51, 20, 20, 0.7, 0.9, 0.1]], nc=2)
    out = non_max_suppression(pred, 0.3, 0.5, multi_label=False)[0]
    assert out.shape == (2, 6)
    assert out[:, 5].tolist() == [0.0, 1.0]
    assert out[0, :4].tolist() == [40.0, 40.0, 60.0, 60.0]
    assert out[0, 4].item() == pytest.approx(0.81)
    agn = non_max_suppression(pred, 0.3, 0.5, agnostic=True, multi_label=False)[0]
    assert agn.shape == (1, 6)
    only1 = non_max_suppression(pred, 0.3, 0.5, classes=[1], multi_label=False)[0]
    assert only1[:, 5].tolist() == [1.0]


def test_non_max_suppression_multi_label_max_det_and_order() -> None:
    pred = make_pred([[50, 50, 20, 20, 0.9, 0.6, 0.5]], nc=2)
    assert non_max_suppression(pred, 0.3, 0.5, multi_label=True)[0].shape == (2, 6)
    assert non_max_suppression(pred, 0.3, 0.5, multi_label=False)[0].shape == (1, 6)
    gen = torch.Generator().manual_seed(3)
    n = 400
    xy = torch.rand(n, 2, generator=gen) * 400
    wh = torch.rand(n, 2, generator=gen) * 30 + 2
    pred = torch.cat((xy, wh, torch.rand(n, 1 + 4, generator=gen)), 1)[None].repeat(2, 1, 1)
    out = non_max_suppression(pred, 0.01, 0.5, max_det=50)
    assert len(out) == 2 and all(o.shape == (50, 6) for o in out)
    assert torch.all(out[0][:-1, 4] >= out[0][1:, 4])  # best first
    assert torch.equal(out[0], out[1])
    assert out[0][:, :4].max() < MAX_WH


def test_non_max_suppression_empty_and_no_input_change() -> None:
    pred = torch.zeros(3, 10, 7)
    before = pred.clone()
    out = non_max_suppression(pred, 0.25, 0.45)
    assert len(out) == 3 and all(o.shape == (0, 6) for o in out)
    assert torch.equal(pred, before)
